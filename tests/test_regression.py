"""Regression statistics: fixed-window verdicts, multiplicity and the sequential check."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalcore.intervals import GroupStats, wilson_ci
from evaluator.analytics.regression import (
    RegressionPolicy,
    adjust_verdicts,
    advance,
    compare_stats,
    compare_window,
    rebase,
    sequential_verdict,
    start_sequential,
    window_bounds,
)
from evaluator.analytics.stats import adjust_pvalues, fisher_lower_p

POLICY = RegressionPolicy()
scores = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=60)


def bernoulli(p: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def test_policy_defaults_follow_the_issue_and_bad_values_are_refused() -> None:
    assert POLICY.window == timedelta(hours=6) and POLICY.baseline == timedelta(days=7)
    assert POLICY.min_effect_mean == 0.05 and POLICY.min_effect_pass_rate == 0.05
    with pytest.raises(ValueError, match="alpha"):
        RegressionPolicy(alpha=0)
    with pytest.raises(ValueError, match="method"):
        RegressionPolicy(method="holm")  # type: ignore[arg-type]


def test_window_bounds_put_the_baseline_right_before_the_window() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    baseline_start, window_start = window_bounds(now, POLICY)
    assert window_start == now - timedelta(hours=6)
    assert baseline_start == window_start - timedelta(days=7)


def test_model_swap_alerts_with_numbers_for_the_alert_record() -> None:
    verdict = compare_window(bernoulli(0.964, 5000, 1), bernoulli(0.4, 20, 2), POLICY)
    assert verdict.regression and verdict.test == "fisher-exact"
    record = verdict.summary()
    assert record["baseline"]["n"] == 5000 and record["current"]["n"] == 20
    lo, hi = record["current"]["mean_ci_low"], record["current"]["mean_ci_high"]
    assert lo < verdict.current.mean < hi and record["p_value"] < 0.001


def test_small_drop_does_not_alert_even_when_significant() -> None:
    verdict = compare_window(bernoulli(0.96, 20000, 3), bernoulli(0.93, 20000, 4), POLICY)
    assert verdict.p_value < 1e-6 and not verdict.effect_ok
    assert verdict.reason == "drop below the effect-size bound" and not verdict.regression


def test_too_few_samples_never_alert() -> None:
    verdict = compare_window([1.0] * 100, [0.0] * 5, POLICY)
    assert not verdict.regression and verdict.reason == "too few samples"


def test_continuous_scores_use_welch_and_the_pass_rate_when_a_threshold_applies() -> None:
    rng = random.Random(5)
    base = [min(1.0, max(0.0, rng.gauss(0.9, 0.05))) for _ in range(500)]
    cur = [min(1.0, max(0.0, rng.gauss(0.8, 0.05))) for _ in range(50)]
    assert compare_window(base, cur, POLICY).test == "bounded-mean"
    both = compare_window(base, cur, POLICY, pass_threshold=0.85)
    assert both.test == "bounded-mean+fisher-exact" and both.regression
    assert both.pass_rate_drop is not None and both.pass_rate_drop > 0.5


def test_group_stats_from_sql_sums_equal_stats_from_scores() -> None:
    xs = [0.2, 0.9, 1.0, 0.7]
    a = GroupStats.from_scores(xs, pass_threshold=0.8)
    b = GroupStats(4, sum(xs), sum(x * x for x in xs), 2)
    assert a == b and a.pass_rate == 0.5
    assert GroupStats.from_scores(xs[:2], 0.8) + GroupStats.from_scores(xs[2:], 0.8) == a
    assert GroupStats.from_scores([1, 0, 1]).passes == 2  # 0/1 scores: passes are implied


def test_fisher_matches_a_hand_computed_hypergeometric_tail() -> None:
    # 10 of 10 pass vs 2 of 4: P(X <= 2) with X ~ Hypergeom(N=14, K=12, n=4) = C(12,2)C(2,2)/C(14,4)
    p = fisher_lower_p(GroupStats.from_scores([1] * 10), GroupStats.from_scores([1, 1, 0, 0]))
    assert p == pytest.approx(math.comb(12, 2) / math.comb(14, 4))


def test_adjust_pvalues_bh_and_bonferroni() -> None:
    ps = [0.01, 0.04, 0.03, 0.5]
    assert adjust_pvalues(ps, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 1.0])
    assert adjust_pvalues(ps, "bh") == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert adjust_pvalues([], "bh") == []


def test_adjust_verdicts_corrects_across_groups_and_skips_small_groups() -> None:
    base = GroupStats.from_scores(bernoulli(0.95, 4000, 6))
    borderline = GroupStats(40, 33, 33, 33)  # 82 % vs 95 %: p = 0.004, under alpha alone
    verdicts = {f"g{i}": compare_stats(base, borderline, POLICY) for i in range(20)}
    verdicts["small"] = compare_stats(base, GroupStats(3, 0, 0, 0), POLICY)
    assert all(verdicts[f"g{i}"].regression for i in range(20))
    strict = adjust_verdicts(verdicts, RegressionPolicy(method="bonferroni"))
    assert not any(v.regression for v in strict.values())
    assert strict["small"].adjusted_p == verdicts["small"].p_value


@settings(max_examples=60, deadline=None)
@given(scores)
def test_identical_streams_never_alert(xs: list[float]) -> None:
    assert not compare_window(xs, xs, POLICY).regression
    state = advance(start_sequential(GroupStats.from_scores(xs * 50), POLICY, known_start=True),
                    xs, POLICY)  # fmt: skip
    assert state.alarm_at is None


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_p_values_are_probabilities(a: list[float], b: list[float]) -> None:
    v = compare_window(a, b, POLICY, pass_threshold=0.5)
    assert 0.0 <= v.p_value <= 1.0
    sa, sb = GroupStats.from_scores(a, 0.5), GroupStats.from_scores(b, 0.5)
    assert 0.0 <= fisher_lower_p(sa, sb) <= 1.0
    lo, hi = sa.mean_ci()
    assert 0.0 <= lo <= hi <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 30), st.integers(31, 60))
def test_more_failures_give_smaller_p(fails_fewer: int, fails_more: int) -> None:
    base = GroupStats(1000, 950, 950, 950)
    p_fewer = fisher_lower_p(
        base, GroupStats(60, 60 - fails_fewer, 60 - fails_fewer, 60 - fails_fewer)
    )
    p_more = fisher_lower_p(base, GroupStats(60, 60 - fails_more, 60 - fails_more, 60 - fails_more))
    assert p_more <= p_fewer


@settings(max_examples=40, deadline=None)
@given(st.floats(0.6, 1.0), st.floats(0.2, 0.5), st.integers(0, 10_000))
def test_large_drop_with_enough_samples_always_alerts(
    base_rate: float, drop: float, seed: int
) -> None:
    current = bernoulli(max(0.0, base_rate - drop), 300, seed + 1)
    verdict = compare_window(bernoulli(base_rate, 3000, seed), current, POLICY)
    assert verdict.regression


def test_wilson_interval_is_sane_at_the_edges() -> None:
    lo, hi = wilson_ci(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2
    assert wilson_ci(20, 20)[1] == 1.0


def test_sequential_test_catches_a_model_swap_within_twenty_scores() -> None:
    base = GroupStats.from_scores(bernoulli(0.964, 33600, 7))
    state = advance(start_sequential(base, POLICY, known_start=True), bernoulli(0.4, 40, 8), POLICY)
    assert state.alarm_at is not None and state.alarm_at <= 20
    verdict = sequential_verdict(state, POLICY)
    assert verdict.regression and verdict.test == "e-process"
    assert verdict.current.n == state.alarm_at and verdict.e_value is not None
    assert verdict.p_value == pytest.approx(2 / verdict.e_value)  # the reference costs alpha/2


def test_sequential_state_is_resumable_and_recomputable() -> None:
    base = GroupStats.from_scores(bernoulli(0.9, 2000, 9))
    xs = bernoulli(0.9, 300, 10) + bernoulli(0.5, 100, 11)
    start = start_sequential(base, POLICY, known_start=False)
    whole = advance(start, xs, POLICY)
    stored = start
    for lo in range(0, len(xs), 37):  # cron ticks feeding what arrived since the last one
        stored = advance(stored, xs[lo : lo + 37], POLICY)
    assert stored.alarm_at == whole.alarm_at and stored.alarm_at is not None
    assert stored.log_e == pytest.approx(whole.log_e)
    assert sequential_verdict(stored, POLICY).test == "e-detector"


def test_detector_stays_quiet_on_a_long_stationary_stream_and_survives_rebase() -> None:
    base = GroupStats.from_scores(bernoulli(0.9, 20000, 12))
    state = start_sequential(base, POLICY, known_start=False)
    for day in range(5):
        state = advance(state, bernoulli(0.9, 4800, 100 + day), POLICY)
        state = rebase(state, GroupStats.from_scores(bernoulli(0.9, 20000, 200 + day)), POLICY)
    assert state.alarm_at is None and state.n == 5 * 4800


def test_scores_outside_the_unit_interval_are_refused() -> None:
    state = start_sequential(GroupStats.from_scores([1.0, 0.0] * 10), POLICY, known_start=True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        advance(state, [1.5], POLICY)
