"""The deployment gate: is a candidate prompt version worse than its baseline?

The same statistics as the regression check, asked once, for CI or a canary rollout:

* **worse** — the sequential e-process (from the candidate's first score, as the regression
  check's `version` kind) crosses 1/alpha with a drop past the effect-size bound;
* **no worse** — non-inferiority: the one-sided upper confidence bound of the drop
  (baseline mean − candidate mean, Welch) lies below `margin`. "Not enough evidence of a
  drop" is *not* read as "no worse": the bound must clear the margin;
* **not enough data** — fewer than `min_samples` scores on either side, or neither of the
  above yet.

Pure: it takes scores in time order and returns a `GateResult`; reading them is the
caller's job. Paired replays (the same items under both versions) use `paired_gate`.

    >>> policy = RegressionPolicy(min_samples=10)
    >>> gate([1.0] * 60, [1.0] * 40 + [0.0] * 20, policy, margin=0.05).decision
    'worse'
    >>> gate([1.0] * 60, [1.0] * 60, policy, margin=0.05).decision
    'no_worse'
    >>> gate([1.0] * 5, [1.0] * 5, policy, margin=0.05).decision
    'not_enough_data'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from evaluator.analytics.regression import advance, sequential_verdict, start_sequential
from evaluator.analytics.stats import GroupStats, t_quantile
from evaluator.config.policy import RegressionPolicy

Decision = Literal["worse", "no_worse", "not_enough_data"]
EXIT = {"no_worse": 0, "worse": 1, "not_enough_data": 3}


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    baseline: GroupStats
    candidate: GroupStats
    drop: float  # baseline mean - candidate mean (positive = candidate worse)
    drop_upper: float  # one-sided (1 - alpha) upper bound of the drop
    margin: float
    e_value: float
    p_value: float  # 1 / e-value: anytime-valid from the candidate's first score
    alpha: float
    test: str
    reason: str

    @property
    def exit_code(self) -> int:
        return EXIT[self.decision]

    def to_dict(self, confidence: float = 0.95) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "baseline": self.baseline.summary(confidence),
            "candidate": self.candidate.summary(confidence),
            "drop": self.drop,
            "drop_upper_bound": self.drop_upper,
            "drop_upper_bound_level": 1 - self.alpha,
            "margin": self.margin,
            "e_value": self.e_value,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "test": self.test,
        }


def drop_upper_bound(baseline: GroupStats, candidate: GroupStats, alpha: float) -> float:
    """One-sided (1 - alpha) upper bound of mean(baseline) - mean(candidate), Welch."""
    if baseline.n < 2 or candidate.n < 2:
        return math.inf
    vb, vc = baseline.var / baseline.n, candidate.var / candidate.n
    drop = baseline.mean - candidate.mean
    if vb + vc == 0.0:
        return drop
    den = vb * vb / (baseline.n - 1) + vc * vc / (candidate.n - 1)
    df = (vb + vc) ** 2 / den if den > 0 else float(baseline.n + candidate.n - 2)
    return drop + t_quantile(1 - alpha, df) * math.sqrt(vb + vc)


def gate(
    baseline_scores: Sequence[float],
    candidate_scores: Sequence[float],
    policy: RegressionPolicy,
    *,
    margin: float,
    pass_threshold: float | None = None,
) -> GateResult:
    """Decide on two independent score streams (a live canary: same window, both versions)."""
    base = GroupStats.from_scores(baseline_scores, pass_threshold)
    cand = GroupStats.from_scores(candidate_scores, pass_threshold)
    state = start_sequential(base, policy, known_start=True, pass_threshold=pass_threshold)
    verdict = sequential_verdict(advance(state, candidate_scores, policy), policy)
    upper = drop_upper_bound(base, cand, policy.alpha)
    return _decide(base, cand, upper, verdict.regression, verdict.e_value or 1.0,
                   verdict.test, policy, margin)  # fmt: skip


def paired_gate(
    pairs: Sequence[tuple[float, float]], policy: RegressionPolicy, *, margin: float
) -> GateResult:
    """Decide on paired scores (baseline, candidate) of the same items (a replay).

    The drop's bound comes from the per-item differences (a paired t bound), which is far
    tighter than comparing two independent streams; "worse" needs the bound's mirror (the
    lower bound of the drop) above the effect-size bound and alpha."""
    base = GroupStats.from_scores([b for b, _ in pairs])
    cand = GroupStats.from_scores([c for _, c in pairs])
    diffs = [b - c for b, c in pairs]
    n = len(diffs)
    if n < 2:
        return _decide(base, cand, math.inf, False, 1.0, "paired-t", policy, margin)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    half = t_quantile(1 - policy.alpha, n - 1) * math.sqrt(var / n)
    worse = n >= policy.min_samples and mean - half > 0 and mean >= policy.min_effect_mean
    return _decide(base, cand, mean + half, worse, 1.0, "paired-t", policy, margin)


def _decide(
    base: GroupStats,
    cand: GroupStats,
    upper: float,
    worse: bool,
    e_value: float,
    test: str,
    policy: RegressionPolicy,
    margin: float,
) -> GateResult:
    drop = base.mean - cand.mean if base.n and cand.n else 0.0
    enough = base.n >= policy.min_samples and cand.n >= policy.min_samples
    if worse:
        decision: Decision = "worse"
        reason = f"the candidate scores lower (drop {drop:.3f}, e-value {e_value:.3g})"
    elif not enough:
        decision = "not_enough_data"
        reason = (f"{base.n} baseline and {cand.n} candidate scores; "
                  f"at least {policy.min_samples} each are needed")  # fmt: skip
    elif upper < margin:
        decision = "no_worse"
        reason = f"the drop's {1 - policy.alpha:.0%} upper bound {upper:.3f} < margin {margin}"
    else:
        decision = "not_enough_data"
        reason = (f"no significant drop, but the drop's upper bound {upper:.3f} does not clear "
                  f"the margin {margin}: more scores are needed to call it no worse")  # fmt: skip
    p = min(1.0, 1.0 / e_value) if e_value > 0 else 1.0
    return GateResult(decision, base, cand, drop, upper, margin, e_value, p, policy.alpha,
                      test, reason)  # fmt: skip
