"""Anytime-valid one-sided confidence sequences for the mean of scores in [0, 1].

Why betting. A decision that users re-run as data arrives ("is the canary still no
worse?") needs a bound that holds at every sample size at once, not at one n chosen in
advance. For each candidate mean u a bettor stakes a fraction of its wealth on "the mean is
below u": on a score x its wealth is multiplied by 1 + c·(u − x)/(1 − u), which is ≥ 0 and
has expectation ≤ 1 whenever the true mean is ≥ u. A mixture over the fractions c (one
bettor per scale of gap, `BET_FRACTIONS`) is a nonnegative supermartingale under that null,
so by Ville's inequality its wealth ever reaches 1/α with probability ≤ α. The upper bound is
the smallest u whose wealth has reached 1/α: P(ever true mean > bound) ≤ α, at every n, under
optional stopping and continuation (Waudby-Smith & Ramdas 2024, "Estimating means of bounded
random variables by betting"; Howard et al. 2021 for the quadratic bound below).

Three ways to compute the wealth, all valid for the same guarantee:

* pass/fail scores with unit weights — exactly, from the counts (n, passes);
* raw scores (continuous, or Horvitz–Thompson weighted) — exactly, from the scores;
* sums only (SQL aggregates) — from five sums, through
  Fan's inequality log(1 + z) ≥ c·z/c + ψ(c)·z²/... (per bettor: log(1 + c·z) ≥ c·z +
  (log(1 − c) + c)·z² for z ≥ −1), a lower bound of the exact wealth. Because the exact
  wealth grows with u, every u where the lower bound has reached 1/α is a valid bound; the
  bisection keeps that invariant, so the result is valid however loose.

Weights. A record kept with inclusion probability p stands for 1/p traces. Its bet is scaled by
a = (1/p)/W, W = 1/p_floor fixed in advance (the smallest probability the sampler can draw):
over the draw the scaled bet has the expectation of an unweighted bet on *every* trace, so the
bound is for the mean of all traces, not of the sampled ones. W must not depend on the data
(the largest weight seen so far is not predictable); an inclusion probability below the floor
is counted at the floor and reported.

Assumptions: scores of one stream are independent draws with a common mean (or, more
generally, each score's conditional mean given the past is the stream's mean); inclusion
draws are independent of the score given the past.

    >>> round(float(upper_bound(MeanSample.from_counts(passes=9, n=10), 0.05)), 3)
    0.999
    >>> s = MeanSample.from_counts(passes=970, n=1000)
    >>> 0.94 < float(lower_bound(s, 0.05)) < 0.97 < float(upper_bound(s, 0.05)) < 0.99
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
# One bettor per scale of gap, from "almost every score is on the wrong side" down to gaps
# of a few thousandths; a uniform mixture costs log(len) in the threshold.
BET_FRACTIONS: tuple[float, ...] = tuple(0.95 * 2.0**-k for k in range(12))
_C = np.array(BET_FRACTIONS)
_PSI = np.log1p(-_C) + _C  # Fan's inequality: log(1 + c z) >= c z + psi(c) z^2, z >= -1
_LOG_K = math.log(len(BET_FRACTIONS))
_ITERATIONS = 26  # bisection on [mean, 1]: the bound is within 1.5e-8 above the exact one


@dataclass(frozen=True)
class MeanSample:
    """What a bound needs of one stream, additive, scalar or numpy arrays (one per stream).

    `exact` samples carry counts (pass/fail scores, unit weights): `n`, `passes`.
    Otherwise the bet-scaled sums over kept records: a = Σa, ax = Σa·x, a2 = Σa², a2x = Σa²·x,
    a2x2 = Σa²·x² (a = weight / max_weight, 1 without weights).
    """

    n: Any
    passes: Any = 0.0
    a: Any = 0.0
    ax: Any = 0.0
    a2: Any = 0.0
    a2x: Any = 0.0
    a2x2: Any = 0.0
    exact: bool = True
    clamped: int = 0  # records whose probability was below the floor (counted at the floor)
    scores: Any = None  # raw scores (…, n): the exact wealth; the sums then go unused
    scales: Any = None  # their bet scales a, same shape (None: all 1)
    counts: Any = None  # how many records carry each (score, scale), same shape (None: 1 each)
    repeat: float = 1.0  # raw samples: the data counted this many times over (`scaled`)

    @classmethod
    def from_counts(cls, passes: Any, n: Any) -> MeanSample:
        return cls(n=np.asarray(n, float), passes=np.asarray(passes, float))

    @classmethod
    def from_moments(cls, n: Any, total: Any, total_sq: Any) -> MeanSample:
        """Unweighted sums (count, Σx, Σx²) as SQL aggregates give them."""
        n, t, q = (np.asarray(v, float) for v in (n, total, total_sq))
        return cls(n=n, a=n, ax=t, a2=n, a2x=t, a2x2=q, exact=False)

    @classmethod
    def from_scores(
        cls,
        scores: Sequence[float],
        probabilities: Sequence[float | None] | None = None,
        *,
        max_weight: float = 1.0,
    ) -> MeanSample:
        """From raw scores; with `probabilities` each record's bet is scaled by (1/p)/max_weight."""
        x = np.asarray(scores, float)
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ValueError("scores must lie in [0, 1]")
        if probabilities is None:
            binary = bool(np.all((x == 0.0) | (x == 1.0)))
            if binary:
                return cls.from_counts(passes=float(x.sum()), n=float(x.size))
            return cls(n=float(x.size), exact=False, scores=x)
        if len(probabilities) != x.size:
            raise ValueError("one inclusion probability per score")
        if max_weight < 1.0:
            raise ValueError("max_weight is 1/p_floor, at least 1")
        w = np.array([1.0 if p is None or p <= 0 else 1.0 / p for p in probabilities], float)
        clamped = int((w > max_weight * (1 + 1e-9)).sum())
        a = np.minimum(w, max_weight) / max_weight
        return cls(n=float(x.size), exact=False, clamped=clamped, scores=x, scales=a)

    def scaled(self, k: float) -> MeanSample:
        """The same sample k times over (the sums and counts times k): 'more of the same'."""
        return MeanSample(
            self.n * k,
            self.passes * k,
            self.a * k,
            self.ax * k,
            self.a2 * k,
            self.a2x * k,
            self.a2x2 * k,
            self.exact,
            self.clamped,
            self.scores,
            self.scales,
            self.counts,
            self.repeat * k,
        )

    def flipped(self) -> MeanSample:
        """The sample of 1 − x: a lower bound of the mean is 1 − the flipped upper bound."""
        if self.exact:
            return MeanSample(self.n, self.n - self.passes)
        if self.scores is not None:
            return MeanSample(
                self.n,
                exact=False,
                clamped=self.clamped,
                scores=1.0 - np.asarray(self.scores),
                scales=self.scales,
                counts=self.counts,
                repeat=self.repeat,
            )
        return MeanSample(
            self.n,
            0.0,
            self.a,
            self.a - self.ax,
            self.a2,
            self.a2 - self.a2x,
            self.a2 - 2 * self.a2x + self.a2x2,
            False,
            self.clamped,
        )


def log_wealth(sample: MeanSample, u: Any) -> Array:
    """log of the mixture wealth against "the mean is ≥ u" (shape of `u` × streams)."""
    u = np.minimum(np.asarray(u, float), 1.0 - 1e-15)[..., None]  # u = 1: the trivial bound
    odds = u / (1.0 - u)
    if sample.exact:
        n, k = np.asarray(sample.n, float)[..., None], np.asarray(sample.passes, float)[..., None]
        per_bet = k * np.log1p(-_C) + (n - k) * np.log1p(_C * odds)
    elif sample.scores is not None:  # exact: Σ log(1 + c·a·(u − x)/(1 − u)) over the scores
        x = np.asarray(sample.scores, float)[..., None]  # (…, n, 1)
        a = 1.0 if sample.scales is None else np.asarray(sample.scales, float)[..., None]
        y = (u[..., None] - x) / (1.0 - u[..., None])
        terms = np.log1p(_C * a * y)
        if sample.counts is not None:
            terms = terms * np.asarray(sample.counts, float)[..., None]
        per_bet = sample.repeat * terms.sum(axis=-2)
    else:
        a, ax = np.asarray(sample.a)[..., None], np.asarray(sample.ax)[..., None]
        a2, a2x = np.asarray(sample.a2)[..., None], np.asarray(sample.a2x)[..., None]
        a2x2 = np.asarray(sample.a2x2)[..., None]
        s1 = (u * a - ax) / (1.0 - u)
        s2 = (u * u * a2 - 2.0 * u * a2x + a2x2) / (1.0 - u) ** 2
        per_bet = _C * s1 + _PSI * s2
    top = per_bet.max(axis=-1, keepdims=True)
    mean = np.log(np.exp(per_bet - top).sum(axis=-1)) - _LOG_K
    out: Array = top[..., 0] + mean
    return out


def upper_bound(sample: MeanSample, alpha: Any) -> Array:
    """Upper end of the one-sided (1 − alpha) confidence sequence for the mean.

    Guarantee: P(the true mean exceeds this bound at any sample size) ≤ alpha (anytime-valid),
    under the module's assumptions. Vectorised: `sample` fields and `alpha` broadcast.
    """
    threshold = -np.log(np.asarray(alpha, float))
    start = _mean(sample)
    shape = np.broadcast(np.asarray(sample.n), threshold, start).shape
    # The sample mean is never rejected (by concavity the wealth there is ≤ 1 < 1/alpha), so
    # the search starts there; hi = 1 is the bound when nothing below it is rejected.
    lo = np.broadcast_to(start, shape).copy()
    hi = np.ones(shape)
    for _ in range(_ITERATIONS):
        mid = (lo + hi) / 2
        rejected = log_wealth(sample, mid) >= threshold
        hi = np.where(rejected, mid, hi)
        lo = np.where(rejected, lo, mid)
    return hi


def _mean(sample: MeanSample) -> Array:
    """The (bet-weighted) sample mean, 0 for an empty sample: where the search starts."""
    if sample.exact:
        n = np.asarray(sample.n, float)
        out: Array = np.asarray(sample.passes, float) / np.maximum(n, 1.0)
        return out
    if sample.scores is not None:
        x = np.asarray(sample.scores, float)
        a = (
            np.ones_like(x)
            if sample.scales is None
            else np.asarray(sample.scales, float) * np.ones_like(x)
        )
        if sample.counts is not None:
            a = a * np.asarray(sample.counts, float)
        total = a.sum(axis=-1)
        return np.where(total > 0, (a * x).sum(axis=-1) / np.maximum(total, 1e-300), 0.0)
    a = np.asarray(sample.a, float)
    return np.where(a > 0, np.asarray(sample.ax, float) / np.maximum(a, 1e-300), 0.0)


def smallest_level(decides: Callable[[float], bool], largest: float = 1.0) -> float:
    """The smallest level alpha ≤ `largest` at which `decides(alpha)` holds — the p-value of a
    decision made from these bounds (they widen as alpha shrinks, so `decides` is monotone);
    1.0 when it does not hold at `largest`, e^-40 at the smallest."""
    if not decides(largest):
        return 1.0
    lo, hi = -40.0, math.log(largest)  # log alpha
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if decides(math.exp(mid)) else (mid, hi)
    return math.exp(hi)


def lower_bound(sample: MeanSample, alpha: Any) -> Array:
    """Lower end: P(the true mean falls below it at any sample size) ≤ alpha."""
    return 1.0 - upper_bound(sample.flipped(), alpha)
