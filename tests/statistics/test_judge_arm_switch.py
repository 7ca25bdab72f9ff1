"""The combined check's judge-only arm (evaluator.analytics.ppi_regression.judge_sequential)
at the record where its bet scale adapts: exact expectations, no sampling.

Its bets are Horvitz–Thompson scaled while every earlier judge probability was 1 (scale 1)
and at the audit rate after. A bet is a test supermartingale step only if, given the past,
π·scale is the same for every cheap score the record may have: π is a function of the cheap
score, which is correlated with the verdict. The first record drawn with π < 1 is bet at
scale 1 (`clamped`): π·scale is then 1 in the escalation region and the audit rate in the
certified-pass region, so the passes that region holds are under-counted and the step's
expected e-value exceeds 1 under the null. Bounded (≤ 1 + 0.9·(1 − audit) for the largest
bet, one record per stream), but not the stated guarantee. Using the record's own p2 as its
floor gives the same scale (1/π·π = 1): no fix; one needs the scale fixed before the cheap
score (a certification state recorded independently of it) or the step's bias debited from
each bet's wealth (÷ 1 + λ·(1 − reference)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.analytics.gate import cascade_sides
from evaluator.analytics.ppi_regression import Stream, arm_policy, judge_sequential
from evaluator.config.policy import RegressionPolicy

POLICY = arm_policy(
    RegressionPolicy(alpha=0.05, min_samples=2, min_effect_mean=0.0, min_effect_pass_rate=0.0)
)
AUDIT = 0.05


def _baseline(mean: float, n: int, *, certified: bool) -> Stream:
    """n judged records of the old version with the given pass rate; `certified`: its first
    record was drawn with the audit rate (the arm's floor is the audit rate from the start)."""
    k = round(n * mean)
    p2 = np.ones(n)
    if certified:
        p2[0] = AUDIT
    y = np.r_[np.ones(k), np.zeros(n - k)]
    return Stream(np.full(n, 0.3), y, np.ones(n, bool), p2)


def _expected_e_after_one_record(base: Stream, mean: float, certified_share: float) -> float:
    """E[e-value] after one new-version record whose top-judge mean equals `mean`: with
    probability `certified_share` its cheap score is in the certified-pass region (π = the
    audit rate, verdict a pass), else in the escalation region (π = 1, pass rate set so the
    record's mean is `mean`). Exact: the sum over the four outcomes."""
    q = (mean - certified_share) / (1 - certified_share)
    outcomes = [  # (probability, π, judged, verdict)
        ((1 - certified_share) * (1 - q), 1.0, True, 0.0),
        ((1 - certified_share) * q, 1.0, True, 1.0),
        (certified_share * AUDIT, AUDIT, True, 1.0),
        (certified_share * (1 - AUDIT), AUDIT, False, math.nan),
    ]
    total = 0.0
    for prob, pi, judged, y in outcomes:
        one = Stream(np.array([0.5]), np.array([y]), np.array([judged]), np.array([pi]))
        state = judge_sequential(base, one, POLICY, known_start=True, pi_floor=AUDIT)
        total += prob * math.exp(state.log_e)
    return total


def test_once_the_floor_is_the_audit_rate_a_bet_is_a_supermartingale_step() -> None:
    """The control: the old version was certified, so the new record is bet at the audit
    rate's scale whatever its π: E[e] ≤ 1 under the null (0.996)."""
    base = _baseline(0.8, 400, certified=True)
    assert _expected_e_after_one_record(base, 0.8, 0.75) <= 1.0


@pytest.mark.xfail(
    strict=True,
    reason=(
        "judge_sequential bets the first record drawn with p2 < 1 at scale 1 (clamped): "
        "not Horvitz-Thompson, E[e] = 1.108 after it under the null (up to 1.19 over "
        "baseline means 0.5-0.98 and certified shares 0.3-0.97); a fix needs the scale "
        "fixed before the cheap score or a debit of the step's bias in regression.advance"
    ),
)
def test_the_record_where_the_scale_adapts_is_a_supermartingale_step() -> None:
    """Never certified before: the new version's first record drawn with π < 1 (the
    certification arrives) is bet at scale 1. Measured: E[e] = 1.108 (baseline 400 records
    at 0.8, reference 0.719; 75 % of traces in the certified region)."""
    base = _baseline(0.8, 400, certified=False)
    assert _expected_e_after_one_record(base, 0.8, 0.75) <= 1.0


def test_a_judge_probability_below_the_floor_is_counted_as_clamped() -> None:
    """A record judged with p2 below the audit rate is bet as if drawn at the audit rate
    (its weight 1/π is not used): the judge-only arm says so in `clamped`, as the PPI++ arm
    does."""
    base = _baseline(0.8, 50, certified=True)
    low = Stream(np.array([0.9, 0.9]), np.array([1.0, 0.0]), np.ones(2, bool), np.full(2, 0.01))
    state = judge_sequential(base, low, POLICY, known_start=True, pi_floor=AUDIT)
    assert state.clamped == 2


def test_the_gate_counts_a_judge_probability_below_the_floor() -> None:
    """`evaluator gate` on a cascade reports such records in `probabilities_below_floor`,
    beside each version's first record below 1 (each version's floor adapts alone)."""
    base = _baseline(0.8, 50, certified=True)  # its first record: counted
    p2 = np.array([1.0, AUDIT, 0.01, 0.01])  # the switch (counted), then two below the floor
    new = Stream(np.full(4, 0.9), np.array([1.0, 1.0, 1.0, 0.0]), np.ones(4, bool), p2)
    assert cascade_sides(base, new, AUDIT)[1] == 1 + 1 + 2
