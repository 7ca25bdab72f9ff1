"""The regression e-process on prediction-powered pseudo-outcomes (issue 30), for a rubric
with a cheap stage.

Why. A cascade rubric's judge sees only some traces (every one outside the certified-pass
region, an `audit_rate` draw inside it); the cheap score is on all of them. Betting on the
judged scores alone (Horvitz–Thompson, `regression.advance`) ignores the cheap score; betting
on each trace's pseudo-outcome

    φ_i = g_i + ξ_i·(y_i − g_i)/π_i,      g_i = clip(m + λ_i·(f_i − m_f), 0, 1)

uses it (`predictable_pseudo_outcomes`: `evalcore.ppi.pseudo_outcomes`' λ_i·f_i with an
intercept). m, m_f, λ_i are fitted on earlier records only (predictable) and π_i is the trace's
known judge probability, so E[φ_i | past] is the top judge's mean μ whatever f is — useless,
anti-correlated or drifting. With f, y, g ∈ [0, 1] and every π ≥ π_floor, φ lies in
[lo, hi] = [−(1/π_floor − 1), 1/π_floor] (`evalcore.ppi.pseudo_range`), bounds known before
the stream (the floor is the rubric's configured audit rate; the escalation region has
π = 1), so z = (φ − lo)/(hi − lo) ∈ [0, 1] has conditional mean (μ − lo)/(hi − lo): the same
device as the Horvitz–Thompson scale 1/floor. The shipped e-process and e-detector
(`regression.start_sequential` / `advance`) then run on z unchanged: the baseline's reference
is the anytime lower bound of its z mean, the effect-size bound is divided by hi − lo, and the
first stage's own inclusion probability p1 still scales each bet by (1/p1)/W. A judge
probability below the floor is counted at the floor (`clamped`), as `advance` does.

Guarantee (`ppi_sequential`): as `regression.start_sequential` — from a known start,
false-alert probability ≤ alpha / n_groups per comparison however often it is re-run; as a
detector, ≥ arl evaluations per false alert — for the top judge's mean of all traces.
Assumptions: the judge draw is independent of y given f and the past, with the recorded π
(the cascade's hash draw; sessions drawn together are treated as independent); each trace's
(f, y) has the stream's mean given the past; π ≥ π_floor. Checked by
`tests/statistics/test_ppi_alert_calibration.py`: 0 false alerts in 2,000 seeds in each of 8
null cells (useful, useless, anti-correlated, drifting cheap score; cascade-shaped and uniform
π; p1 < 1; alpha 0.01). Power: with a useful cheap score a 0.2 drop was caught in 33 of 60
seeds against 20 from the judged records alone; with a useless one 42 against 47 (the wider
range costs a little). With π_floor = 1 (everything judged) z = y: today's check exactly.

    >>> scale = PseudoScale.for_floor(0.25)
    >>> scale.lo, scale.width, scale.to_unit(np.array([scale.lo, 4.0])).tolist()
    (-3.0, 7.0, [0.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.intervals import GroupStats
from evalcore.ppi import MIN_JUDGED, pseudo_range
from evaluator.analytics.regression import (
    SequentialState,
    Verdict,
    advance,
    sequential_verdict,
    start_sequential,
)
from evaluator.config.policy import RegressionPolicy

Array = npt.NDArray[np.float64]
ESTIMATOR = "ppi++"  # what an alert built from these pseudo-outcomes names as its estimator


@dataclass(frozen=True)
class PseudoScale:
    """The affine map of pseudo-outcomes onto [0, 1], fixed by the judge-probability floor."""

    lo: float
    width: float

    @classmethod
    def for_floor(cls, pi_floor: float) -> PseudoScale:
        if not 0 < pi_floor <= 1:
            raise ValueError(f"the judge-probability floor must lie in (0, 1], got {pi_floor}")
        lo, hi = pseudo_range(pi_floor)
        return cls(lo, hi - lo)

    def to_unit(self, phi: Array) -> Array:
        # The clip only absorbs rounding: φ lies in [lo, hi] by construction.
        out: Array = np.clip((np.asarray(phi, float) - self.lo) / self.width, 0.0, 1.0)
        return out

    def stats_from_unit(self, s: GroupStats) -> GroupStats:
        """A GroupStats of z back in the judge's units (φ = lo + width·z), for reports."""
        lo, w = self.lo, self.width
        total = s.n * lo + w * s.total
        return GroupStats(s.n, total, s.n * lo * lo + 2 * lo * w * s.total + w * w * s.total_sq)


@dataclass(frozen=True)
class Stream:
    """One stream's first stage in arrival order: cheap score f, judge score y (read where
    `judged`), judge probability p2|1, first-stage inclusion probability p1 (None: 1)."""

    f: Array
    y: Array
    judged: npt.NDArray[np.bool_]
    p2: Array
    p1: Array | None = None

    def __len__(self) -> int:
        return int(np.asarray(self.f).size)


def predictable_pseudo_outcomes(
    y: Any, judged: Any, f: Any, p2: Any, *, warmup: int = MIN_JUDGED
) -> Array:
    """φ_i = g_i + ξ_i·(y_i − g_i)/π_i in arrival order, g_i = clip(m + λ·(f_i − m_f), 0, 1):
    the weighted (1/π) regression of y on f over the judged records *before* i (m, m_f their
    means, λ the slope; λ = 0 until `warmup` of them, m = 1/2 before any). g_i is fixed
    before trace i's judge draw and lies in [0, 1], so E[φ_i | past] = μ and φ_i lies in
    `pseudo_range` like `evalcore.ppi.pseudo_outcomes`' λ·f (the case m = m_f = 0); the
    intercept makes a useless cheap score cost what the Hájek mean costs, not the
    Horvitz–Thompson one (φ = ξ·y/π, whose variance grows with μ²)."""
    xi = np.asarray(judged, bool)
    f = np.asarray(f, float)
    y = np.where(xi, np.nan_to_num(np.asarray(y, float)), 0.0)
    w = np.where(xi, 1.0 / np.where(xi, np.asarray(p2, float), 1.0), 0.0)

    def before(x: Array) -> Array:  # sums over earlier records only
        c = np.cumsum(x, -1)
        return c - x

    n, sw = before(xi.astype(float)), before(w)
    safe = np.where(sw > 0, sw, 1.0)
    mf, my = before(w * f) / safe, np.where(sw > 0, before(w * y) / safe, 0.5)
    var = before(w * f * f) / safe - mf * mf
    cov = before(w * f * y) / safe - mf * my
    ok = (n >= warmup) & (var > 1e-12)
    lam = np.where(ok, cov / np.where(ok, var, 1.0), 0.0)
    g = np.clip(my + lam * (f - mf), 0.0, 1.0)
    out: Array = g + w * (y - g)
    return out


def unit_scores(
    baseline: Stream, stream: Stream, pi_floor: float, warmup: int = MIN_JUDGED
) -> tuple[Array, Array, int]:
    """z of the baseline and of the stream, λ fitted on every earlier record (the baseline's
    first, then the stream's own), and how many judge probabilities were below the floor."""
    both = [
        np.concatenate([np.asarray(getattr(s, k)) for s in (baseline, stream)])
        for k in ("y", "judged", "f", "p2")
    ]
    y, judged, f, p2 = both
    judged, f = judged.astype(bool), np.clip(f, 0.0, 1.0)
    clamped = int((judged & (p2 < pi_floor * (1 - 1e-9))).sum())
    phi = predictable_pseudo_outcomes(y, judged, f, np.maximum(p2, pi_floor), warmup=warmup)
    z = PseudoScale.for_floor(pi_floor).to_unit(phi)
    return z[: len(baseline)], z[len(baseline) :], clamped


def ppi_sequential(
    baseline: Stream,
    stream: Stream,
    policy: RegressionPolicy,
    *,
    known_start: bool,
    pi_floor: float,
    max_weight: float = 1.0,
    n_groups: int = 1,
) -> tuple[SequentialState, RegressionPolicy, PseudoScale]:
    """The shipped sequential check folded over the stream's pseudo-outcomes on [0, 1]
    (guarantee in the module docstring). Returns the state, the policy in z units (its
    effect-size bound divided by the scale's width: use it for `ppi_verdict`) and the scale."""
    scale = PseudoScale.for_floor(pi_floor)
    zb, zs, clamped = unit_scores(baseline, stream, pi_floor)
    p = replace(policy, min_effect_mean=policy.min_effect_mean / scale.width)
    base = GroupStats.from_scores(zb.tolist())
    cut = 0.5 if base.binary else None  # z is 0/1 only when everything is judged (z = y)
    state = start_sequential(
        base,
        p,
        known_start=known_start,
        n_groups=n_groups,
        pass_threshold=cut,
        max_weight=max_weight,
    )
    p1 = None if stream.p1 is None else np.asarray(stream.p1, float).tolist()
    state = advance(state, zs.tolist(), p, p1)
    return replace(state, clamped=state.clamped + clamped), p, scale


def ppi_verdict(
    state: SequentialState, unit_policy: RegressionPolicy, scale: PseudoScale
) -> Verdict:
    """`regression.sequential_verdict` with its means and drop back in the judge's units."""
    v = sequential_verdict(state, unit_policy)
    return replace(
        v,
        baseline=scale.stats_from_unit(v.baseline),
        current=scale.stats_from_unit(v.current),
        mean_drop=v.mean_drop * scale.width,
        pass_rate_drop=None,
    )


def describe_estimator(scale: PseudoScale, pi_floor: float, clamped: int) -> dict[str, Any]:
    """What an alert's summary says about where its numbers came from."""
    return {
        "estimator": ESTIMATOR,
        "pi_floor": pi_floor,
        "pseudo_range": [scale.lo, scale.lo + scale.width],
        "clamped": clamped,
    }
