"""The deployment gate: is a candidate prompt version worse than its baseline?

Three answers, each with its error rate stated:

* **no worse** — the drop (baseline mean − candidate mean) has an upper confidence bound
  below `margin`. Wrong "no worse" (the true drop is ≥ margin): probability ≤ alpha.
* **worse** — the drop's lower confidence bound is above 0 and the observed drop reaches
  the policy's effect-size bound. Wrong "worse" (no true drop): probability ≤ alpha.
* **undecided** — neither yet (or fewer than `min_samples` scores on a side); the result says
  how many scores each side would need at the observed rates.

Guarantees, by mode:

* `gate` (two live streams) is **anytime-valid with both streams growing**: the bounds come
  from one-sided confidence sequences of each version's mean (evalcore.sequences) at alpha/2
  each, so the baseline's uncertainty counts and re-running the gate as scores arrive keeps
  each wrong-decision probability ≤ alpha over the whole sequence of runs — when every run
  reads the same streams grown, i.e. a window with a fixed start (`--since` an ISO time, the
  rollout). A rolling window (`--since 24h` re-run hourly) drops old scores: each run is then
  valid alone, the runs together are not. Assumes each version's scores are independent draws with a
  common mean over the window (no trend inside it), and, with inclusion probabilities, that
  none is below the budget's floor `min_probability` (a lower one is counted at the floor and
  reported as `clamped`).
* `paired_gate` (a replay: the same items under both versions) bounds the mean per-item
  difference with the same confidence sequence applied to (1 + candidate − baseline) / 2, so it
  is valid at any n (fixed-n, and anytime as well; conservative, not exact): no zero-width
  bound from zero variance.
  Assumes the items are independent draws from the traffic the dataset stands for.

* `cascade_gate` (a rubric with a cheap stage: a cascade with an audit rate) decides on two
  tests of the same drop at alpha/2 each (`Combined`): the judge-only one — the judged
  records' verdicts, Horvitz–Thompson scaled by a judge-probability floor that adapts (1
  while every record was judged at probability 1, the audit rate after), for the top
  judge's mean — and the PPI++ one, on each version's
  prediction-powered pseudo-outcomes (`ppi_regression.predictable_pseudo_outcomes`, λ fitted
  on the version's earlier records only, mapped onto [0, 1] by the range 1/π_floor fixed in
  advance). The drop's bounds are the intersection of the two arms' (max of the lower
  bounds, min of the upper ones): by a union bound each wrong decision still has
  probability ≤ alpha, anytime-valid as `gate`. The result names the arm(s) that decided
  (`estimator`, `arms`). Assumes, beside `gate`'s, that the judge draw is independent of the
  verdict given the cheap score, with the recorded π ≥ π_floor (a lower one is counted at
  the floor, `clamped`); first-stage inclusion probabilities are not weighted (as `gate`
  reads records as sampled).

Pure: it takes scores in time order and returns a `GateResult`.

    >>> policy = RegressionPolicy(min_samples=10)
    >>> gate([1.0] * 200, [1.0] * 120 + [0.0] * 80, policy, margin=0.05).decision
    'worse'
    >>> gate([1.0] * 10, [1.0] * 10, policy, margin=0.05).decision  # 10/10 is not proof
    'undecided'
    >>> gate([1.0] * 2000, [1.0] * 2000, policy, margin=0.05).decision
    'no_worse'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from evalcore.intervals import GroupStats
from evalcore.sequences import Array, MeanSample, lower_bound, smallest_level, upper_bound
from evalcore.weights import WeightedStats
from evaluator.analytics.ppi_regression import (
    ESTIMATOR,
    JUDGE_ONLY,
    PseudoScale,
    Stream,
    bet_floors,
    predictable_pseudo_outcomes,
)
from evaluator.config.policy import RegressionPolicy
from evaluator.errors import EXIT_NO_WORSE, EXIT_UNDECIDED, EXIT_WORSE

Decision = Literal["worse", "no_worse", "undecided"]
EXIT: dict[Decision, int] = {
    "no_worse": int(EXIT_NO_WORSE),
    "worse": int(EXIT_WORSE),
    "undecided": int(EXIT_UNDECIDED),
}
Guarantee = Literal["anytime", "fixed-n"]
_MAX_SCALE = 10_000.0  # "needed" is reported only up to this many times the data seen


@dataclass(frozen=True)
class Sides:
    """The two samples a gate compares and how their drop is bounded."""

    baseline: MeanSample
    candidate: MeanSample
    paired: bool  # True: `candidate` holds (1 + c − b) / 2 per item; `baseline` is unused

    def drop_bounds(self, alpha: float) -> tuple[Array, Array]:
        """(lower, upper) bounds of the drop, each wrong with probability ≤ alpha; arrays
        when the samples hold many streams (the calibration suite decides 10⁴ at once)."""
        if self.paired:  # drop = 1 − 2·mean of the paired sample
            lo = 1.0 - 2.0 * upper_bound(self.candidate, alpha)
            hi = 1.0 - 2.0 * lower_bound(self.candidate, alpha)
            return lo, hi
        half = alpha / 2  # one confidence sequence per stream: a union bound
        lo = lower_bound(self.baseline, half) - upper_bound(self.candidate, half)
        hi = upper_bound(self.baseline, half) - lower_bound(self.candidate, half)
        return lo, hi

    def scaled(self, k: float) -> Sides:
        return Sides(self.baseline.scaled(k), self.candidate.scaled(k), self.paired)


class Bounds(Protocol):
    """What the gate's rule needs of its samples: the drop's bounds, and 'more of the same'."""

    def drop_bounds(self, alpha: float) -> tuple[Array, Array]: ...

    def scaled(self, k: float) -> Bounds: ...


@dataclass(frozen=True)
class Combined:
    """Two tests of one drop, each at alpha/2: the judge-only samples and the PPI++ ones (on
    [0, 1]; `width` maps their drop back to the judge's units, the offset cancels)."""

    judge: Sides
    ppi: Sides
    width: float

    def arm_bounds(self, alpha: float) -> dict[str, tuple[Array, Array]]:
        """Each arm's (lower, upper) bounds of the drop at alpha/2."""
        lo, hi = self.ppi.drop_bounds(alpha / 2)
        return {
            JUDGE_ONLY: self.judge.drop_bounds(alpha / 2),
            ESTIMATOR: (lo * self.width, hi * self.width),
        }

    def drop_bounds(self, alpha: float) -> tuple[Array, Array]:
        """The intersection of the arms' bounds: each side wrong with probability ≤ alpha."""
        (lj, hj), (lp, hp) = self.arm_bounds(alpha).values()
        return np.maximum(lj, lp), np.minimum(hj, hp)

    def scaled(self, k: float) -> Combined:
        return Combined(self.judge.scaled(k), self.ppi.scaled(k), self.width)


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    baseline: GroupStats
    candidate: GroupStats
    drop: float  # baseline mean − candidate mean (positive = candidate worse)
    drop_lower: float  # (1 − alpha) lower confidence bound of the drop
    drop_upper: float  # (1 − alpha) upper confidence bound of the drop
    margin: float
    alpha: float
    guarantee: Guarantee
    test: str
    reason: str
    p_no_worse: float  # smallest alpha at which "no worse" would be decided now
    p_worse: float  # smallest alpha at which "worse" would be decided now (effect aside)
    needed: dict[str, int] | None  # undecided: total scores per side at the observed rates
    clamped: int = 0  # records whose inclusion probability was below the floor
    # A cheap stage (`cascade_gate`): the arm(s) whose bound decided ("hajek", "ppi++" or
    # both, joined by "+"; None when undecided), and each arm's bounds at alpha/2.
    estimator: str | None = None
    arms: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT[self.decision]

    @property
    def p_value(self) -> float:
        """The p-value of the test that decided (for "undecided", the nearer of the two)."""
        if self.decision == "worse":
            return self.p_worse
        if self.decision == "no_worse":
            return self.p_no_worse
        return min(self.p_worse, self.p_no_worse)

    def to_dict(self, confidence: float = 0.95) -> dict[str, Any]:
        statistic = "drop_lower_bound" if self.decision == "worse" else "drop_upper_bound"
        return {
            "decision": self.decision,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "guarantee": self.guarantee,
            "baseline": self.baseline.summary(confidence),
            "candidate": self.candidate.summary(confidence),
            "drop": self.drop,
            "drop_lower_bound": self.drop_lower,
            "drop_upper_bound": self.drop_upper,
            "drop_bound_level": 1 - self.alpha,
            "margin": self.margin,
            "decided_by": {
                "statistic": statistic,
                "value": self.drop_lower if statistic == "drop_lower_bound" else self.drop_upper,
                "threshold": 0.0 if statistic == "drop_lower_bound" else self.margin,
            },
            "p_value": self.p_value,
            "p_worse": self.p_worse,
            "p_no_worse": self.p_no_worse,
            "alpha": self.alpha,
            "test": self.test,
            "scores_needed": self.needed,
            "probabilities_below_floor": self.clamped,
            **({} if self.arms is None else {"estimator": self.estimator, "arms": self.arms}),
        }


def gate(
    baseline_scores: Sequence[float],
    candidate_scores: Sequence[float],
    policy: RegressionPolicy,
    *,
    margin: float,
    pass_threshold: float | None = None,
    baseline_probabilities: Sequence[float | None] | None = None,
    candidate_probabilities: Sequence[float | None] | None = None,
    min_probability: float = 1.0,
) -> GateResult:
    """Decide on two independent score streams (a live canary: same window, both versions).

    Anytime-valid with both streams growing: P(wrong "no worse") ≤ alpha and P(wrong
    "worse") ≤ alpha however often it is re-run (see the module docstring for assumptions).
    With inclusion probabilities (a judge budget), bets are Horvitz–Thompson scaled by
    `min_probability`, the sampler's floor, known in advance.
    """
    weighted = baseline_probabilities is not None or candidate_probabilities is not None
    max_weight = 1.0 / min_probability if weighted else 1.0
    b = MeanSample.from_scores(baseline_scores, baseline_probabilities, max_weight=max_weight)
    c = MeanSample.from_scores(candidate_scores, candidate_probabilities, max_weight=max_weight)
    return decide(
        Sides(b, c, paired=False),
        GroupStats.from_scores(baseline_scores, pass_threshold),
        GroupStats.from_scores(candidate_scores, pass_threshold),
        policy,
        margin=margin,
        guarantee="anytime",
        test="betting-cs-union",
        clamped=b.clamped + c.clamped,
    )


def paired_gate(
    pairs: Sequence[tuple[float, float]], policy: RegressionPolicy, *, margin: float
) -> GateResult:
    """Decide on paired scores (baseline, candidate) of the same items (a replay).

    Valid at every n (conservative): P(wrong "no worse") ≤ alpha and P(wrong "worse") ≤
    alpha, for binary and continuous scores (the per-item difference lies in [−1, 1]).
    """
    for b, c in pairs:
        if not (0.0 <= b <= 1.0 and 0.0 <= c <= 1.0):
            raise ValueError(f"scores must lie in [0, 1], got {(b, c)}")
    shifted = [(1.0 + c - b) / 2.0 for b, c in pairs]
    sample = MeanSample.from_scores(shifted)
    return decide(
        Sides(MeanSample.from_counts(0, 0), sample, paired=True),
        GroupStats.from_scores([b for b, _ in pairs]),
        GroupStats.from_scores([c for _, c in pairs]),
        policy,
        margin=margin,
        guarantee="fixed-n",
        test="paired-betting-cs",
    )


def cascade_gate(
    baseline: Stream,
    candidate: Stream,
    policy: RegressionPolicy,
    *,
    margin: float,
    pi_floor: float,
    pass_threshold: float | None = None,
) -> GateResult:
    """Decide on two versions' first-stage records of a rubric with a cheap stage: the
    judge-only and the PPI++ test at alpha/2 each (module docstring). Anytime-valid with both
    streams growing: P(wrong "no worse") ≤ alpha and P(wrong "worse") ≤ alpha. The sides'
    statistics shown are the judged records' Hájek ones (⌊ESS⌋ for n)."""
    sides, clamped = cascade_sides(baseline, candidate, pi_floor)
    stats = []
    for s in (baseline, candidate):
        xi = np.asarray(s.judged, bool)
        y = np.asarray(s.y, float)[xi].tolist()
        p = np.maximum(np.asarray(s.p2, float), pi_floor)[xi].tolist()
        w = WeightedStats.from_scores(zip(y, p, strict=True), pass_threshold)
        stats.append(w.effective(GroupStats.from_scores(y, pass_threshold)))
    return decide(
        sides,
        stats[0],
        stats[1],
        policy,
        margin=margin,
        guarantee="anytime",
        test="betting-cs-union+ppi++",
        clamped=clamped,
    )


def cascade_sides(baseline: Stream, candidate: Stream, pi_floor: float) -> tuple[Combined, int]:
    """The two arms' samples of a `cascade_gate`, and how many judge probabilities were below
    the floor. Vectorised: the streams' fields may carry leading axes (many streams at once,
    as the calibration suite decides them), records on the last.

    Judge-only: every first-stage record bets with scale ξ·φ/π on its verdict (an unjudged
    one bets 0), the Horvitz–Thompson form of a bet on every trace's verdict, φ the floor
    that adapts (`ppi_regression.bet_floors`: 1 until the version's first judge probability
    below 1, which is counted at 1 in `clamped` — not a Horvitz–Thompson bet, see
    `ppi_regression.judge_sequential` — then π_floor; π below it is also in `clamped`). PPI++:
    each version's pseudo-outcomes, λ fitted on that version's earlier records, on [0, 1]."""
    scale = PseudoScale.for_floor(pi_floor)
    judge, ppi, clamped = [], [], 0
    for s in (baseline, candidate):
        xi = np.asarray(s.judged, bool)
        p2 = np.asarray(s.p2, float)
        raw = bet_floors(p2, pi_floor) / np.maximum(p2, pi_floor)
        clamped += int((xi & ((raw > 1 + 1e-9) | (p2 < pi_floor * (1 - 1e-9)))).sum())
        p2 = np.maximum(p2, pi_floor)
        y = np.where(xi, np.nan_to_num(np.asarray(s.y, float)), 0.0)
        n = float(xi.shape[-1])
        a = np.where(xi, np.minimum(raw, 1.0), 0.0)
        judge.append(MeanSample(n, exact=False, scores=y, scales=a))
        phi = predictable_pseudo_outcomes(y, xi, np.clip(s.f, 0.0, 1.0), p2)
        ppi.append(MeanSample(n, exact=False, scores=scale.to_unit(phi)))
    sides = Combined(Sides(judge[0], judge[1], False), Sides(ppi[0], ppi[1], False), scale.width)
    return sides, clamped


def decide(
    sides: Bounds,
    base: GroupStats,
    cand: GroupStats,
    policy: RegressionPolicy,
    *,
    margin: float,
    guarantee: Guarantee,
    test: str,
    clamped: int = 0,
) -> GateResult:
    """The gate's rule on bounded samples: see the module docstring for what it guarantees."""
    alpha = policy.alpha
    lo_a, hi_a = sides.drop_bounds(alpha)
    lo, hi = float(lo_a), float(hi_a)
    drop = base.mean - cand.mean if base.n and cand.n else 0.0
    code = int(decision_codes(sides, base.n, cand.n, drop, policy, margin))
    p_worse = smallest_level(largest=0.5, decides=lambda a: float(sides.drop_bounds(a)[0]) > 0.0)
    p_no_worse = smallest_level(
        largest=0.5, decides=lambda a: float(sides.drop_bounds(a)[1]) < margin
    )
    needed: dict[str, int] | None = None
    decision: Decision = next(d for d, c in EXIT.items() if c == code)
    if base.n < policy.min_samples or cand.n < policy.min_samples:
        reason = (
            f"{base.n} baseline and {cand.n} candidate scores; "
            f"at least {policy.min_samples} each are needed"
        )
    elif decision == "worse":
        reason = (
            f"the candidate scores lower: the drop's {1 - alpha:.0%} lower bound "
            f"{lo:.3f} > 0 (drop {drop:.3f})"
        )
    elif decision == "no_worse":
        reason = f"the drop's {1 - alpha:.0%} upper bound {hi:.3f} < margin {margin}"
    else:
        reason = (
            f"the drop's {1 - alpha:.0%} bounds [{lo:.3f}, {hi:.3f}] decide neither "
            f"'worse' (lower > 0 and drop ≥ {policy.min_effect_mean}) nor 'no worse' "
            f"(upper < {margin})"
        )
    if decision == "undecided":
        needed = _needed(sides, base.n, cand.n, drop, policy, margin)
        if needed is not None:
            reason += (
                f"; at the observed rates about {needed['baseline']} baseline and "
                f"{needed['candidate']} candidate scores would decide"
            )
    estimator, arms = _arms(sides, decision, alpha, margin)
    if estimator is not None:
        reason += f" (decided by the {estimator} test at alpha/2)"
    return GateResult(
        decision,
        base,
        cand,
        drop,
        lo,
        hi,
        margin,
        alpha,
        guarantee,
        test,
        reason,
        p_no_worse,
        p_worse,
        needed,
        clamped,
        estimator,
        arms,
    )


def _arms(
    sides: Bounds, decision: Decision, alpha: float, margin: float
) -> tuple[str | None, dict[str, Any] | None]:
    """For a `Combined` gate: which arm's bound decided, and each arm's bounds."""
    if not isinstance(sides, Combined):
        return None, None
    bounds = {k: (float(lo), float(hi)) for k, (lo, hi) in sides.arm_bounds(alpha).items()}
    arms = {
        k: {"drop_lower_bound": lo, "drop_upper_bound": hi, "alpha": alpha / 2}
        for k, (lo, hi) in bounds.items()
    }
    won = {
        "worse": [k for k, (lo, _) in bounds.items() if lo > 0.0],
        "no_worse": [k for k, (_, hi) in bounds.items() if hi < margin],
        "undecided": [],
    }[decision]
    return ("+".join(won) or None), arms


def decision_codes(
    sides: Bounds, n_base: Any, n_cand: Any, drop: Any, policy: RegressionPolicy, margin: float
) -> Array:
    """The gate's rule as exit codes (0 no worse, 1 worse, 6 undecided), vectorised over
    streams: worse needs the drop's lower bound above 0 and the observed drop at least
    `min_effect_mean`; no worse needs its upper bound below `margin`; both need
    `min_samples` scores per side. Each wrong decision has probability ≤ policy.alpha."""
    lo, hi = sides.drop_bounds(policy.alpha)
    enough = (np.asarray(n_base) >= policy.min_samples) & (np.asarray(n_cand) >= policy.min_samples)
    worse = enough & (lo > 0.0) & (np.asarray(drop) >= policy.min_effect_mean)
    no_worse = enough & ~worse & (hi < margin)
    out: Array = np.where(
        worse, EXIT["worse"], np.where(no_worse, EXIT["no_worse"], EXIT["undecided"])
    )
    return out


def _needed(
    sides: Bounds, n_base: int, n_cand: int, drop: float, policy: RegressionPolicy, margin: float
) -> dict[str, int] | None:
    """Scores per side (in total) at which either decision would be reached if the observed
    means and spreads held: 'more of the same' (the samples scaled; the observed drop stays,
    so "worse" also needs it to reach `min_effect_mean`), at least `min_samples`; None if
    never."""
    if min(n_base, n_cand) == 0:
        return None
    effect = drop >= policy.min_effect_mean

    def decided(k: float) -> bool:
        lo, hi = sides.scaled(k).drop_bounds(policy.alpha)
        return (bool(lo > 0.0) and effect) or bool(hi < margin)

    if not decided(_MAX_SCALE):
        return None
    lo, hi = 1.0, _MAX_SCALE
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    floor = policy.min_samples
    return {
        "baseline": max(floor, math.ceil(n_base * hi)),
        "candidate": max(floor, math.ceil(n_cand * hi)),
    }
