"""Pure statistics for score streams: one-sided tests and p-value adjustment.

The sufficient statistics and intervals (`GroupStats`, `wilson_ci`, `t_quantile`) live in
evalcore.intervals, below every layer that shows a number.
No I/O and no third-party imports, so the regression check runs wherever the worker runs.
Every test here is one-sided: "is the current group *worse* than the baseline?" — a score
that improves never pages anyone.

    >>> base = GroupStats.from_scores([1, 1, 1, 0, 1, 1, 1, 1])
    >>> cur = GroupStats.from_scores([0, 1, 0, 0, 1, 0])
    >>> round(fisher_lower_p(base, cur), 3)
    0.063
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalcore.intervals import GroupStats
from evalcore.sequences import MeanSample, lower_bound, smallest_level, upper_bound
from evaluator.config.policy import AdjustMethod

__all__ = [
    "adjust_pvalues",
    "bounded_drop",
    "bounded_lower_p",
    "fisher_lower_p",
]


def bounded_lower_p(baseline: GroupStats, current: GroupStats) -> float:
    """One-sided p-value for H1: mean(current) < mean(baseline), for scores in [0, 1].

    Valid at every n, zero variance included (Welch's t is not: two constant groups give it
    p = 0): the smallest alpha at which the baseline's lower confidence bound exceeds the
    current group's upper bound, each at alpha/2 (evalcore.sequences, from the sums).
    Conservative: it pays for holding at every n and for the union of two bounds.

        >>> bounded_lower_p(GroupStats.from_scores([0.9] * 10), GroupStats.from_scores([0.8] * 10))
        1.0
    """
    if baseline.n < 2 or current.n < 2 or baseline.mean <= current.mean:
        return 1.0
    b = MeanSample.from_moments(baseline.n, baseline.total, baseline.total_sq)
    c = MeanSample.from_moments(current.n, current.total, current.total_sq)

    return smallest_level(lambda alpha: bool(bounded_drop(b, c, alpha)))


def bounded_drop(baseline: MeanSample, current: MeanSample, alpha: float) -> Any:
    """True where the baseline's lower bound exceeds the current upper bound, each at
    alpha/2: a drop at level alpha (vectorised over streams)."""
    return lower_bound(baseline, alpha / 2) > upper_bound(current, alpha / 2)


def fisher_lower_p(baseline: GroupStats, current: GroupStats) -> float:
    """One-sided Fisher exact p-value for H1: pass rate(current) < pass rate(baseline).

    Exact, because a new prompt version is judged on a handful of answers where the
    normal approximation is anti-conservative. Walks the hypergeometric pmf by ratios from
    the observed count into the short tail, so a 30 000-answer baseline costs microseconds.
    """
    if baseline.passes is None or current.passes is None or current.n == 0 or baseline.n == 0:
        return 1.0
    big_n, k, draws, x = (
        baseline.n + current.n,
        baseline.passes + current.passes,
        current.n,
        current.passes,
    )
    lo, hi = max(0, draws - (big_n - k)), min(k, draws)
    mode = math.floor((draws + 1) * (k + 1) / (big_n + 2))

    def log_pmf(i: int) -> float:
        return _log_comb(k, i) + _log_comb(big_n - k, draws - i) - _log_comb(big_n, draws)

    lower = x <= mode  # sum the side of x that lies in a tail, where terms only shrink
    start = x if lower else x + 1
    if start > hi:
        return 1.0
    term = math.exp(log_pmf(start))
    tail, i = term, start
    while (i > lo) if lower else (i < hi):
        if lower:
            term *= i * (big_n - k - draws + i) / ((k - i + 1) * (draws - i + 1))
            i -= 1
        else:
            term *= (k - i) * (draws - i) / ((i + 1) * (big_n - k - draws + i + 1))
            i += 1
        tail += term
        if term < 1e-17 * tail:
            break
    return min(1.0, tail) if lower else max(0.0, 1.0 - tail)


def _log_comb(n: int, r: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)


def adjust_pvalues(pvalues: Sequence[float], method: AdjustMethod = "bh") -> list[float]:
    """Adjust p-values of many groups tested in one run; same order as given.

    "bh" (Benjamini–Hochberg) controls the false discovery rate, "bonferroni" the chance of
    any false alert; compare the result with the same alpha as a single test.

    >>> [round(p, 3) for p in adjust_pvalues([0.01, 0.04, 0.03, 0.5])]
    [0.04, 0.053, 0.053, 0.5]
    """
    m = len(pvalues)
    if method == "none" or m == 0:
        return [min(1.0, max(0.0, p)) for p in pvalues]
    if method == "bonferroni":
        return [min(1.0, p * m) for p in pvalues]
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):  # step-up: each adjusted value is a min over larger ranks
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted
