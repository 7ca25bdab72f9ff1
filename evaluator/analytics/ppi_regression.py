"""The regression e-process on prediction-powered pseudo-outcomes (issue 30), for a rubric
with a cheap stage, and the combined check that uses it by default (`combine`).

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

The combined check (`combined_sequential`, what a cascade rubric runs by default). The
pseudo-outcome bet alone is slow at small n: its range 1/π_floor is fixed in advance (19 at
audit_rate 0.1), so a new version's first burst (30-60 judged records, all failing) moves z
by 1/19 of what it moves y and did not alert within three checks. So two tests run side by
side on the same records, each at half the level (`arm_policy`):

* the judge-only arm (`judge_sequential`): the shipped bet (`regression.advance`) on the
  judged records' verdicts alone, Horvitz–Thompson weighted by 1/(p1·π) and scaled by a floor
  that adapts (`bet_floors`: 1 while every judge probability so far was 1, as in a cascade
  before its first certification; the audit rate after) — the shipped check's power on a
  new version's first burst, blind to the cheap score, so a drift of the cheap score alone
  (which moves π and the local passes' recorded scores) is not a drop;
* the PPI++ arm (`ppi_sequential`): the power of the cheap score on a long stream.

The check alerts when either crosses. Union bound: P(any false alert) ≤ alpha/2 + alpha/2 =
alpha per comparison from a known start, however often it is re-run (each arm is
anytime-valid at alpha/2 for the top judge's mean). For the detector (unknown change time)
each arm runs at 2·arl: an alarm of either means the mean of the two arms' Shiryaev–Roberts
statistics (each ≥ its CUSUM) reached arl, and that mean is itself an e-detector, so ≥ arl
evaluations per false alarm on average. The alert names the arm that fired (`combine`:
`estimator`, and each arm's e-value and level in `arms`). Checked by
`tests/statistics/test_combined_alert_calibration.py` (small n, re-runs, weights, useless /
anti-correlated / drifting cheap score) and the first-burst scenario.

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
from evalcore.weights import WeightedStats
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
JUDGE_ONLY = "hajek"  # the judge-only arm: Horvitz–Thompson bets, Hájek means in reports
DESIGN = "either of two e-processes at alpha/2 (union bound)"


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


def arm_policy(policy: RegressionPolicy) -> RegressionPolicy:
    """One arm's share of the combined check: half the level from a known start, twice the
    average run length for the detector (module docstring: the two together keep alpha and
    arl)."""
    return replace(policy, alpha=policy.alpha / 2, arl=policy.arl * 2)


@dataclass(frozen=True)
class Arm:
    """One arm's outcome: which estimator, whether it alarmed, its verdict (in the judge's
    units) and what it says about itself (`describe_estimator`, or why it did not run)."""

    estimator: str
    alarm: bool
    verdict: Verdict | None
    detail: dict[str, Any]


def combine(judge: Arm, ppi: Arm) -> tuple[bool, Verdict, dict[str, Any]]:
    """The combined check's outcome: (alarm, the verdict shown, the estimator document).

    Alarm when either arm alarmed, each having run at `arm_policy` (guarantee in the module
    docstring). The verdict shown is the arm's that alarmed — the stronger one (smaller
    p-value) when both did — else the judge-only one; `estimator` names it, `arms` gives both
    arms' alarm, e-value and p-value."""
    assert judge.verdict is not None
    fired = [a for a in (judge, ppi) if a.alarm and a.verdict is not None]
    shown = min(fired, key=lambda a: a.verdict.p_value if a.verdict else 1.0) if fired else judge
    assert shown.verdict is not None
    arms = {}
    for a in (judge, ppi):
        doc: dict[str, Any] = {"alarm": a.alarm, **a.detail}
        if a.verdict is not None:
            doc |= {"e_value": a.verdict.e_value, "p_value": a.verdict.p_value}
            doc["alpha"] = a.verdict.alpha
        arms[a.estimator] = doc
    named = {"estimator": shown.estimator, "design": DESIGN, "arms": arms}
    return bool(fired), shown.verdict, named


def bet_floors(p2: Any, pi_floor: float) -> Array:
    """Each record's judge-probability floor for the judge-only arm's bet scale, fixed before
    its draw: 1 until a judge probability below 1 has appeared among the earlier records (a
    cascade judges every sampled trace until its first certification), then `pi_floor`."""
    low = np.asarray(p2, float) < 1.0 - 1e-12
    seen: Array = np.cumsum(low, axis=-1) - low  # low probabilities among earlier records
    out: Array = np.where(seen > 0, pi_floor, 1.0)
    return out


def judge_sequential(
    baseline: Stream,
    stream: Stream,
    policy: RegressionPolicy,
    *,
    known_start: bool,
    pi_floor: float,
    max_weight: float = 1.0,
    n_groups: int = 1,
    pass_threshold: float | None = None,
) -> SequentialState:
    """The judge-only arm: `regression.start_sequential` / `advance` on the judged records'
    verdicts, each weighted by 1/(p1·π) (the reference: the baseline's judged Hájek mean's
    lower bound, ⌊ESS⌋ for n). Each bet is Horvitz–Thompson scaled by W_i = max_weight/φ_i,
    φ_i the floor that adapts (`bet_floors`, over the baseline's records then the stream's):
    W_i is fixed before record i's draw and depends on no record's verdict, so the bet is
    unbiased for every trace's verdict — while nothing is drawn below 1 it is the shipped
    check on the judged scores, at full power (the first burst of a new version). The one
    record whose probability first falls below 1 is bet at scale 1 (`clamped`): its π (a
    function of its cheap score) is not known before it, so that one bet under-counts the
    certified region's passes and its expected e-value can exceed 1 under the null (exactly
    1.11-1.19 in tests/statistics/test_judge_arm_switch.py; ≤ 1 + 0.9·(1 − pi_floor) for
    the largest bet). π below `pi_floor` is counted at the floor, also in `clamped`.
    Guarantee as `regression.start_sequential`, for the top judge's mean of all traces, up
    to that one step (the arm's e-process half of its level times ≤ 1.9 in the worst case)."""
    both = [
        np.concatenate([np.asarray(getattr(s, k), float) for s in (baseline, stream)])
        for k in ("y", "judged", "p2")
    ]
    y, xi, p2 = both[0], both[1].astype(bool), both[2]
    p1 = np.concatenate(
        [np.ones(len(s)) if s.p1 is None else np.asarray(s.p1, float) for s in (baseline, stream)]
    )
    w = 1.0 / (p1 * np.maximum(p2, pi_floor))
    raw = w * bet_floors(p2, pi_floor) / max(1.0, max_weight)
    scale = np.minimum(raw, 1.0)
    k = len(baseline)
    # Only the stream's records bet; π below the floor is bet at the floor (weight 1/floor).
    low = (raw[k:] > 1 + 1e-9) | (p2[k:] < pi_floor * (1 - 1e-9))
    clamped = int((xi[k:] & low).sum())
    yb, pb = y[:k][xi[:k]].tolist(), (1.0 / w[:k])[xi[:k]].tolist()
    ref = WeightedStats.from_scores(zip(yb, pb, strict=True), pass_threshold)
    state = start_sequential(
        ref.effective(GroupStats.from_scores(yb, pass_threshold)),
        policy,
        known_start=known_start,
        n_groups=n_groups,
        pass_threshold=pass_threshold,
        max_weight=max_weight,
    )
    cur = xi[k:]
    state = advance(
        state,
        y[k:][cur].tolist(),
        policy,
        (1.0 / w[k:])[cur].tolist(),
        scale[k:][cur].tolist(),
    )
    return replace(state, clamped=clamped)


def combined_sequential(
    baseline: Stream,
    stream: Stream,
    policy: RegressionPolicy,
    *,
    known_start: bool,
    pi_floor: float,
    max_weight: float = 1.0,
    n_groups: int = 1,
    pass_threshold: float | None = None,
) -> tuple[bool, Verdict, dict[str, Any]]:
    """The combined check of `stream` against `baseline` (module docstring: either arm at
    `arm_policy`, P(false alert) ≤ policy.alpha / n_groups from a known start, ≥ policy.arl
    evaluations per false alarm as a detector): (alarm, the verdict shown, what produced it).
    The PPI++ arm runs only with ≥ min_samples records on each side (below, it cannot have
    alarmed anyway: its segment needs that many)."""
    p = arm_policy(policy)
    kw: dict[str, Any] = {"known_start": known_start, "pi_floor": pi_floor}
    kw |= {"max_weight": max_weight, "n_groups": n_groups}
    state = judge_sequential(baseline, stream, p, pass_threshold=pass_threshold, **kw)
    judge = Arm(JUDGE_ONLY, state.alarm_at is not None, sequential_verdict(state, p), {})
    if state.clamped:
        judge.detail["clamped"] = state.clamped
    if min(len(baseline), len(stream)) < p.min_samples:
        why = f"fewer than {p.min_samples} first-stage records on a side"
        return combine(judge, Arm(ESTIMATOR, False, None, {"skipped": why}))
    pstate, unit, scale = ppi_sequential(baseline, stream, p, **kw)
    named = describe_estimator(scale, pi_floor, pstate.clamped)
    named.pop("estimator")
    ppi = Arm(ESTIMATOR, pstate.alarm_at is not None, ppi_verdict(pstate, unit, scale), named)
    return combine(judge, ppi)
