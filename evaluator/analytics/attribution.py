"""Which cause most likely explains a regression alert: the app, the judge, or the traffic mix.

A drop in a group's score has three usual explanations, and each leaves its own trace:

* ``judge`` — the judge changed silently (same model name, different behaviour): the anchor
  set, re-scored item by item, agrees less with its labels in the same period;
* ``traffic`` — the mix of strata shifted (a low-scoring tenant sends more): some stratum's
  share moved significantly, and re-weighted to the baseline's shares the current window
  shows no significant drop although the raw window does;
* ``system`` — the app got worse: the drop holds *within* strata after the re-weighting, and
  the anchors show no judge change;
* ``undetermined`` — none of these is supported (e.g. neither the raw nor the re-weighted
  drop is significant at this window's size).

Strata are the traffic labels the group does not fix (`STRATUM_LABELS`: feature × tenant
minus the group's own labels; with the default `group_by` that is the tenant). Prompt
version and model are never strata: a change of those is a change of the app.

Order of the decision, and the mixed case. A significant judge change that moves pass rates
the way production moved is reported as the cause first (a judge change makes every other
production number untrustworthy). The drop the judge change accounts for is then estimated
from the anchors' per-class pass rates (the production prevalence of good answers solved
from the baseline pass rate), and what remains beyond it is tested: a significant remainder
sets ``mixed = True`` and the sentence says the app may have dropped too. We chose this over
a separate ``mixed`` cause: the first thing to fix is the measurement.

Statistics (every p one-sided; each is a fixed-n test of the alert's two windows, a
description of the alert that opened, not a paging decision):

* raw and re-weighted drops: a (stratified) z-test with each stratum's variance pooled over
  both windows, w_s = baseline share of stratum s among strata present in both windows:
  D = Σ w_s (mean_b,s − mean_c,s), Var = Σ w_s² · var_s(b ∪ c) · (1/n_b,s + 1/n_c,s) — under
  "no drop within strata" the pooled variance is unbiased or larger, so the test is not
  anti-conservative from zero-variance strata;
* share shift: per stratum a two-proportion z-test of its share, Bonferroni over strata;
* judge: the anchors' paired exact test (judges.drift.paired_drift_exact) between the last
  anchor run of the epoch before the window and the latest run inside it, significant below
  `JUDGE_LEVEL` (0.05): with the judge unchanged it names the judge with probability ≤ 0.05.

Assumptions: scores within a stratum and window are independent draws; the judge's per-class
error rates on the anchor set carry over to production. With sampling weights the shares are
Horvitz–Thompson traffic estimates (Σ 1/p) and the tests use the effective sample size
(approximate). The bench (bench/attribution.py, BENCHMARKS.md "Alert attribution") measures
the accuracy per scenario.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from evalcore.intervals import GroupStats
from evaluator.config.policy import RegressionPolicy
from judges.drift import DriftResult, drift_test, paired_drift_exact

CAUSES = ("system", "judge", "traffic", "undetermined")
STRATUM_LABELS = ("feature", "tenant")
PAIRED_MIN_OVERLAP = 0.8  # as judge_drift.compare_runs: mostly the same items → paired
# The anchors' one-sided level for "the judge changed" in an attribution. Looser than the
# judge-drift alert's own alpha (0.01 by default, which pages): an attribution only ranks
# explanations of an alert that already opened, and with the judge unchanged the exact paired
# test still names the judge falsely with probability ≤ this level (the unpaired fallback for
# a rotating anchor sample is a normal approximation). At 0.01 a 200-item anchor set
# misses a third of silent swaps that drop production by 0.1 (BENCHMARKS.md).
JUDGE_LEVEL = 0.05
_NORMAL = NormalDist()


def strata_labels(group_labels: Sequence[str]) -> tuple[str, ...]:
    """The traffic labels a group of these labels does not fix: its strata."""
    return tuple(n for n in STRATUM_LABELS if n not in group_labels)


@dataclass(frozen=True)
class Stratum:
    """One stratum in one window: its score statistics and its traffic (Σ 1/p; = n unweighted)."""

    stats: GroupStats
    traffic: float

    @classmethod
    def of(cls, stats: GroupStats, traffic: float | None = None) -> Stratum:
        return cls(stats.with_passes(), float(stats.n if traffic is None else traffic))


@dataclass(frozen=True)
class JudgeShift:
    """The judge's verdicts on the anchor items, before the window against inside it.

    `pass_good` / `pass_bad`: the share of labelled-good / labelled-bad items the judge
    passed, (before, after)."""

    drift: DriftResult
    pass_good: tuple[float, float]
    pass_bad: tuple[float, float]
    n_good: int
    n_bad: int
    before_run: str = ""
    after_run: str = ""
    level: float = JUDGE_LEVEL

    @property
    def significant(self) -> bool:
        return self.drift.drop > 0 and self.drift.p_value < self.level

    def to_json(self) -> dict[str, Any]:
        d = self.drift
        return {
            "balanced_accuracy_before": d.before,
            "balanced_accuracy_after": d.after,
            "drop": d.drop,
            "p_value": d.p_value,
            "alpha": d.alpha,
            "test": d.test,
            "pass_good": list(self.pass_good),
            "pass_bad": list(self.pass_bad),
            "n_good": self.n_good,
            "n_bad": self.n_bad,
            "before_run": self.before_run,
            "after_run": self.after_run,
            "level": self.level,
            "significant": self.significant,
        }


def judge_shift(
    before: Mapping[str, Sequence[Any]],
    after: Mapping[str, Sequence[Any]],
    *,
    alpha: float = 0.01,
    min_drop: float = 0.05,
    before_run: str = "",
    after_run: str = "",
    level: float = JUDGE_LEVEL,
) -> JudgeShift | None:
    """Compare two anchor runs' outcomes ({key: [positive, predicted_fail, risk]}, positive =
    the item is bad). Paired and exact on the shared items when most are shared (the
    default, a fixed anchor sample), else the unpaired per-class test. None if either is
    empty or a class is missing."""
    common = sorted(k for k in set(before) & set(after) if bool(before[k][0]) == bool(after[k][0]))
    if common and len(common) >= PAIRED_MIN_OVERLAP * min(len(before), len(after)):
        b_keys = a_keys = common
    else:
        b_keys, a_keys = sorted(before), sorted(after)
    y_b, y_a = [bool(before[k][0]) for k in b_keys], [bool(after[k][0]) for k in a_keys]
    f_b, f_a = [bool(before[k][1]) for k in b_keys], [bool(after[k][1]) for k in a_keys]
    if not (any(y_b) and not all(y_b) and any(y_a) and not all(y_a)):
        return None
    if b_keys is a_keys:
        drift = paired_drift_exact(y_a, f_b, f_a, alpha=alpha, min_drop=min_drop)
    else:
        drift = drift_test(y_b, f_b, y_a, f_a, paired=False, alpha=alpha, min_drop=min_drop)

    def passed(y: list[bool], fail: list[bool], bad: bool) -> float:
        idx = [i for i, t in enumerate(y) if t is bad]
        return sum(1 for i in idx if not fail[i]) / len(idx)

    return JudgeShift(
        drift,
        (passed(y_b, f_b, False), passed(y_a, f_a, False)),
        (passed(y_b, f_b, True), passed(y_a, f_a, True)),
        sum(1 for t in y_a if not t),
        sum(y_a),
        before_run,
        after_run,
        level,
    )


@dataclass(frozen=True)
class Attribution:
    """The most likely cause, its numbers, and one sentence for the alert message."""

    cause: str  # system | judge | traffic | undetermined
    sentence: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"cause": self.cause, "sentence": self.sentence, **self.evidence}


# --- statistics ---------------------------------------------------------------------------


def _upper_p(z: float) -> float:
    return 1.0 - _NORMAL.cdf(z)


def _drop(
    base: Mapping[str, Stratum], cur: Mapping[str, Stratum], weights: Mapping[str, float]
) -> dict[str, float]:
    """Σ w_s (mean_b − mean_c) and its one-sided z-test, variance pooled per stratum."""
    drop = var = 0.0
    for s, w in weights.items():
        b, c = base[s].stats, cur[s].stats
        drop += w * (b.mean - c.mean)
        var += w * w * (b + c).var * (1 / b.n + 1 / c.n)
    sd = math.sqrt(var)
    p = _upper_p(drop / sd) if sd > 0 else (0.0 if drop > 0 else 1.0)
    return {"drop": drop, "sd": sd, "p_value": p}


def _raw_drop(
    base: Mapping[str, Stratum],
    cur: Mapping[str, Stratum],
    sb: Mapping[str, float],
    sc: Mapping[str, float],
) -> dict[str, float]:
    """The windows as they came (each stratum at its own traffic share); the variance pooled
    over every score of both windows."""
    drop = _mean(base, sb) - _mean(cur, sc)
    b = sum((s.stats for s in base.values()), GroupStats())
    c = sum((s.stats for s in cur.values()), GroupStats())
    sd = math.sqrt((b + c).var * (1 / b.n + 1 / c.n))
    p = _upper_p(drop / sd) if sd > 0 else (0.0 if drop > 0 else 1.0)
    return {"drop": drop, "sd": sd, "p_value": p}


def _pass_rate(strata: Mapping[str, Stratum], weights: Mapping[str, float]) -> float | None:
    rates = [strata[s].stats.pass_rate for s in weights]
    if any(r is None for r in rates):
        return None
    return sum(w * (r or 0.0) for w, r in zip(weights.values(), rates, strict=True))


def _shares(strata: Mapping[str, Stratum]) -> dict[str, float]:
    total = sum(s.traffic for s in strata.values())
    return {k: (s.traffic / total if total > 0 else 0.0) for k, s in strata.items()}


def _share_shift(
    base: Mapping[str, Stratum], cur: Mapping[str, Stratum], alpha: float
) -> dict[str, Any]:
    """Each stratum's share tested (two-proportion z, two-sided, Bonferroni over strata);
    named: of the strata that moved significantly, the one that lowers the mean most (a
    below-average stratum grown or an above-average one shrunk), else the smallest p."""
    sb, sc = _shares(base), _shares(cur)
    nb = sum(s.stats.n for s in base.values())
    nc = sum(s.stats.n for s in cur.values())
    keys = sorted(set(sb) | set(sc))
    best: dict[str, Any] = {"stratum": None, "p_value": 1.0, "strata": len(keys)}
    if len(keys) < 2 or not nb or not nc:
        return best
    average = _mean(base, sb)
    ranked = []
    for k in keys:
        pb, pc = sb.get(k, 0.0), sc.get(k, 0.0)
        pooled = (pb * nb + pc * nc) / (nb + nc)
        sd = math.sqrt(pooled * (1 - pooled) * (1 / nb + 1 / nc))
        p = min(1.0, len(keys) * 2 * _upper_p(abs(pc - pb) / sd)) if sd > 0 else 1.0
        mean = (cur[k] if k in cur else base[k]).stats.mean
        lowers = (pc - pb) * (average - mean)  # > 0: this move lowers the mean
        ranked.append((p > alpha, -lowers if p <= alpha else p, k, pb, pc, p))
    _, _, k, pb, pc, p = min(ranked)
    return {"stratum": k, "share_before": pb, "share_now": pc, "p_value": p, "strata": len(keys)}


def _judge_accounts_for(
    shift: JudgeShift, r0: float, r1: float, n0: int, n1: int
) -> dict[str, Any] | None:
    """The pass-rate drop the judge change alone would cause, and the remainder's test.

    r = π·g + (1 − π)·b with g, b the judge's pass rates on good and bad items and π the
    production share of good answers: π is solved from the baseline (r0, g0, b0), the
    judge-only expectation now is π·g1 + (1 − π)·b1. Delta-method variance, anchors and
    production independent (approximate). None when the judge cannot tell good from bad."""
    (g0, g1), (b0, b1) = shift.pass_good, shift.pass_bad
    if g0 - b0 < 0.1:
        return None
    pi = min(1.0, max(0.0, (r0 - b0) / (g0 - b0)))
    expected = pi * g1 + (1 - pi) * b1
    ng, nb = max(shift.n_good, 1), max(shift.n_bad, 1)

    def v(p: float, n: int) -> float:
        return p * (1 - p) / max(n, 1)

    var_pi = (v(r0, n0) + pi**2 * v(g0, ng) + (1 - pi) ** 2 * v(b0, nb)) / (g0 - b0) ** 2
    var = v(r1, n1) + pi**2 * v(g1, ng) + (1 - pi) ** 2 * v(b1, nb) + (g1 - b1) ** 2 * var_pi
    remainder = expected - r1
    sd = math.sqrt(var)
    return {
        "good_share": pi,
        "judge_only_pass_rate": expected,
        "judge_drop": r0 - expected,
        "remainder": remainder,
        "remainder_p_value": _upper_p(remainder / sd)
        if sd > 0
        else (0.0 if remainder > 0 else 1.0),
    }


# --- the decision -------------------------------------------------------------------------


def attribute(
    baseline: Mapping[str, Stratum],
    current: Mapping[str, Stratum],
    judge: JudgeShift | None,
    policy: RegressionPolicy,
    *,
    stratum_labels: Sequence[str] = STRATUM_LABELS,
    judge_note: str = "",
) -> Attribution:
    """Name the most likely cause of a drop from `baseline` to `current` (per-stratum
    statistics of one alerting group), given the anchors' judge shift over the same period
    (None: no anchor run before and inside the window; `judge_note` says why).

    Decision (the module docstring gives the tests): judge if the anchors show a significant
    agreement drop that lowers pass rates (when pass rates exist); else system if the
    re-weighted drop is significant at `policy.alpha`; else traffic if the raw drop is
    significant and a stratum's share moved significantly towards lower-scoring strata; else
    undetermined. Pure; no guarantee of correctness beyond the bench's measured accuracy
    (BENCHMARKS.md "Alert attribution"): an attribution describes an alert, it never pages.
    """
    alpha = policy.alpha
    base = {k: s for k, s in baseline.items() if s.stats.n > 0}
    cur = {k: s for k, s in current.items() if s.stats.n > 0}
    both = sorted(k for k in base if k in cur)
    sb, sc = _shares(base), _shares(cur)
    evidence: dict[str, Any] = {"strata_by": list(stratum_labels), "alpha": alpha}
    if not base or not cur:
        return Attribution("undetermined", "cause undetermined: a window has no scores", evidence)
    raw = _raw_drop(base, cur, sb, sc)
    total = sum(sb[k] for k in both)
    weights = {k: sb[k] / total for k in both} if total > 0 else {}
    adjusted = _drop(base, cur, weights) if weights else {"drop": 0.0, "sd": 0.0, "p_value": 1.0}
    shift = _share_shift(base, cur, alpha)
    mix_effect = raw["drop"] - adjusted["drop"]
    evidence |= {
        "raw": raw,
        "reweighted": {**adjusted, "strata_compared": len(both)},
        "mix_effect": mix_effect,
        "share_shift": shift,
        "strata": {
            k: {
                "share_before": sb.get(k, 0.0),
                "share_now": sc.get(k, 0.0),
                "mean_before": base[k].stats.mean if k in base else None,
                "mean_now": cur[k].stats.mean if k in cur else None,
            }
            for k in sorted(set(base) | set(cur))
        },
    }
    evidence["judge"] = (
        judge.to_json() if judge is not None else {"checked": False, "note": judge_note}
    )
    r0, r1 = _pass_rate(base, weights), _pass_rate(cur, weights)
    if judge is not None and judge.significant:
        account = None
        if r0 is not None and r1 is not None:
            n0 = sum(base[k].stats.n for k in both)
            n1 = sum(cur[k].stats.n for k in both)
            account = _judge_accounts_for(judge, r0, r1, n0, n1)
        if account is None or account["judge_drop"] > 0:
            return _judge(judge, account, evidence, policy)
        evidence["judge"]["moves_pass_rate_up"] = True  # lenient: cannot explain a drop
    if adjusted["p_value"] <= alpha and adjusted["drop"] > 0:
        return _system(adjusted, raw, shift, judge, judge_note, evidence, stratum_labels, alpha)
    if raw["p_value"] <= alpha and shift["p_value"] <= alpha and mix_effect > 0:
        return _traffic(adjusted, raw, shift, evidence, stratum_labels)
    why = (
        "no significant drop at this window's size, raw or re-weighted"
        if raw["p_value"] > alpha
        else "the raw drop is significant, but neither within strata nor from a significant "
        "share shift"
    )
    return Attribution("undetermined", f"cause undetermined: {why}", evidence)


def _mean(strata: Mapping[str, Stratum], shares: Mapping[str, float]) -> float:
    return sum(shares[k] * s.stats.mean for k, s in strata.items())


def _where(key: str, labels: Sequence[str]) -> str:
    parts = key.split("\x1f")
    return " ".join(f"{n}={v}" for n, v in zip(labels, parts, strict=False)) or key


def stratum_key(values: Sequence[str | None]) -> str:
    """The evidence's name of a stratum: its label values joined (unit separator)."""
    return "\x1f".join("" if v is None else str(v) for v in values)


def _judge(
    judge: JudgeShift,
    account: dict[str, Any] | None,
    evidence: dict[str, Any],
    policy: RegressionPolicy,
) -> Attribution:
    d = judge.drift
    text = (
        f"likely cause: the judge — its anchor-set balanced accuracy fell {d.before:.3f} -> "
        f"{d.after:.3f} in the same period (p={d.p_value:.2g}, {d.test})"
    )
    mixed = False
    if account is not None:
        evidence["judge_account"] = account
        text += f"; it accounts for a pass-rate drop of about {account['judge_drop']:.3f}"
        mixed = (
            account["remainder_p_value"] <= policy.alpha
            and account["remainder"] >= policy.min_effect_pass_rate
        )
        if mixed:
            text += (
                f", and a further {account['remainder']:.3f} remains beyond it "
                f"(p={account['remainder_p_value']:.2g}): the app may have dropped too"
            )
    evidence["mixed"] = mixed
    return Attribution("judge", text, evidence)


def _system(
    adjusted: dict[str, float],
    raw: dict[str, float],
    shift: dict[str, Any],
    judge: JudgeShift | None,
    judge_note: str,
    evidence: dict[str, Any],
    labels: Sequence[str],
    alpha: float,
) -> Attribution:
    by = "×".join(labels) or "stratum"
    text = (
        f"likely cause: the app — the drop holds within {by} ({adjusted['drop']:.3f} at the "
        f"baseline's mix, p={adjusted['p_value']:.2g}; raw {raw['drop']:.3f})"
    )
    if judge is not None:
        text += (
            f"; the judge's anchor accuracy is stable ({judge.drift.before:.3f} -> "
            f"{judge.drift.after:.3f}, p={judge.drift.p_value:.2g})"
        )
    else:
        text += f"; the judge was not re-checked ({judge_note or 'no anchor runs'})"
    if shift["p_value"] <= alpha and raw["drop"] - adjusted["drop"] > 0:
        text += f"; the mix shift adds {raw['drop'] - adjusted['drop']:.3f}"
    return Attribution("system", text, evidence)


def _traffic(
    adjusted: dict[str, float],
    raw: dict[str, float],
    shift: dict[str, Any],
    evidence: dict[str, Any],
    labels: Sequence[str],
) -> Attribution:
    text = (
        f"likely cause: the traffic mix — {_where(shift['stratum'], labels)}'s share moved "
        f"{shift['share_before']:.0%} -> {shift['share_now']:.0%} (p={shift['p_value']:.2g}); "
        f"at the baseline's mix the drop is {adjusted['drop']:.3f} "
        f"(p={adjusted['p_value']:.2g}) against {raw['drop']:.3f} raw"
    )
    return Attribution("traffic", text, evidence)
