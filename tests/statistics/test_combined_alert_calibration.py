"""The combined regression check of a rubric with a cheap stage (evaluator.analytics.
ppi_regression.combined_sequential: the judge-only arm and the PPI++ arm at alpha/2 each,
alert when either crosses) on seeded null streams: a new version whose top-judge mean equals
the old one's alerts at most alpha (the suite's rule, 2,000 seeds a cell) at small n (30-100
first-stage traces a side, about 60 % of them judged), re-run as data arrives, with unequal
inclusion probabilities (the cascade's judge probabilities, and a first stage scoring half of
one stratum), with a useful, useless and anti-correlated cheap score, and with a drift in the
new version's cheap score alone (its judge unchanged: the cheap score falls or rises by 0.3,
which moves the judge probabilities). The drop detector stays within its ARL. Power: the first
burst of a worse version is caught, where the PPI++ arm alone (the design that was opt-in)
misses it."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from evalcore.intervals import GroupStats
from evaluator.analytics.ppi_regression import (
    Stream,
    combined_sequential,
    judge_sequential,
    ppi_sequential,
)
from evaluator.analytics.regression import advance, start_sequential
from evaluator.config.policy import RegressionPolicy
from tests.statistics.calibration import SEEDS, assert_within_level
from tests.statistics.test_ppi_alert_calibration import AUDIT, draw

pytestmark = pytest.mark.timeout(1200)  # CPU-bound: slow on a loaded machine, not hung
NULL = RegressionPolicy(alpha=0.05, min_samples=10, min_effect_mean=0.0, min_effect_pass_rate=0.0)

CELLS = [  # law, binary, drift, design, p1, n a side
    ("useful", True, 0.0, "cascade", False, 30),
    ("useful", True, 0.0, "cascade", False, 100),
    ("useless", True, 0.0, "cascade", False, 60),
    ("anti-correlated", True, 0.0, "cascade", False, 60),
    ("useful", True, -0.3, "cascade", False, 60),  # the cheap score falls, the judge does not
    ("useful", True, 0.3, "cascade", False, 60),  # ... or rises
    ("useful", False, 0.0, "cascade", False, 60),
    ("useless", False, -0.3, "uniform", False, 60),
    ("useful", True, 0.0, "cascade", True, 60),  # unequal first-stage probabilities too
]


def _check(
    base: Stream,
    new: Stream,
    policy: RegressionPolicy,
    *,
    p1: bool,
    known_start: bool = True,
    floor: float = AUDIT,
) -> bool:
    alarm, _, _ = combined_sequential(
        base, new, policy, known_start=known_start, pi_floor=floor, max_weight=2.0 if p1 else 1.0
    )
    return alarm


@pytest.mark.parametrize(("law", "binary", "drift", "design", "p1", "n"), CELLS)
def test_a_new_version_as_good_as_the_old_alerts_at_most_alpha(
    law: str, binary: bool, drift: float, design: str, p1: bool, n: int
) -> None:
    cell = f"combined null {law} binary={binary} drift={drift} {design} p1={p1} n={n}"
    rng = np.random.default_rng(zlib.crc32(cell.encode()))
    floor = AUDIT if design == "cascade" else 0.3
    alarms = 0
    for _ in range(SEEDS):
        base = draw(rng, law, n, binary=binary, design=design, p1=p1)
        new = draw(rng, law, n, binary=binary, drift=drift, design=design, p1=p1)
        alarms += _check(base, new, NULL, p1=p1, floor=floor)
    print(f"{cell}: {alarms}/{SEEDS}")
    assert_within_level(alarms, SEEDS, NULL.alpha, cell)


def _prefix(s: Stream, k: int) -> Stream:
    return Stream(s.f[:k], s.y[:k], s.judged[:k], s.p2[:k], None if s.p1 is None else s.p1[:k])


@pytest.mark.parametrize("law", ["useful", "anti-correlated"])
def test_rerunning_the_check_as_records_arrive_keeps_alpha(law: str) -> None:
    """The cron re-runs the check on the grown stream every period, and the first alarm
    pages: here after every 20 records of the new version, up to 80 (each run recomputes
    both arms from the stored records, as the job does)."""
    cell = f"combined null re-run every 20 records {law}"
    rng = np.random.default_rng(zlib.crc32(cell.encode()))
    alarms = 0
    for _ in range(SEEDS):
        base = draw(rng, law, 60, binary=True)
        new = draw(rng, law, 80, binary=True)
        alarms += any(
            _check(base, _prefix(new, k), NULL, p1=False) for k in range(20, len(new) + 1, 20)
        )
    print(f"{cell}: {alarms}/{SEEDS}")
    assert_within_level(alarms, SEEDS, NULL.alpha, cell)


def test_the_combined_drop_detector_stays_within_its_arl() -> None:
    """The drop check (known_start=False, CUSUM restarts), both arms at 2·arl: P(a false
    alarm within n evaluations) ≤ n/arl; arl 4,000 so the level 60/4,000 = 0.015 can bite."""
    policy = RegressionPolicy(
        min_samples=10, min_effect_mean=0.0, min_effect_pass_rate=0.0, arl=4_000.0
    )
    rng = np.random.default_rng(31)
    alarms = 0
    for _ in range(SEEDS):
        base = draw(rng, "useful", 60, binary=True)
        new = draw(rng, "useful", 60, binary=True, drift=-0.3)
        alarms += _check(base, new, policy, p1=False, known_start=False)
    print(f"combined e-detector null, drift: {alarms}/{SEEDS}")
    assert_within_level(alarms, SEEDS, 60 / policy.arl, "combined e-detector null, drift")


def test_the_first_burst_of_a_worse_version_is_caught() -> None:
    """The shipped rubric's setting (alpha 0.01, min_samples 30, audit rate 0.1, nothing
    certified yet: every first-stage trace judged) and its first-burst scenario's traffic:
    55 traces of the old version, all passing, then 55 of the new one failing 80 % of the
    time. Measured over 200 seeds: the combined check alerts in every seed, the PPI++ arm
    alone (the opt-in design, at the full alpha) in none."""
    policy = RegressionPolicy(min_samples=30)
    rng = np.random.default_rng(3)
    combined = ppi_only = 0
    for _ in range(200):
        f = rng.random(110)
        y = np.concatenate([np.ones(55), (rng.random(55) < 0.2).astype(float)])
        ones = np.ones(55, bool)
        base, new = (Stream(f[s], y[s], ones, np.ones(55)) for s in (slice(0, 55), slice(55, None)))
        combined += _check(base, new, policy, p1=False, floor=0.1)
        state, _, _ = ppi_sequential(base, new, policy, known_start=True, pi_floor=0.1)
        ppi_only += state.alarm_at is not None
    assert combined == 200 and ppi_only == 0, (combined, ppi_only)


def test_before_a_certification_the_price_is_the_half_alpha() -> None:
    """Every trace judged (a cascade before its first certification), alpha 0.01,
    min_samples 30, 100 records a side, pass rate 0.9 -> 0.6, 200 seeds: the combined check
    against today's check on the same judged scores at the full alpha. Measured: 46 against
    66 (n 60, 0.95 -> 0.55: 67 against 95)."""
    policy = RegressionPolicy(min_samples=30)
    rng = np.random.default_rng(1)
    combined = today = 0
    for _ in range(200):
        f = rng.random(200)
        y = np.concatenate([rng.random(100) < 0.9, rng.random(100) < 0.6]).astype(float)
        ones = np.ones(100, bool)
        base, new = (
            Stream(f[s], y[s], ones, np.ones(100)) for s in (slice(0, 100), slice(100, None))
        )
        combined += _check(base, new, policy, p1=False, floor=0.1)
        ref = GroupStats.from_scores(y[:100].tolist())
        state = advance(start_sequential(ref, policy, known_start=True), y[100:].tolist(), policy)
        today += state.alarm_at is not None
    print(f"before a certification: combined {combined}/200, today's check {today}/200")
    assert 0.5 * today < combined <= today, (combined, today)


def test_a_real_drop_on_a_long_stream_is_caught_more_often_than_on_judged_records() -> None:
    """A drop of 0.2 in the top judge's mean (useful cheap score that follows it), baseline
    2,000 traces, stream 1,000, 60 seeds: the combined check against the judge-only arm and
    the PPI++ arm each alone at the full alpha. Measured: 27, 20 and 33 of 60; over 200 seeds
    87, 77 and 102 (with a useless cheap score 155, 166 and 147): the combined check pays
    for its two halves of alpha, and is never the worst of the three."""
    policy = RegressionPolicy(min_effect_mean=0.0, min_effect_pass_rate=0.0)
    rng = np.random.default_rng(5)
    combined = ppi = judged = 0
    named_ppi = []  # alerts the PPI++ arm alone fired: named so
    for _ in range(60):
        base = draw(rng, "useful", 2000, binary=True)
        new = draw(rng, "useful", 1000, binary=True, shift=0.2)
        alarm, verdict, named = combined_sequential(
            base, new, policy, known_start=True, pi_floor=AUDIT
        )
        combined += alarm
        if alarm and not named["arms"]["hajek"]["alarm"]:
            named_ppi.append(named["estimator"] == "ppi++" and verdict.e_value is not None)
        state, _, _ = ppi_sequential(base, new, policy, known_start=True, pi_floor=AUDIT)
        ppi += state.alarm_at is not None
        js = judge_sequential(base, new, policy, known_start=True, pi_floor=AUDIT)
        judged += js.alarm_at is not None
    print(f"combined {combined}/60, ppi++ alone {ppi}/60, judged alone {judged}/60")
    assert judged < combined < ppi, (combined, ppi, judged)
    assert named_ppi and all(named_ppi), named_ppi
