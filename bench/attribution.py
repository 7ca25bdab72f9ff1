"""Does an alert name the right cause — the app, the judge, or the traffic mix?

    python -m bench.attribution --seeds 200 [--window-n 600] [--baseline-n 6000]
                                [--judge-level 0.05]

Per seed, one group of pass/fail scores in three tenants (the strata) with different shares
of good answers, a 7-day baseline and a 6-hour window, and an anchor set of 100 good and 100
bad labelled items re-scored by the judge before the window and inside it (a temperature-0
judge repeats most verdicts: each item keeps its latent difficulty with probability 0.85).
Production scores are the judge's verdicts on the app's answers: pass with probability
π·g + (1 − π)·b, π the tenant's share of good answers, g / b the judge's pass rate on good /
bad answers. Scenarios:

* null — nothing changes;
* judge — a silent judge swap: g 0.95 → 0.82 (harsher on good answers), production drops;
* system — the app gets worse: every tenant's π falls by 0.10, the judge is unchanged;
* traffic — the low-scoring tenant's share grows 0.2 → 0.45, every π and the judge unchanged;
* mixed — the judge swap and the system drop together (expected answer: judge, mixed flag).

The attribution is `evaluator.analytics.attribution.attribute` on the strata's statistics
and `judge_shift` on the two anchor runs, with the shipped default policy (alpha 0.01). The
"alerted" column is whether the shipped regression check would open an alert on the same
data (the e-detector or the window test); accuracy is over every seed and over the alerting
ones (attribution runs only when an alert opens). "undetermined" counts as wrong.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, replace
from typing import Any

from evalcore.intervals import GroupStats
from evaluator.analytics.attribution import (
    CAUSES,
    JUDGE_LEVEL,
    Stratum,
    attribute,
    judge_shift,
)
from evaluator.analytics.regression import (
    advance,
    compare_stats,
    sequential_verdict,
    start_sequential,
)
from evaluator.config.policy import RegressionPolicy

TENANTS = ("a", "b", "c")


@dataclass(frozen=True)
class World:
    shares: tuple[float, ...] = (0.5, 0.3, 0.2)
    good: tuple[float, ...] = (0.92, 0.85, 0.60)  # π per tenant: share of good answers
    g: float = 0.95  # judge passes a good answer
    b: float = 0.15  # judge passes a bad answer


SCENARIOS: dict[str, tuple[str, Any]] = {
    # name: (expected cause, how the window's world differs from the baseline's)
    "null": ("undetermined", lambda w: w),
    "judge": ("judge", lambda w: replace(w, g=0.82)),
    "system": ("system", lambda w: replace(w, good=tuple(p - 0.10 for p in w.good))),
    "traffic": ("traffic", lambda w: replace(w, shares=(0.30, 0.25, 0.45))),
    "mixed": (
        "judge",
        lambda w: replace(w, g=0.82, good=tuple(p - 0.10 for p in w.good)),
    ),
}


def production(rng: random.Random, w: World, n: int) -> tuple[dict[str, list[float]], list[float]]:
    """n scores in time order, and the same scores per tenant."""
    per: dict[str, list[float]] = {t: [] for t in TENANTS}
    stream = []
    for _ in range(n):
        t = rng.choices(range(len(TENANTS)), weights=w.shares)[0]
        ok = rng.random() < w.good[t]
        x = 1.0 if rng.random() < (w.g if ok else w.b) else 0.0
        per[TENANTS[t]].append(x)
        stream.append(x)
    return per, stream


def anchor_runs(
    rng: random.Random, before: World, after: World, n_per_class: int = 100, keep: float = 0.85
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Two runs' outcomes {key: [positive (bad), predicted_fail, risk]} on the same items."""
    run0, run1 = {}, {}
    for i in range(2 * n_per_class):
        bad = i >= n_per_class
        u = rng.random()
        u1 = u if rng.random() < keep else rng.random()
        p0, p1 = (before.b, after.b) if bad else (before.g, after.g)
        run0[f"item{i}"] = [bad, not u < p0, 0.0]
        run1[f"item{i}"] = [bad, not u1 < p1, 0.0]
    return run0, run1


def alerted(base: list[float], window: list[float], policy: RegressionPolicy) -> bool:
    b = GroupStats.from_scores(base, 0.5)
    state = advance(start_sequential(b, policy, known_start=False, pass_threshold=0.5),
                    window, policy)  # fmt: skip
    seq = sequential_verdict(state, policy)
    fixed = compare_stats(b, GroupStats.from_scores(window, 0.5), policy)
    return (state.alarm_at is not None and seq.regression) or fixed.regression


def one_seed(
    scenario: str,
    seed: int,
    window_n: int,
    baseline_n: int,
    policy: RegressionPolicy,
    judge_level: float = JUDGE_LEVEL,
) -> tuple[str, bool, bool]:
    """(cause named, mixed flag, would the check alert) for one seeded scenario."""
    rng = random.Random(f"{scenario}:{seed}")
    world = World()
    now = SCENARIOS[scenario][1](world)
    base_per, base_stream = production(rng, world, baseline_n)
    cur_per, cur_stream = production(rng, now, window_n)
    run0, run1 = anchor_runs(rng, world, now)
    shift = judge_shift(run0, run1, alpha=0.01, min_drop=0.05, level=judge_level)
    result = attribute(
        {t: Stratum.of(GroupStats.from_scores(x, 0.5)) for t, x in base_per.items()},
        {t: Stratum.of(GroupStats.from_scores(x, 0.5)) for t, x in cur_per.items()},
        shift,
        policy,
        stratum_labels=("tenant",),
    )
    return result.cause, bool(result.evidence.get("mixed")), alerted(base_stream, cur_stream,
                                                                       policy)  # fmt: skip


def run(
    seeds: int, window_n: int, baseline_n: int, judge_level: float = JUDGE_LEVEL
) -> dict[str, dict[str, Any]]:
    policy = RegressionPolicy()
    out: dict[str, dict[str, Any]] = {}
    for name, (expected, _) in SCENARIOS.items():
        counts = dict.fromkeys(CAUSES, 0)
        counts_alerted = dict.fromkeys(CAUSES, 0)
        mixed = alerts = 0
        for s in range(seeds):
            cause, flag, alert = one_seed(name, s, window_n, baseline_n, policy, judge_level)
            counts[cause] += 1
            mixed += flag
            alerts += alert
            if alert:
                counts_alerted[cause] += 1
        out[name] = {
            "expected": expected, "counts": counts, "accuracy": counts[expected] / seeds,
            "alerted": alerts, "accuracy_alerted":
            counts_alerted[expected] / alerts if alerts else None,
            "mixed_flag": mixed, "seeds": seeds,
        }  # fmt: skip
    return out


def render(
    results: dict[str, dict[str, Any]], window_n: int, baseline_n: int, judge_level: float
) -> str:
    head = ("| scenario | expected | " + " | ".join(CAUSES)
            + " | correct | alerted | correct when alerted | mixed flag |")  # fmt: skip
    lines = [
        f"window n = {window_n}, baseline n = {baseline_n}, anchors 100 + 100 items, "
        f"alpha 0.01, judge level {judge_level} (rows: true scenario; columns: cause named)",
        "",
        head,
        "|" + "---|" * (len(CAUSES) + 6),
    ]
    for name, r in results.items():
        n = r["seeds"]
        acc_a = r["accuracy_alerted"]
        lines.append(
            f"| {name} | {r['expected']} | "
            + " | ".join(str(r["counts"][c]) for c in CAUSES)
            + f" | {r['accuracy']:.0%} | {r['alerted']}/{n} | "
            + (f"{acc_a:.0%}" if acc_a is not None else "–")
            + f" | {r['mixed_flag']}/{n} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--window-n", type=int, default=600)
    ap.add_argument("--baseline-n", type=int, default=6000)
    ap.add_argument("--judge-level", type=float, default=JUDGE_LEVEL)
    args = ap.parse_args()
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    results = run(args.seeds, args.window_n, args.baseline_n, args.judge_level)
    print(render(results, args.window_n, args.baseline_n, args.judge_level))


if __name__ == "__main__":
    main()
