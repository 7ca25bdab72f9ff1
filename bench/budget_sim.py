"""Simulated days: a judge budget equal to 10 % uniform sampling, the shipped regression check.

    python -m bench.budget_sim [--seeds 20] [--scenarios version,labels,null] [--per-minute 100]
        [--interval 5] [--null-interval 60] [--no-carry] [--boost-share 0.5] [--burst 2]
        [--cascade-share 0]

Traffic: `per-minute` traces a minute over 4 features (one rubric, continuous scores) for two
UTC days: day 0 is history (the check's baseline), day 1 is the day measured. Scenarios, from
12:00 of day 1 (the change):

- `version`: feature f0 ships prompt version v2 and its scores drop by 0.15 (σ 0.15): the
  regression arrives as a new stratum, which the budget boosts;
- `labels`: f0's scores drop by 0.15 and its labels stay as they were (a model provider's
  silent update, a retrieval index going stale): no new stratum, no boost;
- `null`: f0 ships v2 and its scores do not change (the version e-process and every
  group's e-detector see no regression); every alert of day 1 is false.

Two arms see the same traces and score draws, at equal judge calls:

- uniform: every trace sampled with p = 0.10 (no budget; the sampler's floor is 0.10);
- budgeted: the shipped allocation of evaluator.budget.allocation (rubric rate 1, a
  per-minute cap of 10 % of the traffic, a new stratum boosted for its first 200 traces or
  hour, the base rate fitted to the room the previous minute left) and the shipped cap
  windows: a minute's draws are offered to its window, which closes at the next minute with
  the room the caps leave then and admits per stratum by random key
  (`allocation.window_quotas`); each record stores its realised probability p_draw × q_s/n_s
  and is written when its window has closed (evaluator.budget.windows). Defaults are the
  shipped settings (carry, boost_share 0.5, burst 2, budget.min_rate 0.01, so the sampler's
  floor is 0.01: max_weight 100). `--min-rate` sets budget.min_rate (and so the floor);
  `--no-carry`, `--boost-share 0` give the earlier intakes.

The detector is the one that ships: the records go into a SQLite store as the worker writes
them (trace time, write time, inclusion probability), and the regression cron's decision
(`evaluator.analytics.check_job.decide`: the version e-process from a new group's first
score, the e-detector over the 6 h window, the default [alerts] policy — RegressionPolicy():
alpha 0.01, min_samples 10, min_effect_mean 0.05, arl 2e6 — with max_weight = 1 / the
arm's floor) runs every `interval` minutes (alerts.interval_minutes, 5 by default). Delay:
minutes from 12:00 to the first run that opens an alert on f0 (the cron's granularity
included); runs go on to the end of day 1. The null scenario runs the check all of day 1
every `null-interval` minutes (60: a run costs ~1 s of SQL and folding, 288 a day per arm
and seed would take hours) and counts the alerts opened, as the service opens them (group,
kind, cool-down). The version e-process latches its first alarm, so its false alerts do not
depend on the cadence; the e-detector is refolded over its 6 h window at each run, so a
coarser cadence can miss an alarm only where its evidence segment straddles a window start.

Also reported: the absolute error of day 1's mean estimate (Hájek with the stored p for the
budgeted arm, the plain mean for uniform), evaluations charged a day, draws the cap refused,
records whose realised p fell below the floor (their bets count at the floor's weight).

`--cascade-share s`: the rubric is a cascade whose local step passes the highest-scoring
(1 - s) of traces alone and asks the judge for the rest. A third arm, `escalation`, draws as
the intake does for an escalating rubric (the rate fitted to the room / the escalation share
over the last 30 minutes, prior 1 until 50 runs); its draws are not quota'd but charged
when they escalate, in arrival order, while the cap has room; a refused escalation leaves
its trace without a verdict.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
import uuid
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from evalcore.weights import WeightedStats
from evaluator.analytics.check_job import decide
from evaluator.budget.allocation import (
    BudgetPlan,
    Cap,
    RubricPlan,
    RubricState,
    cumulative_cap,
    escalation_share,
    inclusion_probability,
    is_new,
    rubric_rates,
    window_quotas,
)
from evaluator.config.policy import inclusion_floor
from evaluator.config.rubrics import RubricSet, parse_rubric
from evaluator.config.settings import AlertsSettings
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store

FEATURES = ("f0", "f1", "f2", "f3")
DAY_MIN = 24 * 60
CHANGE_MIN = DAY_MIN + 12 * 60  # 12:00 of day 1
DROP = 0.15
UNIFORM_RATE = 0.10
MIN_RATE = 0.01  # budget.min_rate, the shipped default
JUDGE_S = 20.0  # a record is written this long after its trace (uniform) or its window's close
SCENARIOS = ("version", "labels", "null")
START = datetime(2026, 1, 5, tzinfo=UTC)  # day 0, 00:00 UTC
RUBRIC = 'name = "faith"\nversion = "1"\nscorer = "faithfulness"\nmethod = "judge"\n'
ESCALATION_WINDOW = 30  # minutes of runs the escalation share is measured on


@dataclass(frozen=True)
class Kept:
    feature: str
    version: str
    trace_s: float
    written_s: float
    score: float
    p: float


@dataclass
class Arm:
    name: str
    floor: float  # the sampler's smallest inclusion probability: max_weight = 1 / floor
    kept: list[Kept] = field(default_factory=list)
    charged: dict[int, int] = field(default_factory=dict)  # evaluations charged per UTC day
    refused: dict[int, int] = field(default_factory=dict)  # drawn, refused by the cap, per day
    judge_calls: dict[int, int] = field(default_factory=dict)  # per UTC day

    def count(self, what: dict[int, int], minute: int, n: int = 1) -> None:
        what[minute // DAY_MIN] = what.get(minute // DAY_MIN, 0) + n


@dataclass
class Budgeted(Arm):
    """A budgeted arm's allocation state, carried from minute to minute."""

    plan: BudgetPlan = field(default_factory=lambda: BudgetPlan(rubrics=()))
    previous: RubricState = field(default_factory=RubricState)
    strata: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    runs: deque[tuple[int, int]] = field(default_factory=deque)  # (runs, escalations)


def score_of(rng: random.Random, feature: str, degraded: bool) -> float:
    base = {"f0": 0.80, "f1": 0.75, "f2": 0.85, "f3": 0.70}[feature]
    return min(1.0, max(0.0, rng.gauss(base - (DROP if degraded else 0.0), 0.15)))


def escalation_mark(share: float) -> float:
    """The score below which a cascade escalates, so that `share` of the traces do (the local
    step passes the confident, high ones alone; a deterministic function of the trace)."""
    if share <= 0:
        return -1.0
    rng = random.Random(12345)
    scores = sorted(score_of(rng, f, f == "f0" and rng.random() < 0.5) for f in FEATURES * 5000)
    return scores[min(len(scores) - 1, int(share * len(scores)))]


def simulate(
    seed: int,
    scenario: str,
    per_minute: int,
    *,
    carry: bool = True,
    boost_share: float = 0.5,
    burst: float = 2.0,
    cascade_share: float = 0.0,
    min_rate: float = MIN_RATE,
) -> tuple[list[Arm], float]:
    """Two days of traffic through every arm; (arms, day 1's true mean score)."""
    rng = random.Random(seed)
    keys = random.Random(seed + 1_000_003)  # the cap's random keys and rounding points
    cap = max(1, round(per_minute * UNIFORM_RATE))

    def plan(escalates: bool) -> BudgetPlan:
        return BudgetPlan(
            rubrics=(RubricPlan("faith", 1.0, escalates=escalates),), shared=Cap(per_minute=cap),
            boost_rate=1.0, boost_first_traces=200, boost_hours=1.0, min_rate=min_rate,
            carry=carry, boost_share=boost_share, burst=burst,
        )  # fmt: skip

    floor = inclusion_floor(1.0, min_rate)
    mark = escalation_mark(cascade_share)
    uniform = Arm("uniform", inclusion_floor(UNIFORM_RATE, None))
    arms: list[Budgeted] = [Budgeted("budgeted", floor, plan=plan(False))]
    if cascade_share > 0:
        arms.append(Budgeted("escalation", floor, plan=plan(True)))
    day1: list[float] = []
    for minute in range(2 * DAY_MIN):
        changed = minute >= CHANGE_MIN
        traffic = []
        for i in range(per_minute):
            feature = rng.choice(FEATURES)
            degraded = changed and feature == "f0" and scenario != "null"
            shipped = changed and feature == "f0" and scenario != "labels"
            version = "v2" if shipped else "v1"
            score = score_of(rng, feature, degraded)
            if minute >= DAY_MIN:
                day1.append(score)
            point = rng.random()  # the trace's hash point, shared by every arm
            trace_s = minute * 60.0 + 60.0 * i / per_minute
            escalated = score < mark
            if point < UNIFORM_RATE:
                uniform.kept.append(
                    Kept(feature, version, trace_s, trace_s + JUDGE_S, score, UNIFORM_RATE)
                )
                uniform.count(uniform.charged, minute)
                uniform.count(uniform.judge_calls, minute, escalated if cascade_share > 0 else 1)
            traffic.append((feature, version, trace_s, score, point, escalated))
        for arm in arms:
            budgeted_minute(arm, minute, traffic, cap, keys, carry=carry, burst=burst,
                            cascade=cascade_share > 0)  # fmt: skip
    return [uniform, *arms], statistics.fmean(day1)


def budgeted_minute(
    arm: Budgeted,
    minute: int,
    traffic: list[tuple[str, str, float, float, float, bool]],
    cap: int,
    keys: random.Random,
    *,
    carry: bool,
    burst: float,
    cascade: bool,
) -> None:
    """One cap window of a budgeted arm: the allocation draws at the minute's rates; the
    window closes at the next minute with the room the caps leave then (the admission
    script's rules: cumulative within the UTC day with carry, a minute at most `burst` x the
    cap) and admits per stratum by random key with the realised p. An escalating rubric's
    draws are all picked and charged when they escalate, while there is room."""
    plan, now_s = arm.plan, minute * 60.0
    escalates = plan.rubrics[0].escalates
    used_today = arm.charged.get(minute // DAY_MIN, 0)
    state = RubricState(
        arrivals=arm.previous.arrivals, reserved=arm.previous.reserved, new=arm.previous.new,
        used_today=used_today, shared_used_today=used_today,
        escalation=escalation_share(sum(r for r, _ in arm.runs), sum(e for _, e in arm.runs)),
    )  # fmt: skip
    rate = rubric_rates(plan, {"faith": state}, now_s)["faith"]
    reserved = 0
    offers: dict[str, list[tuple[str, str, float, float, float, bool]]] = {}
    for feature, version, trace_s, score, point, escalated in traffic:
        count, first = arm.strata.setdefault((feature, version), [0, now_s])
        new = is_new(int(count), first, now_s, plan)
        arm.strata[(feature, version)][0] += 1
        p = inclusion_probability(rate, tail=False, new_stratum=new)
        reserved += new
        if point < p:
            offers.setdefault(f"{feature}\x1f{version}", []).append(
                (feature, version, trace_s, score, p, escalated)
            )
    arm.previous = RubricState(arrivals=len(traffic), reserved=reserved, new=reserved)
    close_s = now_s + 60.0  # the window closes at the next minute's first drain
    day = int(close_s // 86_400)
    room = cumulative_cap(cap, close_s) - arm.charged.get(day, 0) if carry else cap
    if carry and burst > 0:
        room = min(room, max(cap, math.floor(cap * burst)))
    room = max(0, room)
    admitted: list[tuple[str, str, float, float, float, bool]] = []
    if escalates:
        admitted = sorted((o for group in offers.values() for o in group), key=lambda o: o[2])
    else:
        counts = {s: len(group) for s, group in offers.items()}
        quotas = window_quotas({"faith": counts}, {"faith": None}, room, keys.random())["faith"]
        for stratum, group in sorted(offers.items()):
            q = quotas[stratum]
            arm.count(arm.refused, minute, len(group) - q.admit)
            admitted += [(*o[:4], o[4] * q.probability, o[5]) for o in keys.sample(group, q.admit)]
    spent = asked = 0
    for feature, version, trace_s, score, p, escalated in sorted(admitted, key=lambda o: o[2]):
        charge = escalated if escalates else True
        if charge and escalates and spent >= room:
            arm.count(arm.refused, minute)  # a refused escalation: the trace gets no verdict
            continue
        spent += charge
        asked += escalated
        arm.count(arm.judge_calls, minute, escalated if cascade else 1)
        arm.kept.append(Kept(feature, version, trace_s, close_s + JUDGE_S, score, p))
    arm.charged[day] = arm.charged.get(day, 0) + spent
    arm.runs.append((sum(len(g) for g in offers.values()), asked))
    while len(arm.runs) > ESCALATION_WINDOW:
        arm.runs.popleft()


def shipped_check(arm: Arm, scenario: str, interval_min: int) -> tuple[float, int]:
    """Run the regression cron's decision on the arm's records as they are written, every
    `interval_min` minutes: (minutes from the change to the first alert on f0, inf if none by
    the end of day 1; alerts opened on unchanged groups until then). The null scenario runs
    all of day 1 and every alert it opens is false: (inf, alerts opened)."""
    null = scenario == "null"
    start_min = DAY_MIN if null else CHANGE_MIN
    rows = sorted(arm.kept, key=lambda k: k.written_s)
    written = [k.written_s for k in rows]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'evals.db'}")
        rubrics = RubricSet((parse_rubric(RUBRIC, source=Path(tmp) / "faith.toml"),), Path(tmp))
        settings, floors = AlertsSettings(), {"faith": arm.floor}
        done, false = 0, 0
        try:
            for t_min in range(start_min + interval_min, 2 * DAY_MIN + 1, interval_min):
                upto = bisect_right(written, t_min * 60.0)
                _insert(store, rows[done:upto], done)
                done = upto
                report, _events = decide(store, rubrics, settings, _at(t_min * 60.0), floors)
                for alert in report.opened:
                    if not null and alert.labels.get("feature") == "f0":
                        return float(t_min - CHANGE_MIN), false
                    false += 1
        finally:
            store.close()
    return math.inf, false


def _clamped(arm: Arm) -> int:
    return sum(k.p < arm.floor * (1 - 1e-9) for k in arm.kept)


def _at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def _insert(store: Store, rows: list[Kept], first_id: int) -> None:
    if not rows:
        return
    table = cast("Any", EvalRecord).__table__
    values = [
        {"id": uuid.UUID(int=first_id + i), "trace_id": f"t{first_id + i}", "span_id": "",
         "rubric": "faith", "rubric_version": "1", "scorer": "faithfulness", "method": "judge",
         "status": "ok", "score": k.score, "explanation": "", "details": {}, "judge_calls": 1,
         "judge_input_tokens": 0, "judge_output_tokens": 0, "judge_cost_usd": 0.0,
         "latency_ms": 0.0, "prompt_version": k.version, "model": "m", "feature": k.feature,
         "created_at": _at(k.written_s), "trace_at": _at(k.trace_s), "epoch": "e1",
         "inclusion_probability": k.p}
        for i, k in enumerate(rows)
    ]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(table.insert(), values)


def run_day(seed: int, scenario: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    arms, truth = simulate(seed, scenario, args.per_minute, carry=not args.no_carry,
                           boost_share=args.boost_share, burst=args.burst,
                           cascade_share=args.cascade_share, min_rate=args.min_rate)  # fmt: skip
    out: dict[str, dict[str, float]] = {}
    for arm in arms:
        day1 = [(k.score, k.p) for k in arm.kept if k.trace_s >= DAY_MIN * 60.0]
        interval = args.null_interval if scenario == "null" else args.interval
        delay, false = shipped_check(arm, scenario, interval)
        out[arm.name] = {
            "delay": delay, "alerts": false, "clamped": _clamped(arm),
            "error": abs(WeightedStats.from_scores(day1).mean - truth),
            "evaluations": arm.charged.get(1, 0), "verdicts": len(day1),
            "refused": arm.refused.get(1, 0), "judge_calls": arm.judge_calls.get(1, 0),
        }  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--per-minute", type=int, default=100)
    parser.add_argument(
        "--interval",
        type=int,
        default=5,
        help="minutes between check runs (alerts.interval_minutes)",
    )
    parser.add_argument(
        "--null-interval", type=int, default=60, help="minutes between check runs on the null day"
    )
    parser.add_argument(
        "--min-rate",
        type=float,
        default=MIN_RATE,
        help="budget.min_rate: the base rate's floor, so the e-processes' max_weight is 1/it",
    )
    parser.add_argument("--no-carry", action="store_true", help="each minute's cap alone")
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
        help="with carry, a minute spends at most this x its cap; 0 = no bound",
    )
    parser.add_argument("--cascade-share", type=float, default=0.0,
                        help="a cascade asking the judge for this share of traces (the lower "
                        "scores); adds the arm charged at escalation")  # fmt: skip
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenario(s) {sorted(unknown)}; use {', '.join(SCENARIOS)}")
    cap = max(1, round(args.per_minute * UNIFORM_RATE))
    print(f"{args.per_minute} traces/min, {args.seeds} seeds, cap {cap * DAY_MIN} "
          f"evaluations/day (10 % uniform), check every {args.interval} min")  # fmt: skip
    head = (f"{'scenario':<9}{'arm':<12}{'delay med':>10}{'[min, max]':>14}{'missed':>7}"
            f"{'false alerts':>13}{'|error| med/mean':>19}{'evals/day':>10}{'verdicts':>9}"
            f"{'refused':>8}{'p<floor':>8}")  # fmt: skip
    print(head)
    for scenario in scenarios:
        began = time.perf_counter()
        runs = [run_day(seed, scenario, args) for seed in range(args.seeds)]
        for arm in runs[0]:
            rows = [r[arm] for r in runs]
            delays = [r["delay"] for r in rows]
            errors = [r["error"] for r in rows]
            found = [d for d in delays if d < math.inf]
            delay = f"{statistics.median(delays):>10.0f}" if scenario != "null" else f"{'-':>10}"
            spread = f"[{min(found):.0f}, {max(found):.0f}]" if found else "-"
            alerts = sum(int(r["alerts"]) for r in rows)
            days_with = sum(r["alerts"] > 0 for r in rows)
            print(f"{scenario:<9}{arm:<12}{delay}{spread:>14}"
                  f"{len(delays) - len(found) if scenario != 'null' else '-':>7}"
                  f"{f'{alerts} ({days_with} d)':>13}"
                  f"{f'{statistics.median(errors):.5f}/{statistics.fmean(errors):.5f}':>19}"
                  f"{statistics.median(r['evaluations'] for r in rows):>10.0f}"
                  f"{statistics.median(r['verdicts'] for r in rows):>9.0f}"
                  f"{statistics.median(r['refused'] for r in rows):>8.0f}"
                  f"{statistics.median(r['clamped'] for r in rows):>8.0f}")  # fmt: skip
        print(f"  ({scenario}: {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
