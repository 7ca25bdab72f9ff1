"""A simulated day: a judge budget equal to 10 % uniform sampling, a regression in one stratum.

    python -m bench.budget_sim [--seeds 20] [--per-minute 100] [--carry] [--boost-share 0.5]

Traffic: `per-minute` traces a minute for 24 h over 4 features (one rubric). At 12:00 the
feature f0 ships prompt version v2 and its scores drop by 0.15 (the injected regression).
Two arms see the same traces and the same score draws:

- uniform: every trace sampled with p = 0.10 (no cap; today's fixed rate);
- budgeted: the allocation of evaluator.intake.allocation (rubric rate 1, a per-minute cap of
  10 % of the traffic, a new stratum boosted to p = 1 for its first 200 traces or hour, the
  base rate fitted to the room the previous minute left), the cap applied per minute as the
  Redis script does (tests/test_budget.py checks the real script under concurrent workers).
  Two variants the shipped intake does not do yet (BENCHMARKS.md §15): `--carry`, a token
  bucket — a minute may spend what earlier minutes of the day left unspent, and the cap
  counted is "evaluations so far ≤ cap × minutes so far"; `--boost-share S`, new strata get
  at most S of a minute's room (their p lowered to fit, from the previous minute's new-stratum
  arrivals), so the cap seldom refuses a trace drawn in at a p that then overstates it.

Reported (median over seeds): detection delay of the regression (minutes from 12:00 until a
one-sided Welch test of f0@v2 against f0@v1's morning, with the ESS in place of n, gives
p < 0.01 with ESS >= 10), the absolute error of the day's mean estimate (Hájek for the
budgeted arm, the plain mean for uniform: equal weights), evaluations used, and the minutes in
which the budgeted arm exceeded its cap (must be 0). Pure Python; no Redis or database.
"""

from __future__ import annotations

import argparse
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
    base_probability,
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
    seed: int, per_minute: int, *, carry: bool = False, boost_share: float | None = None
) -> dict[str, float]:
    """carry: a token bucket (unspent minute budget carries forward within the day);
    boost_share: new strata get at most this share of a minute's room (their probability
    lowered to fit), so the cap rarely truncates and the stored p stays the real one."""
    rng = random.Random(seed)
    cap = max(1, round(per_minute * 0.10))
    plan = BudgetPlan(
        rubrics=(RubricPlan("faith", 1.0),),
        shared=Cap(per_minute=cap),
        boost_rate=1.0,
        boost_first_traces=200,
        boost_hours=1.0,
        min_rate=0.01,
    )
    uniform, budgeted = Arm("uniform", []), Arm("budgeted", [])
    strata: dict[tuple[str, str], list[float]] = {}  # (feature, version) -> [count, first s]
    previous = RubricState()
    scores_all: list[float] = []
    tokens = 0.0  # carry: budget not spent in earlier minutes of the day
    spent_total = 0
    for minute in range(24 * 60):
        now_s = minute * 60.0
        limit = cap + int(tokens) if carry else cap  # the hard cap of this minute
        # Spread a carried surplus over the next 10 minutes instead of one burst.
        room = cap + tokens / 10 if carry else float(cap)
        boost = plan.boost_rate
        if boost_share is not None and previous.reserved:
            boost = min(plan.boost_rate, boost_share * room / previous.reserved)
        expected_boosted = boost * previous.reserved
        if carry or boost_share is not None:
            rate = base_probability(
                1.0,
                room=room,
                arrivals=previous.arrivals,
                reserved=round(expected_boosted),
                floor=plan.min_rate,
            )
        else:
            rate = rubric_rates(plan, {"faith": previous}, now_s)["faith"]
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
            p = inclusion_probability(rate, tail=False, new_stratum=new, plan=plan)
            if new and boost_share is not None:
                p = max(rate, boost)
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
        # The cap: a minute's own (no carry), or everything spent so far within what the
        # minutes so far allowed (carry).
        budgeted.minutes_over_cap += (spent_total > cap * (minute + 1)) if carry else used > cap
        if carry:
            tokens = tokens + cap - used
        previous = RubricState(arrivals=arrivals, reserved=reserved)
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
    parser.add_argument("--carry", action="store_true", help="token bucket within the day")
    parser.add_argument("--boost-share", type=float, default=None,
                        help="new strata get at most this share of a minute's room")  # fmt: skip
    args = parser.parse_args()
    runs = [run_day(seed, args.per_minute, carry=args.carry, boost_share=args.boost_share)
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
