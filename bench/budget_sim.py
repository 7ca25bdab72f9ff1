"""A simulated day: a judge budget equal to 10 % uniform sampling, a regression in one stratum.

    python -m bench.budget_sim [--seeds 20] [--per-minute 100] [--no-carry] [--boost-share 0.5]
        [--burst 2] [--cascade-share 0.5]

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

`--cascade-share s`: the rubric is a cascade whose local step passes the highest-scoring
(1 - s) of traces alone and asks the judge for the rest. A third arm, `escalation`, draws as
the intake does for an escalating rubric (the rate fitted to the room / the escalation share
measured over the last 30 minutes, prior 1 until 50 runs) and charges only escalations,
when they happen; a refused escalation leaves its trace without a verdict. Printed: traces
with a verdict, evaluations charged, judge calls, refused, delay, error and minutes over cap.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections import deque
from dataclasses import dataclass, field

from evaluator.analytics.stats import GroupStats, welch_lower_p
from evaluator.analytics.weights import WeightedStats
from evaluator.intake.allocation import (
    BudgetPlan,
    Cap,
    RubricPlan,
    RubricState,
    cumulative_cap,
    escalation_share,
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
    evaluations: int = 0  # charged to the cap
    minutes_over_cap: int = 0
    truncated: int = 0  # drawn in, refused by the cap: their stored p overstates inclusion
    judge_calls: int = 0  # with a cascade: only escalations call the judge


@dataclass
class Budgeted(Arm):
    """A budgeted arm's allocation state, carried from minute to minute."""

    plan: BudgetPlan = field(default_factory=lambda: BudgetPlan(rubrics=()))
    previous: RubricState = field(default_factory=RubricState)
    strata: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # (runs, escalations) of the last minutes, for the escalation share (ESCALATION_WINDOW).
    runs: deque[tuple[int, int]] = field(default_factory=deque)


ESCALATION_WINDOW = 30  # minutes of runs the share is measured on (the intake reads 20-30)


def score_of(rng: random.Random, feature: str, version: str) -> float:
    base = {"f0": 0.80, "f1": 0.75, "f2": 0.85, "f3": 0.70}[feature]
    mean = base - (DROP if version == "v2" else 0.0)
    return min(1.0, max(0.0, rng.gauss(mean, 0.15)))


def escalation_mark(share: float) -> float:
    """The score below which a cascade escalates, so that `share` of the day's traces do:
    the local step passes the confident (high) ones alone and sends the doubtful to the judge
    (a deterministic function of the trace, as the cascade is)."""
    if share <= 0:
        return -1.0
    rng = random.Random(12345)
    scores = sorted(
        score_of(rng, f, "v2" if f == "f0" and rng.random() < 0.5 else "v1")
        for f in FEATURES * 5000
    )
    return scores[min(len(scores) - 1, int(share * len(scores)))]


def run_day(
    seed: int,
    per_minute: int,
    *,
    carry: bool = True,
    boost_share: float = 0.5,
    burst: float = 2.0,
    cascade_share: float = 0.0,
) -> dict[str, float]:
    """One simulated day; `carry` and `boost_share` as in BudgetPlan (the shipped defaults).
    The allocation state is what the intake reads from Redis at the start of each minute
    (one batch a minute): last minute's flow and today's use. With `cascade_share` the rubric
    is a cascade that calls the judge for that share of traces (the lower scores): the
    budgeted arm charges every draw at intake, the `escalation` arm only escalations."""
    rng = random.Random(seed)
    cap = max(1, round(per_minute * 0.10))

    def plan(escalates: bool) -> BudgetPlan:
        return BudgetPlan(
            rubrics=(RubricPlan("faith", 1.0, escalates=escalates),),
            shared=Cap(per_minute=cap),
            boost_rate=1.0,
            boost_first_traces=200,
            boost_hours=1.0,
            min_rate=0.01,
            carry=carry,
            boost_share=boost_share,
            burst=burst,
        )

    mark = escalation_mark(cascade_share)
    uniform = Arm("uniform", [])
    arms = [Budgeted("budgeted", [], plan=plan(False))]
    if cascade_share > 0:
        arms.append(Budgeted("escalation", [], plan=plan(True)))
    scores_all: list[float] = []
    for minute in range(24 * 60):
        now_s = minute * 60.0  # the epoch's first day: minute of the UTC day = minute
        traffic = []
        for _ in range(per_minute):
            feature = rng.choice(FEATURES)
            version = "v2" if feature == "f0" and minute >= CHANGE_MIN else "v1"
            score = score_of(rng, feature, version)
            scores_all.append(score)
            point = rng.random()  # the trace's hash point, shared by every arm
            if point < 0.10:
                uniform.kept.append((feature, version, minute, score, 0.10))
                uniform.evaluations += 1
                uniform.judge_calls += score < mark if cascade_share > 0 else 1
            traffic.append((feature, version, score, point, score < mark))
        for arm in arms:
            budgeted_minute(
                arm, minute, now_s, traffic, cap, carry=carry, burst=burst,
                cascade=cascade_share > 0,
            )  # fmt: skip
    truth = statistics.fmean(scores_all)
    out: dict[str, float] = {"truth": truth}
    for arm in (uniform, *arms):
        day = WeightedStats.from_scores((s, p) for _f, _v, _m, s, p in arm.kept)
        out[f"{arm.name}_error"] = abs(day.mean - truth)
        out[f"{arm.name}_delay"] = detection_delay(arm)
        out[f"{arm.name}_evaluations"] = arm.evaluations
        out[f"{arm.name}_verdicts"] = len(arm.kept)
        out[f"{arm.name}_judge_calls"] = arm.judge_calls
        out[f"{arm.name}_over"] = arm.minutes_over_cap
        out[f"{arm.name}_truncated"] = arm.truncated
    out["minutes_over_cap"] = arms[0].minutes_over_cap
    out["truncated"] = arms[0].truncated
    out["cap_per_day"] = cap * 24 * 60
    return out


def budgeted_minute(
    arm: Budgeted,
    minute: int,
    now_s: float,
    traffic: list[tuple[str, str, float, float, bool]],
    cap: int,
    *,
    carry: bool,
    burst: float,
    cascade: bool,
) -> None:
    """One minute of a budgeted arm: the allocation draws, the cap admits in the order the
    gate offers (highest probability first, then arrival order). An arm whose rubric
    `escalates` charges only the draws that escalate, when they do (the worker's
    BudgetGate.charge_escalation); a refused escalation leaves its trace without a verdict."""
    plan = arm.plan
    escalates = plan.rubrics[0].escalates
    runs = sum(r for r, _ in arm.runs)
    state = RubricState(
        arrivals=arm.previous.arrivals,
        reserved=arm.previous.reserved,
        new=arm.previous.new,
        used_today=arm.evaluations,
        shared_used_today=arm.evaluations,
        escalation=escalation_share(runs, sum(e for _, e in arm.runs)),
    )
    rate = rubric_rates(plan, {"faith": state}, now_s)["faith"]
    # The hard cap of this minute, as the Lua script checks it.
    limit = cumulative_cap(cap, now_s) - arm.evaluations if carry else cap
    if carry and burst > 0:
        limit = min(limit, max(cap, math.floor(cap * burst)))
    arrivals = reserved = used = 0
    offered: list[tuple[float, str, str, float, bool]] = []
    for feature, version, score, point, escalated in traffic:
        count, first = arm.strata.setdefault((feature, version), [0, now_s])
        new = is_new(int(count), first, now_s, plan)
        arm.strata[(feature, version)][0] += 1
        p = inclusion_probability(rate, tail=False, new_stratum=new)
        arrivals += 1
        reserved += new
        if point < p:
            offered.append((p, feature, version, score, escalated))
    offered.sort(key=lambda o: -o[0])
    ran = asked = 0
    for p, feature, version, score, escalated in offered:
        if escalates and not escalated:  # a confident local pass: no judge, no charge
            ran += 1
            arm.kept.append((feature, version, minute, score, p))
            continue
        ran += 1
        asked += escalated
        if used < limit:
            used += 1
            arm.judge_calls += escalated if cascade else 1
            arm.kept.append((feature, version, minute, score, p))
        else:
            arm.truncated += 1
    arm.evaluations += used
    arm.runs.append((ran, asked))
    while len(arm.runs) > ESCALATION_WINDOW:
        arm.runs.popleft()
    # The cap: everything spent so far within what the minutes so far allowed (carry), or a
    # minute's own.
    over = arm.evaluations > cumulative_cap(cap, now_s) if carry else used > cap
    arm.minutes_over_cap += over
    arm.previous = RubricState(arrivals=arrivals, reserved=reserved, new=reserved)


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
    parser.add_argument(
        "--cascade-share",
        type=float,
        default=0.0,
        help="the rubric is a cascade that asks the judge for this share of traces (the lower "
        "scores); adds the arm charged at escalation; 0 = a judge call per evaluation",
    )
    args = parser.parse_args()
    runs = [run_day(seed, args.per_minute, carry=not args.no_carry, boost_share=args.boost_share,
                    burst=args.burst, cascade_share=args.cascade_share)
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
    if args.cascade_share > 0:
        print(f"\ncascade (judge asked for {args.cascade_share:.0%} of traces, the lower scores), "
              "charged at intake (budgeted) vs at escalation, medians/day:")  # fmt: skip
        print(f"{'arm':<12}{'verdicts':>10}{'charged':>10}{'judge calls':>13}{'refused':>9}"
              f"{'delay':>7}{'|error|':>10}{'mean |error|':>14}{'over cap':>10}")  # fmt: skip
        for arm in ("uniform", "budgeted", "escalation"):
            mean = statistics.fmean(r[f"{arm}_error"] for r in runs)
            over = sum(int(r.get(f"{arm}_over", 0)) for r in runs)
            print(f"{arm:<12}{med(f'{arm}_verdicts'):>10.0f}{med(f'{arm}_evaluations'):>10.0f}"
                  f"{med(f'{arm}_judge_calls'):>13.0f}{med(f'{arm}_truncated'):>9.0f}"
                  f"{med(f'{arm}_delay'):>7.0f}{med(f'{arm}_error'):>10.5f}{mean:>14.5f}"
                  f"{over:>10}")  # fmt: skip


if __name__ == "__main__":
    main()
