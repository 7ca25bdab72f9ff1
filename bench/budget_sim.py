"""A simulated day: a judge budget equal to 10 % uniform sampling, a regression in one stratum.

    python -m bench.budget_sim [--seeds 20] [--per-minute 100] [--no-carry] [--boost-share 0.5]
        [--burst 2]

Traffic: `per-minute` traces a minute for 24 h over 4 features (one rubric). At 12:00 the
feature f0 ships prompt version v2 and its scores drop by 0.15 (the injected regression).
Two arms see the same traces and the same score draws:

- uniform: every trace sampled with p = 0.10 (no cap; today's fixed rate);
- budgeted: the shipped allocation of evaluator.intake.allocation (rubric rate 1, a
  per-minute cap of 10 % of the traffic, a new stratum boosted for its first 200 traces or
  hour, the base rate fitted to the room the previous minute left), the cap applied as the
  Redis script of evaluator.intake.budget does (tests/test_budget.py checks the real script
  under concurrent workers). The defaults are the shipped settings: `carry` (the per-minute
  cap is cumulative within the UTC day: evaluations so far ≤ cap × minutes so far) and
  `boost_share` 0.5 (new strata's expected evaluations take at most half a minute's room).
  `--no-carry` (each minute alone) and `--boost-share 0` (boost p = 1 regardless of room)
  give the earlier intake (BENCHMARKS.md §15).

Reported (median over seeds): detection delay of the regression (minutes from 12:00 until a
one-sided Welch test of f0@v2 against f0@v1's morning, with the ESS in place of n, gives
p < 0.01 with ESS >= 10), the absolute error of the day's mean estimate (Hájek for the
budgeted arm, the plain mean for uniform: equal weights), evaluations used, and the minutes in
which the budgeted arm exceeded its cap (must be 0). Pure Python; no Redis or database.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from dataclasses import dataclass

from evaluator.analytics.stats import GroupStats, welch_lower_p
from evaluator.analytics.weights import WeightedStats
from evaluator.intake.allocation import (
    BudgetPlan,
    Cap,
    RubricPlan,
    RubricState,
    cumulative_cap,
    inclusion_probability,
    is_new,
    rubric_rates,
)

FEATURES = ("f0", "f1", "f2", "f3")
CHANGE_MIN = 12 * 60
DROP = 0.15


@dataclass
class Arm:
    name: str
    kept: list[tuple[str, str, int, float, float]]  # feature, version, minute, score, p
    evaluations: int = 0
    minutes_over_cap: int = 0
    truncated: int = 0  # drawn in, refused by the cap: their stored p overstates inclusion


def score_of(rng: random.Random, feature: str, version: str) -> float:
    base = {"f0": 0.80, "f1": 0.75, "f2": 0.85, "f3": 0.70}[feature]
    mean = base - (DROP if version == "v2" else 0.0)
    return min(1.0, max(0.0, rng.gauss(mean, 0.15)))


def run_day(
    seed: int,
    per_minute: int,
    *,
    carry: bool = True,
    boost_share: float = 0.5,
    burst: float = 2.0,
) -> dict[str, float]:
    """One simulated day; `carry` and `boost_share` as in BudgetPlan (the shipped defaults).
    The allocation state is what the intake reads from Redis at the start of each minute
    (one batch a minute): last minute's flow and today's use."""
    rng = random.Random(seed)
    cap = max(1, round(per_minute * 0.10))
    plan = BudgetPlan(
        rubrics=(RubricPlan("faith", 1.0),),
        shared=Cap(per_minute=cap),
        boost_rate=1.0,
        boost_first_traces=200,
        boost_hours=1.0,
        min_rate=0.01,
        carry=carry,
        boost_share=boost_share,
        burst=burst,
    )
    uniform, budgeted = Arm("uniform", []), Arm("budgeted", [])
    strata: dict[tuple[str, str], list[float]] = {}  # (feature, version) -> [count, first s]
    previous = RubricState()
    scores_all: list[float] = []
    spent_total = 0
    for minute in range(24 * 60):
        now_s = minute * 60.0  # the epoch's first day: minute of the UTC day = minute
        state = RubricState(
            arrivals=previous.arrivals,
            reserved=previous.reserved,
            new=previous.new,
            used_today=spent_total,
            shared_used_today=spent_total,
        )
        rate = rubric_rates(plan, {"faith": state}, now_s)["faith"]
        # The hard cap of this minute, as the Lua script checks it.
        limit = cumulative_cap(cap, now_s) - spent_total if carry else cap
        if carry and burst > 0:
            limit = min(limit, max(cap, math.floor(cap * burst)))
        arrivals = reserved = used = 0
        offered: list[tuple[float, str, str, float, float]] = []
        for _ in range(per_minute):
            feature = rng.choice(FEATURES)
            version = "v2" if feature == "f0" and minute >= CHANGE_MIN else "v1"
            score = score_of(rng, feature, version)
            scores_all.append(score)
            point = rng.random()  # the trace's hash point, shared by both arms
            if point < 0.10:
                uniform.kept.append((feature, version, minute, score, 0.10))
                uniform.evaluations += 1
            count, first = strata.setdefault((feature, version), [0, now_s])
            new = is_new(int(count), first, now_s, plan)
            strata[(feature, version)][0] += 1
            p = inclusion_probability(rate, tail=False, new_stratum=new)
            arrivals += 1
            reserved += new
            if point < p:
                offered.append((point, feature, version, score, p))
        # The cap, as the gate offers: highest probability first (tail, new strata), then
        # arrival order.
        offered.sort(key=lambda o: -o[4])
        for _point, feature, version, score, p in offered:
            if used < limit:
                used += 1
                budgeted.kept.append((feature, version, minute, score, p))
            else:
                budgeted.truncated += 1
        budgeted.evaluations += used
        spent_total += used
        # The cap: everything spent so far within what the minutes so far allowed (carry),
        # or a minute's own.
        over = spent_total > cumulative_cap(cap, now_s) if carry else used > cap
        budgeted.minutes_over_cap += over
        previous = RubricState(arrivals=arrivals, reserved=reserved, new=reserved)
    truth = statistics.fmean(scores_all)
    out: dict[str, float] = {"truth": truth}
    for arm in (uniform, budgeted):
        day = WeightedStats.from_scores((s, p) for _f, _v, _m, s, p in arm.kept)
        out[f"{arm.name}_error"] = abs(day.mean - truth)
        out[f"{arm.name}_delay"] = detection_delay(arm)
        out[f"{arm.name}_evaluations"] = arm.evaluations
    out["minutes_over_cap"] = budgeted.minutes_over_cap
    out["truncated"] = budgeted.truncated
    out["cap_per_day"] = cap * 24 * 60
    return out


def detection_delay(arm: Arm) -> float:
    """Minutes after the change until f0@v2 tests worse than f0@v1 (Welch, ESS for n)."""
    base = [(s, p) for f, v, m, s, p in arm.kept if f == "f0" and v == "v1"]
    ref = _as_group(WeightedStats.from_scores(base))
    after = sorted((m, s, p) for f, v, m, s, p in arm.kept if f == "f0" and v == "v2")
    seen: list[tuple[float, float]] = []
    for i, (minute, score, p) in enumerate(after):
        seen.append((score, p))
        if i + 1 < len(after) and after[i + 1][0] == minute:
            continue  # test once per minute, on everything evaluated by then
        cur = WeightedStats.from_scores(seen)
        if cur.ess >= 10 and welch_lower_p(ref, _as_group(cur)) < 0.01:
            return float(minute - CHANGE_MIN + 1)
    return float("inf")


def _as_group(w: WeightedStats) -> GroupStats:
    """The Welch test on weighted data: ESS in place of n, the weighted moments kept."""
    n = max(2, round(w.ess))
    second = w.w_total_sq / w.w_sum
    return GroupStats(n, w.mean * n, second * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--per-minute", type=int, default=100)
    parser.add_argument(
        "--no-carry",
        action="store_true",
        help="each minute's cap alone (the shipped default carries within the day)",
    )
    parser.add_argument(
        "--boost-share",
        type=float,
        default=0.5,
        help="new strata get at most this share of a minute's room; 0 = none",
    )
    parser.add_argument(
        "--burst",
        type=float,
        default=2.0,
        help="with carry, the most a minute spends in multiples of its cap; 0 = no bound",
    )
    args = parser.parse_args()
    runs = [run_day(seed, args.per_minute, carry=not args.no_carry, boost_share=args.boost_share,
                    burst=args.burst)
            for seed in range(args.seeds)]  # fmt: skip

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"simulated day: {args.per_minute} traces/min, {args.seeds} seeds, "
          f"cap {int(runs[0]['cap_per_day'])} evaluations/day (10 % uniform)")  # fmt: skip
    print(f"{'arm':<10}{'detection delay (min)':>24}{'|daily mean error|':>20}{'evaluations':>13}")
    for arm in ("uniform", "budgeted"):
        print(f"{arm:<10}{med(f'{arm}_delay'):>24.1f}{med(f'{arm}_error'):>20.5f}"
              f"{med(f'{arm}_evaluations'):>13.0f}")  # fmt: skip
    over = sum(int(r["minutes_over_cap"]) for r in runs)
    print(
        f"budgeted: minutes over the cap, all seeds: {over}; "
        f"max evaluations/day {max(r['budgeted_evaluations'] for r in runs):.0f}"
    )
    print(f"budgeted: drawn in but refused by the cap (median/day): {med('truncated'):.0f}")
    mean_err = {a: statistics.fmean(r[f"{a}_error"] for r in runs) for a in ("uniform", "budgeted")}
    print(f"mean |error|: uniform {mean_err['uniform']:.5f}, budgeted {mean_err['budgeted']:.5f}")


if __name__ == "__main__":
    main()
