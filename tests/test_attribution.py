"""Alert attribution: the pure decision on constructed strata and anchor runs (each cause,
the mixed case, a lenient judge, a new stratum), the judge level's guarantee by seeded
simulation, and the check job end to end on real SQLite records and anchor runs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from evalcore.exact import clopper_pearson_lower
from evalcore.intervals import GroupStats
from evaluator.analytics.alerts import list_alerts
from evaluator.analytics.attribution import (
    JUDGE_LEVEL,
    Stratum,
    attribute,
    judge_shift,
    strata_labels,
)
from evaluator.analytics.check_job import decide
from evaluator.config.policy import RegressionPolicy
from evaluator.store.store import Store
from evaluator.store.trust_models import AnchorRun
from tests.test_alerts import ALERTS, pattern, rubrics, seed, stable_baseline

POLICY = RegressionPolicy()


def stratum(n: int, passes: int) -> Stratum:
    return Stratum.of(GroupStats.from_scores([1.0] * passes + [0.0] * (n - passes)))


def runs(
    n: int = 100, good_fail: tuple[int, int] = (5, 5), bad_pass: tuple[int, int] = (15, 15)
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Two anchor runs on the same n good and n bad items: the first k good items failed
    (before, after) and the first k bad items passed (before, after)."""
    before, after = {}, {}
    for i in range(n):
        before[f"g{i}"] = [False, i < good_fail[0], 0.0]
        after[f"g{i}"] = [False, i < good_fail[1], 0.0]
        before[f"b{i}"] = [True, not i < bad_pass[0], 0.0]
        after[f"b{i}"] = [True, not i < bad_pass[1], 0.0]
    return before, after


STABLE = judge_shift(*runs())
HARSHER = judge_shift(*runs(good_fail=(5, 25)))  # 20 good items now failed
BASE = {"a": stratum(4000, 3600), "b": stratum(2000, 1600)}


def test_strata_are_the_traffic_labels_the_group_does_not_fix() -> None:
    assert strata_labels(("prompt_version", "model", "feature", "epoch")) == ("tenant",)
    assert strata_labels(("prompt_version", "epoch")) == ("feature", "tenant")
    assert strata_labels(("feature", "tenant", "epoch")) == ()


def test_a_drop_within_strata_with_a_stable_judge_is_the_app() -> None:
    cur = {"a": stratum(400, 320), "b": stratum(200, 140)}  # 0.90 -> 0.80, 0.80 -> 0.70
    result = attribute(BASE, cur, STABLE, POLICY, stratum_labels=("tenant",))
    assert result.cause == "system"
    ev = result.evidence
    assert ev["reweighted"]["drop"] == pytest.approx(0.10)
    assert ev["reweighted"]["p_value"] < 1e-6 and ev["share_shift"]["p_value"] == 1.0
    assert ev["judge"]["significant"] is False and ev["judge"]["drop"] == 0.0
    assert "likely cause: the app" in result.sentence and "stable" in result.sentence


def test_without_an_anchor_run_in_the_window_the_sentence_says_the_judge_was_not_checked() -> None:
    cur = {"a": stratum(400, 320), "b": stratum(200, 140)}
    result = attribute(BASE, cur, None, POLICY, judge_note="no anchor run since 2026-03-10")
    assert result.cause == "system"
    assert result.evidence["judge"] == {"checked": False, "note": "no anchor run since 2026-03-10"}
    assert "not re-checked (no anchor run since 2026-03-10)" in result.sentence


def test_a_harsher_judge_in_the_same_period_is_named_before_the_app() -> None:
    cur = {"a": stratum(400, 296), "b": stratum(200, 128)}  # about the judge's own effect
    result = attribute(BASE, cur, HARSHER, POLICY)
    assert HARSHER is not None and HARSHER.drift.drop == pytest.approx(0.10)
    assert result.cause == "judge" and result.evidence["mixed"] is False
    account = result.evidence["judge_account"]
    assert account["judge_drop"] == pytest.approx(0.20 * account["good_share"])
    assert "likely cause: the judge" in result.sentence and "0.900 -> 0.800" in result.sentence


def test_a_judge_change_plus_a_further_significant_drop_is_judge_with_the_mixed_flag() -> None:
    cur = {"a": stratum(4000, 2200), "b": stratum(2000, 900)}  # far beyond the judge's share
    result = attribute(BASE, cur, HARSHER, POLICY)
    assert result.cause == "judge" and result.evidence["mixed"] is True
    # π = (r0 − b0)/(g0 − b0) from the baseline; judge alone: π·0.75 + (1 − π)·0.15.
    r0, r1 = (2 * 0.9 + 0.8) / 3, (2 * 0.55 + 0.45) / 3
    good = (r0 - 0.15) / (0.95 - 0.15)
    expected = good * 0.75 + (1 - good) * 0.15
    assert result.evidence["judge_account"]["remainder"] == pytest.approx(expected - r1)
    assert "the app may have dropped too" in result.sentence


def test_a_judge_that_became_lenient_cannot_explain_a_drop() -> None:
    lenient = judge_shift(*runs(bad_pass=(15, 45)))  # passes 30 more bad items: BA falls
    assert lenient is not None and lenient.significant
    cur = {"a": stratum(400, 320), "b": stratum(200, 140)}
    result = attribute(BASE, cur, lenient, POLICY)
    assert result.cause == "system"
    assert result.evidence["judge"]["moves_pass_rate_up"] is True


def test_a_low_scoring_stratum_growing_is_the_traffic_mix() -> None:
    base = {"a": stratum(4000, 3800), "b": stratum(1000, 600)}  # 0.95 and 0.60
    cur = {"a": stratum(300, 285), "b": stratum(300, 180)}  # same rates, b 20 % -> 50 %
    result = attribute(base, cur, STABLE, POLICY, stratum_labels=("tenant",))
    assert result.cause == "traffic"
    ev = result.evidence
    assert ev["raw"]["drop"] == pytest.approx(0.105) and ev["raw"]["p_value"] < POLICY.alpha
    assert ev["reweighted"]["drop"] == pytest.approx(0.0, abs=1e-12)
    assert ev["share_shift"]["stratum"] in ("a", "b") and ev["share_shift"]["p_value"] < 1e-9
    assert ev["mix_effect"] == pytest.approx(0.105)
    assert "tenant=" in result.sentence and "20% -> 50%" in result.sentence


def test_a_new_low_scoring_stratum_is_traffic_not_the_app() -> None:
    base = {"a": stratum(5000, 4750)}
    cur = {"a": stratum(400, 380), "new": stratum(200, 100)}
    result = attribute(base, cur, STABLE, POLICY, stratum_labels=("tenant",))
    assert result.cause == "traffic"
    assert result.evidence["share_shift"]["share_before"] in (0.0, 1.0)
    assert result.evidence["reweighted"]["strata_compared"] == 1


def test_no_significant_drop_is_undetermined_and_an_empty_window_too() -> None:
    cur = {"a": stratum(400, 358), "b": stratum(200, 159)}
    result = attribute(BASE, cur, STABLE, POLICY)
    assert result.cause == "undetermined" and "no significant drop" in result.sentence
    empty = attribute(BASE, {}, None, POLICY)
    assert empty.cause == "undetermined" and "no scores" in empty.sentence


def test_judge_shift_needs_both_classes_and_pairs_shared_items() -> None:
    before, after = runs()
    only_good = {k: v for k, v in after.items() if k.startswith("g")}
    assert judge_shift(before, only_good) is None
    assert STABLE is not None and STABLE.drift.test == "paired-exact"
    assert (STABLE.n_good, STABLE.n_bad) == (100, 100)
    rotated = {f"x{k}": v for k, v in after.items()}  # no shared items: unpaired
    shifted = judge_shift(before, rotated)
    assert shifted is not None and shifted.drift.test == "two-proportion"


def test_with_the_judge_unchanged_the_judge_is_named_at_most_at_its_level() -> None:
    """Seeded: exchangeable anchor runs (a temperature-0 judge re-drawing 15 % of its
    verdicts) behind a real system drop; 'judge' must be named at most JUDGE_LEVEL of the
    time (fails when the 99 % Clopper-Pearson lower bound of the rate exceeds it)."""
    rng = random.Random(7)
    cur = {"a": stratum(400, 320), "b": stratum(200, 140)}
    named, seeds = 0, 400
    for _ in range(seeds):
        before, after = {}, {}
        for i in range(200):
            bad = i >= 100
            p = 0.15 if bad else 0.9
            u = rng.random()
            u1 = u if rng.random() < 0.85 else rng.random()
            before[f"i{i}"], after[f"i{i}"] = [bad, not u < p, 0.0], [bad, not u1 < p, 0.0]
        result = attribute(BASE, cur, judge_shift(before, after), POLICY)
        named += result.cause == "judge"
    assert clopper_pearson_lower(named, seeds, 0.01) <= JUDGE_LEVEL, named


# --- end to end: the check job on real SQLite records and anchor runs ---------------------

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def anchor_run(store: Store, at: datetime, outcomes: dict[str, list[Any]]) -> None:
    with Session(store.engine) as session:
        session.add(AnchorRun(rubric="faith", epoch="legacy", started_at=at, n=len(outcomes),
                              scored=len(outcomes), outcomes=outcomes,
                              drift={"alpha": 0.01, "min_drop": 0.05}))  # fmt: skip
        session.commit()


def test_check_job_names_the_judge_when_the_anchors_dropped_in_the_window(
    store: Store, tmp_path: Path
) -> None:
    stable_baseline(store, tenant="t1")
    seed(store, pattern(120, 2), NOW - timedelta(hours=5), NOW, prefix="bad", tenant="t1")
    before, after = runs(good_fail=(5, 55))  # the judge now fails half the good answers
    anchor_run(store, NOW - timedelta(days=3), before)
    anchor_run(store, NOW - timedelta(hours=2), after)
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert len(report.opened) == 1
    (alert,) = list_alerts(store, open_only=True)
    why = alert.summary["attribution"]
    assert why["cause"] == "judge" and why["strata_by"] == ["tenant"]
    assert why["judge"]["before_run"] != why["judge"]["after_run"]
    assert why["judge"]["drop"] == pytest.approx(0.25) and why["judge"]["significant"]
    assert why["raw"]["drop"] == pytest.approx(0.45) and why["mixed"] is False
    assert alert.message.endswith(why["sentence"])
    assert "likely cause: the judge" in alert.message


def test_check_job_names_the_traffic_mix_when_a_weak_tenant_grows(
    store: Store, tmp_path: Path
) -> None:
    start, cut = NOW - timedelta(days=7, hours=6), NOW - timedelta(hours=6)
    seed(store, pattern(800, 20), start, cut, prefix="b1", tenant="t1")  # 0.95
    seed(store, pattern(200, 2), start, cut, prefix="b2", tenant="t2")  # 0.50, 20 %
    seed(store, pattern(40, 20), NOW - timedelta(hours=5), NOW, prefix="c1", tenant="t1")
    seed(store, pattern(160, 2), NOW - timedelta(hours=5), NOW, prefix="c2", tenant="t2")
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert len(report.opened) == 1
    (alert,) = list_alerts(store, open_only=True)
    why = alert.summary["attribution"]
    assert why["cause"] == "traffic", why["sentence"]
    assert why["judge"] == {"checked": False, "note": "no anchor runs of epoch legacy"}
    assert why["strata"]["t2"]["share_before"] == pytest.approx(0.2)
    assert why["strata"]["t2"]["share_now"] == pytest.approx(0.8)
    assert why["reweighted"]["drop"] == pytest.approx(0.0, abs=1e-9)
    assert "likely cause: the traffic mix" in alert.message


def test_an_attribution_that_fails_never_stops_the_alert(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evaluator.analytics.attribution_data as data

    def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(data, "_attribution", broken)
    stable_baseline(store)
    seed(store, pattern(60, 2), NOW - timedelta(hours=5), NOW, prefix="bad")
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    assert len(report.opened) == 1
    why = report.opened[0].summary["attribution"]
    assert why["cause"] == "undetermined" and why["error"] == "RuntimeError: boom"


def test_a_new_version_is_attributed_against_the_version_it_replaced(
    store: Store, tmp_path: Path
) -> None:
    stable_baseline(store)  # v17 until 6 h ago, 0.95
    seed(store, pattern(30, 2), NOW - timedelta(hours=2), NOW, prefix="v18", prompt_version="v18")
    report, _ = decide(store, rubrics(tmp_path), ALERTS, NOW)
    (alert,) = report.opened
    why = alert.summary["attribution"]
    assert alert.kind == "version" and why["cause"] == "system", why["sentence"]
    # The same baseline the e-process used: v17 in the 7 days before v18's first record.
    assert why["strata"][""]["mean_before"] == pytest.approx(alert.baseline_mean)
    assert why["strata"][""]["mean_now"] == pytest.approx(0.5)
    assert "likely cause: the app" in alert.message


def test_strata_shares_are_traffic_estimates_under_sampling_weights(store: Store) -> None:
    """A stratum sampled at p = 0.25 holds a quarter of the records but half the traffic:
    its share is Σ 1/p, not its record count (a budget change is not a mix shift)."""
    from evaluator.analytics.attribution_data import strata_in
    from evaluator.analytics.queries import Clock
    from evaluator.store.models import EvalRecord

    lo = NOW - timedelta(hours=6)
    rows = [
        EvalRecord(trace_id=f"w{t}-{i}", rubric="faith", rubric_version="1",
                   scorer="faithfulness", status="ok", score=1.0, passed=True, epoch="legacy",
                   created_at=lo + timedelta(minutes=i + 1), tenant=t, inclusion_probability=p,
                   prompt_version="v17", model="gpt-4o", feature="qa")
        for t, n, p in (("t1", 100, 1.0), ("t2", 25, 0.25))
        for i in range(n)
    ]  # fmt: skip
    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()
        labels = ("prompt_version", "model", "feature", "epoch")
        got = strata_in(session, Clock.of(session), "faith", labels,
                        ("v17", "gpt-4o", "qa", "legacy"), lo, NOW)  # fmt: skip
    assert {k: s.stats.n for k, s in got.items()} == {"t1": 100, "t2": 25}
    assert {k: s.traffic for k, s in got.items()} == pytest.approx({"t1": 100.0, "t2": 100.0})


def test_the_bench_runs_and_counts_every_seed() -> None:
    from bench.attribution import SCENARIOS, render, run

    results = run(seeds=2, window_n=200, baseline_n=1000)
    assert set(results) == set(SCENARIOS)
    assert all(sum(r["counts"].values()) == 2 for r in results.values())
    assert "| traffic | traffic |" in render(results, 200, 1000, JUDGE_LEVEL)


def test_an_open_alert_is_attributed_again_when_an_anchor_run_lands_after_it(
    store: Store, tmp_path: Path
) -> None:
    """Anchors run weekly: at opening the judge was not checked (the alert said so); the
    next anchor run revises the attribution, keeping the first one."""
    from evaluator.analytics.attribution_data import revise_open

    stable_baseline(store, tenant="t1")
    seed(store, pattern(120, 2), NOW - timedelta(hours=5), NOW, prefix="bad", tenant="t1")
    before, after = runs(good_fail=(5, 55))
    anchor_run(store, NOW - timedelta(days=3), before)
    rubric_set = rubrics(tmp_path)
    report, _ = decide(store, rubric_set, ALERTS, NOW)
    (opened,) = report.opened
    first = opened.summary["attribution"]
    assert first["cause"] == "system" and first["judge"]["checked"] is False
    assert "the judge was not re-checked (no anchor run since" in opened.message
    assert revise_open(store, rubric_set.rubrics[0], ALERTS, NOW + timedelta(hours=1)) == 0

    later = NOW + timedelta(days=1)
    anchor_run(store, later, after)
    assert revise_open(store, rubric_set.rubrics[0], ALERTS, later) == 1
    (alert,) = list_alerts(store, open_only=True)
    assert alert.summary["attribution"]["cause"] == "judge"
    assert alert.summary["attribution"]["revised_at"] == later.isoformat()
    assert alert.summary["attribution_at_open"] == first
    assert "not re-checked" not in alert.message and "likely cause: the judge" in alert.message
    assert alert.message.endswith("(revised after anchor run 2026-03-11 12:00 UTC)")
    assert revise_open(store, rubric_set.rubrics[0], ALERTS, later) == 0  # once
