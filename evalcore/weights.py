"""Inverse-probability weighted statistics (pure): unbiased trends under changing rates.

A record sampled with probability p stands for 1/p traces. The Hájek estimate of a mean is
Σ(w·score) / Σw with w = 1/p: it stays unbiased when sampling rates change over the day (a
budget boosting a new prompt version, tail rules taking every error). Its uncertainty is
stated through the effective sample size ESS = (Σw)² / Σw² (Kish): the number of equally
weighted records that would give the same precision; intervals and the regression check use
the ESS where an unweighted statistic uses n. With every weight 1 the ESS is n and every
number equals the unweighted one.

    >>> s = WeightedStats.from_scores([(1.0, 1.0), (0.0, 0.25)])
    >>> round(s.mean, 3), round(s.ess, 3)
    (0.2, 1.471)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from evalcore.intervals import GroupStats, t_quantile, wilson_ci


def weight_of(probability: float | None) -> float:
    """1/p; an absent probability (a record older than 0007) counts as 1."""
    return 1.0 if probability is None or probability <= 0 else 1.0 / probability


@dataclass(frozen=True)
class WeightedStats:
    """Weighted sufficient statistics of one group (additive, like GroupStats)."""

    n: int = 0
    w_sum: float = 0.0
    w_total: float = 0.0
    w_total_sq: float = 0.0
    w_sq_sum: float = 0.0
    w_passes: float | None = None

    @classmethod
    def from_scores(
        cls, pairs: Iterable[tuple[float, float | None]], pass_threshold: float | None = None
    ) -> WeightedStats:
        """From (score, probability) pairs."""
        n, ws, wt, wq, w2, wp = 0, 0.0, 0.0, 0.0, 0.0, 0.0
        for score, p in pairs:
            w = weight_of(p)
            n, ws, wt, wq, w2 = n + 1, ws + w, wt + w * score, wq + w * score * score, w2 + w * w
            if pass_threshold is not None and score >= pass_threshold:
                wp += w
        return cls(n, ws, wt, wq, w2, wp if pass_threshold is not None else None)

    def __add__(self, other: WeightedStats) -> WeightedStats:
        sides = [s for s in (self, other) if s.n]  # an empty side must not erase passes
        passes = (
            None
            if any(s.w_passes is None for s in sides)
            else sum(s.w_passes or 0.0 for s in sides)
        )
        return WeightedStats(
            self.n + other.n,
            self.w_sum + other.w_sum,
            self.w_total + other.w_total,
            self.w_total_sq + other.w_total_sq,
            self.w_sq_sum + other.w_sq_sum,
            passes,
        )

    def __sub__(self, earlier: WeightedStats) -> WeightedStats:
        """The records added since `earlier`, a prefix of the same stream."""
        both = self.w_passes is not None and earlier.w_passes is not None
        passes = (self.w_passes or 0.0) - (earlier.w_passes or 0.0) if both else None
        return WeightedStats(
            self.n - earlier.n,
            self.w_sum - earlier.w_sum,
            self.w_total - earlier.w_total,
            self.w_total_sq - earlier.w_total_sq,
            self.w_sq_sum - earlier.w_sq_sum,
            passes,
        )

    @property
    def unit(self) -> bool:
        """Every weight 1 (one rate of 1, or records older than 0007)."""
        return self.w_sum == self.n and self.w_sq_sum == self.n

    def effective(self, plain: GroupStats) -> GroupStats:
        """What the regression tests take: `plain` (the unweighted sums of the same records)
        when every weight is 1, so p = 1 gives today's verdicts exactly; otherwise the equally
        weighted group with the same Hájek mean, weighted variance and weighted pass rate and
        n = ⌊ESS⌋ (Kish). Welch's t then uses the ESS for n, Fisher's exact test the
        effective pass count round(pass rate × ⌊ESS⌋) of ⌊ESS⌋."""
        if self.unit:
            return plain
        m = math.floor(self.ess + 1e-9)
        passes = self.w_passes if plain.passes is not None else None
        if m == 0 or self.w_sum <= 0:
            return GroupStats(passes=None if passes is None else 0)
        second = self.w_total_sq / self.w_sum
        rate = None if passes is None else round(passes / self.w_sum * m)
        return GroupStats(m, self.mean * m, second * m, rate)

    @property
    def ess(self) -> float:
        return self.w_sum * self.w_sum / self.w_sq_sum if self.w_sq_sum > 0 else 0.0

    @property
    def mean(self) -> float:
        return self.w_total / self.w_sum if self.w_sum > 0 else math.nan

    @property
    def binary(self) -> bool:
        return self.n > 0 and abs(self.w_total_sq - self.w_total) <= 1e-9 * max(self.w_sum, 1)

    @property
    def var(self) -> float:
        """Weighted variance with the ESS in place of n in the (n - 1) correction."""
        ess = self.ess
        if ess <= 1 or self.w_sum <= 0:
            return 0.0
        second = self.w_total_sq / self.w_sum - self.mean * self.mean
        return max(0.0, second * ess / (ess - 1))

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def pass_rate(self) -> float | None:
        if self.w_passes is None or self.w_sum <= 0:
            return None
        return self.w_passes / self.w_sum

    def mean_ci(self, confidence: float = 0.95) -> tuple[float, float]:
        ess = self.ess
        if ess < 2:
            return (0.0, 1.0)
        if self.binary:
            return wilson_ci(self.mean * ess, ess, confidence)
        half = t_quantile(0.5 + confidence / 2, ess - 1) * self.std / math.sqrt(ess)
        return (max(0.0, self.mean - half), min(1.0, self.mean + half))

    def pass_rate_ci(self, confidence: float = 0.95) -> tuple[float, float] | None:
        rate = self.pass_rate
        return None if rate is None else wilson_ci(rate * self.ess, self.ess, confidence)
