"""The regression check under a judge budget: records weighted by 1/inclusion probability.

With every p = 1 the verdicts are today's exactly. When the sampling rate of the easy traces
falls inside the window (a budget tightening) while tail-rule traces (the hard ones) stay at
p = 1, the evaluated mix gets harder although the traffic did not change: the unweighted
check pages on that, the weighted one does not — and a real drop is still found.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from evalcore.intervals import GroupStats
from evalcore.weights import WeightedStats
from evaluator.analytics.alerts import policy_for
from evaluator.analytics.findings import check_rubric
from evaluator.analytics.regression import (
    RegressionPolicy,
    advance,
    compare_stats,
    sequential_verdict,
    start_sequential,
)
from evaluator.config.rubrics import parse_rubric
from evaluator.config.settings import AlertsSettings
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store

POLICY = RegressionPolicy()
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LABELS = {"prompt_version": "v17", "model": "gpt-4o", "feature": "qa"}
# Traffic: 10 % hard traces (a tail rule takes each, p = 1) passing 30 %, 90 % easy ones
# passing 90 %: the population pass rate is 0.84 all day.
HARD, EASY, HARD_SHARE = 0.3, 0.9, 0.1
Sample = tuple[float, float]  # (score, inclusion probability)


def day(n_traffic: int, easy_rate: float, rng: random.Random, easy: float = EASY) -> list[Sample]:
    """The evaluated records of `n_traffic` traces at an easy-trace sampling rate."""
    out = []
    for _ in range(n_traffic):
        hard = rng.random() < HARD_SHARE
        p = 1.0 if hard else easy_rate
        if rng.random() < p:
            out.append((1.0 if rng.random() < (HARD if hard else easy) else 0.0, p))
    return out


def stats(records: list[Sample], weighted: bool) -> GroupStats:
    plain = GroupStats.from_scores([s for s, _ in records], 0.5)
    if not weighted:
        return plain
    return WeightedStats.from_scores(records, 0.5).effective(plain)


def check(base: list[Sample], window: list[Sample], weighted: bool) -> tuple[bool, bool]:
    """(e-detector alarmed, fixed-window test significant)."""
    b = stats(base, weighted)
    # The sampler's floor (0.05, the tightest rate of these days) is known in advance.
    state = start_sequential(b, POLICY, known_start=False, pass_threshold=0.5,
                             max_weight=20.0 if weighted else 1.0)  # fmt: skip
    xs = [s for s, _ in window]
    state = advance(state, xs, POLICY, [p for _, p in window] if weighted else None)
    fixed = compare_stats(b, stats(window, weighted), POLICY)
    return state.alarm_at is not None, fixed.regression


# --- p = 1 changes nothing ---------------------------------------------------------------------

unit = st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.8, 1.0]), min_size=0, max_size=80)


@settings(max_examples=60, deadline=None)
@given(unit, unit)
def test_probability_one_gives_todays_verdicts_exactly(base: list[float], cur: list[float]) -> None:
    b = GroupStats.from_scores(base, 0.5)
    assert WeightedStats.from_scores([(s, 1.0) for s in base], 0.5).effective(b) is b
    plain = advance(start_sequential(b, POLICY, known_start=False, pass_threshold=0.5), cur, POLICY)
    ones = advance(
        start_sequential(b, POLICY, known_start=False, pass_threshold=0.5),
        cur,
        POLICY,
        [1.0] * len(cur),
    )
    assert ones.log_wealth == plain.log_wealth and ones.alarm_at == plain.alarm_at
    assert ones.segment == plain.segment
    assert sequential_verdict(ones, POLICY) == sequential_verdict(plain, POLICY)
    # A record older than 0007 (p NULL) weighs 1 too.
    nulls = advance(start_sequential(b, POLICY, known_start=True), cur, POLICY, [None] * len(cur))
    assert nulls.log_wealth == advance(start_sequential(b, POLICY, known_start=True), cur,
                                       POLICY).log_wealth  # fmt: skip


def test_effective_stats_carry_the_hajek_mean_and_the_ess() -> None:
    records = [(1.0, 1.0)] * 30 + [(0.0, 0.25)] * 10  # 30 passes at w 1, 10 fails at w 4
    w = WeightedStats.from_scores(records, 0.5)
    eff = w.effective(GroupStats.from_scores([s for s, _ in records], 0.5))
    assert w.mean == pytest.approx(30 / 70)
    assert w.ess == pytest.approx(70**2 / (30 + 160)) and eff.n == 25  # ⌊25.8⌋
    assert eff.mean == pytest.approx(w.mean) and eff.pass_rate == pytest.approx(11 / 25)
    assert eff.var == pytest.approx(w.var * (25.8 - 1) / 25.8 * 25 / 24, rel=0.01)


# --- a rate change alone is not a regression ------------------------------------------------------


def test_a_rate_change_alone_pages_unweighted_but_not_weighted() -> None:
    alarms = {True: [0, 0], False: [0, 0]}
    estimates: list[float] = []
    for seed in range(20):
        rng = random.Random(seed)
        base = day(7000, 0.5, rng)  # a week at half the easy traffic
        window = day(1500, 0.05, rng)  # the budget tightens: 5 % of the easy traffic
        estimates.append(WeightedStats.from_scores(window).mean)
        for weighted in (True, False):
            seq, fixed = check(base, window, weighted)
            alarms[weighted][0] += seq
            alarms[weighted][1] += fixed
    # Unweighted, the window looks like a drop from ~0.79 to ~0.46 pass rate: every seed pages.
    assert alarms[False] == [20, 20]
    # Weighted, the traffic did not change: no page from either test.
    assert alarms[True] == [0, 0]
    # The Hájek estimate of the window is unbiased for the population's 0.84 (within three
    # standard errors over the seeds); the evaluated records' plain mean is ~0.58.
    population = HARD_SHARE * HARD + (1 - HARD_SHARE) * EASY
    se = statistics.stdev(estimates) / len(estimates) ** 0.5
    assert abs(statistics.fmean(estimates) - population) < 3 * se < 0.03


def test_a_real_drop_under_a_changing_rate_is_still_found_weighted() -> None:
    """Found by both tests; the e-detector needs a bigger drop than the unweighted one would,
    because the window's ESS (~83 of ~217 records) is what carries the evidence."""
    fixed = detector = 0
    for seed in range(10):
        rng = random.Random(100 + seed)
        base = day(7000, 0.5, rng)
        window = day(1500, 0.05, rng, easy=0.6)  # easy traces now pass 60 %, not 90 %
        fixed += check(base, window, weighted=True)[1]
        window = day(1500, 0.05, rng, easy=0.5)
        detector += check(base, window, weighted=True)[0]
    assert (fixed, detector) == (10, 10)


# --- end to end through SQL ----------------------------------------------------------------------


def put(store: Store, records: list[Sample], lo: datetime, hi: datetime, prefix: str,
        keep_p: bool) -> None:  # fmt: skip
    step = (hi - lo) / max(len(records), 1)
    rows = [
        EvalRecord(trace_id=f"{prefix}-{i}", rubric="faith", rubric_version="1",
                   scorer="faithfulness", status="ok", score=s, passed=s >= 0.5,
                   created_at=lo + step * i + timedelta(minutes=1), trace_at=lo + step * i,
                   inclusion_probability=p if keep_p else None, epoch="legacy", **LABELS)
        for i, (s, p) in enumerate(records)
    ]  # fmt: skip
    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()


@pytest.mark.parametrize("keep_p", [True, False])
def test_check_job_weights_records_read_from_sql(
    store: Store, tmp_path: Path, keep_p: bool
) -> None:
    rng = random.Random(7)
    put(store, day(7000, 0.5, rng), NOW - timedelta(days=7, hours=6), NOW - timedelta(hours=6),
        "base", keep_p)  # fmt: skip
    put(store, day(1500, 0.05, rng), NOW - timedelta(hours=6), NOW - timedelta(minutes=5),
        "win", keep_p)  # fmt: skip
    body = 'name = "faith"\nversion = "1"\nscorer = "faithfulness"\npass_threshold = 0.5\n'
    rubric = parse_rubric(body, source=tmp_path / "faith.toml")
    floor = 0.05 if keep_p else 1.0  # the sampler's floor, known in advance
    cfg = replace(policy_for(rubric, AlertsSettings()), max_weight=1 / floor)
    with Session(store.engine) as session:
        findings, cur = check_rubric(session, "faith", cfg, 0.5, NOW)
    (f,) = findings
    assert f.kind == "drop"
    # With the probabilities the check sees a steady 0.84; without them (NULL = 1) the same
    # records look like a drop and page: the rate change is what the unweighted check sees.
    assert f.alarm is (not keep_p)
    (window,) = cur.values()
    if keep_p:
        assert window.mean == pytest.approx(0.84, abs=0.06)
        assert window.n < 120  # ⌊ESS⌋ ≈ 83 of ~217 records: the 1/p = 20 records dominate
    else:
        assert window.mean < 0.6
