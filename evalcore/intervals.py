"""Interval arithmetic for score streams (pure, stdlib only): sufficient statistics, the
Student-t and Wilson intervals of a mean.

Lives in the library so that every layer that shows a number can show its interval with
the same arithmetic: the regression check and trends (evaluator.analytics), and the
Prometheus gauges (evaluator.outputs.metrics), which sit below analytics.

    >>> GroupStats.from_scores([1, 0, 1, 1]).mean_ci()
    (0.300641842582402, 0.9544127391902995)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist

from evalcore.exact import betainc

_NORMAL = NormalDist()


@dataclass(frozen=True)
class GroupStats:
    """Sufficient statistics of one group's scores (all in [0, 1]).

    Additive, so SQL can produce them directly (`COUNT(*)`, `SUM(score)`,
    `SUM(score*score)`, `SUM(passed)`) and two buckets merge with `+`.
    `passes` is None when no pass threshold applies to a continuous score.
    """

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    passes: int | None = None

    @classmethod
    def from_scores(
        cls, scores: Iterable[float], pass_threshold: float | None = None
    ) -> GroupStats:
        n, total, total_sq, passes = 0, 0.0, 0.0, 0
        for s in scores:
            n += 1
            total += s
            total_sq += s * s
            if pass_threshold is not None and s >= pass_threshold:
                passes += 1
        stats = cls(n, total, total_sq, passes if pass_threshold is not None else None)
        return stats if pass_threshold is not None or not stats.binary else stats.with_passes()

    def with_passes(self) -> GroupStats:
        """For 0/1 scores the pass count is the sum; fill it in."""
        return (
            self
            if self.passes is not None or not self.binary
            else GroupStats(self.n, self.total, self.total_sq, round(self.total))
        )

    def __add__(self, other: GroupStats) -> GroupStats:
        sides = [s for s in (self, other) if s.n]  # an empty side must not erase passes
        passes = None if any(s.passes is None for s in sides) else sum(s.passes or 0 for s in sides)
        return GroupStats(
            self.n + other.n, self.total + other.total, self.total_sq + other.total_sq, passes
        )

    def __sub__(self, earlier: GroupStats) -> GroupStats:
        """The scores added since `earlier`, a prefix of the same stream."""
        both = self.passes is not None and earlier.passes is not None
        passes = (self.passes or 0) - (earlier.passes or 0) if both else None
        return GroupStats(
            self.n - earlier.n, self.total - earlier.total, self.total_sq - earlier.total_sq, passes
        )

    @property
    def binary(self) -> bool:
        # On [0, 1], x*x == x only for 0 and 1: the sums alone tell a pass/fail stream apart.
        return self.n > 0 and abs(self.total_sq - self.total) <= 1e-9 * max(self.n, 1)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def var(self) -> float:
        """Sample variance (n - 1 denominator); 0 for fewer than two scores."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def pass_rate(self) -> float | None:
        return None if self.passes is None or self.n == 0 else self.passes / self.n

    def mean_ci(self, confidence: float = 0.95) -> tuple[float, float]:
        """Student-t interval for the mean, clipped to the [0, 1] score range."""
        if self.n < 2:
            return (0.0, 1.0)
        if self.binary:  # a t interval on 0/1 data collapses at 0 % or 100 %; Wilson does not
            return wilson_ci(round(self.total), self.n, confidence)
        half = t_quantile(0.5 + confidence / 2, self.n - 1) * self.std / math.sqrt(self.n)
        return (max(0.0, self.mean - half), min(1.0, self.mean + half))

    def pass_rate_ci(self, confidence: float = 0.95) -> tuple[float, float] | None:
        return None if self.passes is None else wilson_ci(self.passes, self.n, confidence)

    def summary(self, confidence: float = 0.95) -> dict[str, float | int | None]:
        """Plain numbers for an alert record or a JSON response."""
        lo, hi = self.mean_ci(confidence)
        pr_ci = self.pass_rate_ci(confidence)
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "mean_ci_low": lo,
            "mean_ci_high": hi,
            "pass_rate": self.pass_rate,
            "pass_rate_ci_low": pr_ci[0] if pr_ci else None,
            "pass_rate_ci_high": pr_ci[1] if pr_ci else None,
            "ci_level": confidence,  # the level of both intervals above
        }


def wilson_ci(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval: sane at 0 % and 100 %, unlike the Wald interval. `n` may be an
    effective sample size (weighted records)."""
    if n == 0:
        return (0.0, 1.0)
    z = _NORMAL.inv_cdf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (
        0.0 if successes <= 0 else max(0.0, centre - half),
        1.0 if successes >= n else min(1.0, centre + half),
    )


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (possibly fractional) degrees of freedom."""
    if df > 1e6 or math.isinf(t):
        return _NORMAL.cdf(t)
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    lo, hi = -1e3, 1e3
    for _ in range(100):  # bisection: monotone, no derivative needed, called rarely
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
    return (lo + hi) / 2
