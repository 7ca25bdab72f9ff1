"""What a cascade's cheap stage costs a worker per trace (issue 30: "the worker CPU cost per
trace of the cheap stage").

    python -m bench.two_stage_cpu                 # 300 cases, 3 paired rounds
    python -m bench.two_stage_cpu --cases 600 --rounds 5

Two arms, each a real worker process on PostgreSQL and Redis db 13 (bench.multiworker, judge
latency 0 ms, reply cache off), one faithfulness rubric, every trace judged in both:

- judge:   method "judge";
- cascade: method "cascade" in cold start (no certification, so every trace still goes to the
  judge) with `[two_stage] cheap_cpu_per_s = 0` (the CPU bucket never binds: every trace
  pays the cheap stage).

The worker's CPU (utime+stime from /proc, first enqueue → every intent done) per trace; the
difference is what the cheap stage adds in the worker: the local score in its thread, the
router (cluster hash, certifications read every 30 s), the two stages' bookkeeping and the
larger record. Rounds alternate which arm runs first (load from other processes falls on both).
Then, in-process, the two stages' own bookkeeping (`CpuBudget.admit` + `JudgePlan.sample`),
µs a trace, and the cheap score's thread CPU alone (`score_faithfulness_local`) on the same
traces.
"""

from __future__ import annotations

import argparse
import statistics
import time

from .multiworker import DEFAULT_PG, DEFAULT_REDIS, Judge, WorkerRun, pg_database
from .report import command_line, machine
from .throughput import RUBRICS, load_traces

RUBRIC = """name = "faithfulness"
version = "bench"
scorer = "faithfulness"
method = "{method}"
pass_threshold = 0.6
[sampling]
rate = 1.0
[options]
{options}
"""
ARMS = {
    "judge": RUBRIC.format(method="judge", options=""),
    "cascade": RUBRIC.format(method="cascade", options="audit_rate = 0.1"),
}
NO_CPU_BOUND = "[two_stage]\ncheap_cpu_per_s = 0\n"


def worker_ms(arm: str, traces: list[dict], judge: Judge, args: argparse.Namespace) -> float:
    RUBRICS.clear()
    RUBRICS["faithfulness"] = ARMS[arm]
    with pg_database(args.pg_url, tag="bench_two_stage") as db_url:
        result = WorkerRun(
            traces,
            workers=1,
            redis_url=args.redis_url,
            db_url=db_url,
            judge_url=judge.url,
            max_jobs=32,
            judge_concurrency=32,
            extra_settings=NO_CPU_BOUND,
        ).run()
    n = len(traces)
    if result.records != {"ok": n}:
        raise SystemExit(f"{arm}: expected {n} ok records, got {result.records}")
    return result.worker_cpu_s / n * 1000


def bookkeeping_us(n: int = 20_000) -> float:
    """CpuBudget.admit + JudgePlan.sample (a judge_rate above the audit rate, a cap), µs."""
    from evaluator.worker.two_stage import CpuBudget, JudgePlan

    cpu = CpuBudget(0.5, 5.0)
    plan = JudgePlan(0.3, 0.1, per_minute=100)
    started = time.process_time()
    for i in range(n):
        one = cpu.admit("faithfulness", f"trace-{i}")
        if one.spend is not None:
            one.spend(0.004)
        plan.sample(0.5 + (i % 500) / 1000, (i * 0.6180339887) % 1.0)
    return (time.process_time() - started) / n * 1e6


def local_ms(traces: list[dict]) -> list[float]:
    from evaluator.traces.cases import build_case
    from evaluator.traces.model import parse_trace
    from judges.scorers.local import score_faithfulness_local

    out = []
    for doc in traces:
        case = build_case(parse_trace(doc))
        started = time.thread_time()
        score_faithfulness_local(case)
        out.append((time.thread_time() - started) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis-url", default=DEFAULT_REDIS)
    ap.add_argument("--pg-url", default=DEFAULT_PG)
    args = ap.parse_args()
    print(f"$ {command_line()}")
    print(f"machine: {machine()}\n")
    traces = load_traces(args.cases)
    judge = Judge.start()
    got: dict[str, list[float]] = {arm: [] for arm in ARMS}
    try:
        for r in range(args.rounds):
            order = list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
            for arm in order:
                got[arm].append(worker_ms(arm, traces, judge, args))
            print(f"  round {r + 1}: " + ", ".join(f"{a} {got[a][-1]:.2f}" for a in ARMS))
    finally:
        judge.stop()
    diffs = [c - j for c, j in zip(got["cascade"], got["judge"], strict=True)]
    print("\n| arm | worker CPU ms/trace (median of rounds) | rounds |")
    print("|---|---|---|")
    for arm in ARMS:
        rounds = ", ".join(f"{x:.2f}" for x in got[arm])
        print(f"| {arm} | {statistics.median(got[arm]):.2f} | {rounds} |")
    print(
        f"| cascade − judge (paired) | {statistics.median(diffs):.2f} | "
        f"{', '.join(f'{d:.2f}' for d in diffs)} |"
    )
    ms = local_ms(traces)
    print(
        f"\ncheap score alone (thread CPU, in-process, {len(ms)} traces): median "
        f"{statistics.median(ms):.2f} ms, p90 {sorted(ms)[int(0.9 * len(ms))]:.2f} ms"
    )
    print(
        f"two stages' bookkeeping (CpuBudget.admit + JudgePlan.sample): "
        f"{bookkeeping_us():.1f} µs a trace"
    )


if __name__ == "__main__":
    main()
