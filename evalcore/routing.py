"""The routing rule of a two-stage cascade (issue 30), pure: who scores a trace, with which
probability.

Stage 1 runs the cheap score on a trace with probability p1 (1 while its CPU budget lasts);
stage 2 asks the judge with probability p2|1 given the cheap score f:

- 1 in the escalation region (the cascade may not decide locally: no certification, f below
  the certified threshold, no cheap score or hard evidence);
- in the certified-pass region, clip(c · u(f), floor, 1) with u(f) = √(f(1 − f)) + 0.1:
  the sd of a pass/fail whose probability is f (the local score is P(faithful) under equal
  priors) plus an offset (`UNCERTAINTY_EPS`), so more judge calls where the cheap score is
  uncertain — near the threshold — or low (active inference, Zrnic & Candès 2024); c is
  fitted in advance on recent cheap scores so that the mean is the planned rate m;
  floor = max(0.1 · m, r), r the calibration rate (`audit_rate`): p2|1 ≥ r everywhere;
- when a cap binds, m is lowered in advance from the remaining allowance and the expected
  arrivals (`planned_mean`), never below r (the calibration draw is uncharged).

The draws are hashes, compared with the probability fixed before the draw (`draw_point`): the
judge's draw is the calibration draw's point, hash(rubric, cluster) — so the calibration
clusters (point < r) are always among the judged ones and stay a uniform draw — and it reads
neither the verdict nor anything after it. Inverse weights 1/(p1 · p2|1) then make the judged
records a Horvitz–Thompson sample of the first stage (`evalcore.ppi`).

    >>> round(judge_probability(0.9, scale=1.0, floor=0.1), 3)
    0.4
    >>> round(planned_mean(0.3, 0.1, remaining=5, expected_arrivals=100), 3)
    0.15
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

# u's offset: keeps the weights' spread near 6:1 between an uncertain and a confident score. At
# 0.001 a trend's interval covered 92.9 % with a useless cheap score (2,000 seeds,
# tests/statistics/test_two_stage_calibration.py), 93.95 % at 0.1.
UNCERTAINTY_EPS = 0.1
P1_FLOOR = 0.01  # stage 1 never drops below this: weights stay bounded (100 at most)


def draw_point(*parts: str) -> float:
    """A stable point in [0, 1) for the parts (first 8 bytes of blake2b of their join)."""
    text = "\x1f".join(parts)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def stage_one_probability(
    *,
    cpu_per_s: float,
    level_s: float,
    horizon_s: float,
    arrivals_per_s: float,
    cpu_per_trace_s: float,
    reserve_s: float = 0.0,
) -> float:
    """p1: the share of arriving traces the cheap stage can score within its CPU budget —
    the refill (`cpu_per_s`) plus the bucket's level spread over `horizon_s`, over the
    expected demand (arrivals × CPU a trace); 1 when it fits, while the level is above
    `reserve_s` (a burst the bucket holds is scored whole) or when `cpu_per_s` is 0 (no
    bound); never below P1_FLOOR. A bucket in debt (level < 0) lowers it until the debt is
    paid; at a debt of cpu_per_s × horizon_s (the bucket's depth, with the worker's horizon)
    it is the floor. So the CPU spent stays below cpu_per_s × t + 2 × depth while the
    demand is under cpu_per_s / P1_FLOOR (100 × the budget)."""
    if cpu_per_s <= 0 or (reserve_s > 0 and level_s >= reserve_s):
        return 1.0
    supply = cpu_per_s + level_s / max(horizon_s, 1e-9)
    demand = arrivals_per_s * cpu_per_trace_s
    if demand <= 0:
        return 1.0 if supply > 0 else P1_FLOOR
    return min(1.0, max(P1_FLOOR, supply / demand))


def uncertainty(f: float) -> float:
    """u(f) = √(f(1 − f)) + UNCERTAINTY_EPS for a cheap score f in [0, 1]."""
    f = min(1.0, max(0.0, f))
    return math.sqrt(f * (1.0 - f)) + UNCERTAINTY_EPS


def floor_of(mean: float, audit_rate: float) -> float:
    """The sampling floor of the issue: max(0.1 × mean rate, r)."""
    return max(0.1 * mean, audit_rate)


def judge_probability(f: float, *, scale: float, floor: float) -> float:
    """p2|1 in the certified-pass region: clip(scale · u(f), floor, 1)."""
    return min(1.0, max(floor, scale * uncertainty(f)))


def scale_for_mean(recent: Sequence[float], mean: float, floor: float) -> float:
    """c such that `judge_probability` averages `mean` over the cheap scores `recent` (by
    bisection: the average grows with c). 0 when `mean` ≤ `floor` (p2|1 = floor everywhere);
    with no scores, the c that gives `mean` at the median uncertainty (u(0.9))."""
    if mean <= floor or not recent:
        return 0.0 if mean <= floor else mean / uncertainty(0.9)
    f = np.clip(np.asarray(recent, float), 0.0, 1.0)
    us = np.sqrt(f * (1.0 - f)) + UNCERTAINTY_EPS
    lo, hi = 0.0, 1.0 / float(us.min())
    for _ in range(40):  # to 1e-12 of the bracket
        mid = (lo + hi) / 2
        got = float(np.clip(mid * us, floor, 1.0).mean())
        lo, hi = (mid, hi) if got < mean else (lo, mid)
    return hi


def planned_mean(
    target: float, audit_rate: float, *, remaining: float, expected_arrivals: float
) -> float:
    """The mean p2|1 the certified-pass region may take now: `target`, lowered so that the
    calls above the (uncharged) calibration rate fit the allowance left — (m − r) × expected
    arrivals ≤ remaining — and r alone when less than one call is left. Never below r."""
    if target <= audit_rate:
        return audit_rate
    if remaining < 1:
        return audit_rate
    room = remaining / max(expected_arrivals, 1.0)
    return max(audit_rate, min(target, audit_rate + room))
