"""Scale-out (issue 7 §6): evaluations/s with 1, 2 and 4 worker processes, one Redis, one
PostgreSQL database, judge latency 300 ms.

    python -m bench.scale_out                       # 240 cases, 1/2/4 workers, 3 rounds
    python -m bench.scale_out --cases 40 --reps 1 --workers 1 2   # smoke

Each run: a fresh PostgreSQL database (dropped after), Redis db 13 flushed, the RAGTruth QA
cases of bench/throughput.py ingested, N real `python -m evaluator.cli.main --settings FILE worker`
processes (not burst) started and waited for (start-up is not timed), then every trace ID
enqueued through `TraceEnqueuer`; timed from the first enqueue until every sampled trace's
intent is done (polled in PostgreSQL every 20 ms). One evaluation = faithfulness (method
judge) + answer relevance of one case, as in bench/throughput.py; the judge reply cache is
off so each evaluation costs its 2 calls.

Checks per run: intents done = cases; eval records = 2 × cases, all ok; duplicates =
COUNT(*) − COUNT(DISTINCT (trace_id, span_id, rubric, rubric_version)) = 0; judge chat
calls = 2 × cases (no evaluation ran twice). Worker CPU = utime+stime of the worker
processes over the timed interval (from /proc).

Configurations (`--configs`, worker.max_jobs/judge.max_concurrency per process):
"32/32" = the shipped defaults; "16/8" = the defaults before 2026-11-22; "128/128" = opened up.
Order of worker counts is rotated every round (interleaved rounds on a noisy machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from .multiworker import DEFAULT_PG, DEFAULT_REDIS, Judge, WorkerRun, pg_database
from .report import Summary, command_line, fmt, machine, table
from .throughput import load_traces


def one_run(
    args: argparse.Namespace,
    judge: Judge,
    traces: list[dict[str, Any]],
    workers: int,
    jobs: int,
    conc: int,
) -> dict[str, float]:
    with pg_database(args.pg_url, tag="bench_scale") as db_url:
        judge.reset()
        res = WorkerRun(
            traces,
            workers=workers,
            redis_url=args.redis_url,
            db_url=db_url,
            judge_url=judge.url,
            max_jobs=jobs,
            judge_concurrency=conc,
        ).run(on_started=lambda _pids: judge.reset())
        stats = judge.stats()
    n = len(traces)
    dupes = res.record_rows - res.record_distinct
    done = res.intents.get("done", 0)
    ok = res.records.get("ok", 0)
    problems = []
    if res.timed_out or done != n:
        problems.append(f"intents {res.intents}")
    if ok != 2 * n or res.record_rows != 2 * n:
        problems.append(f"records {res.records}")
    if dupes:
        problems.append(f"{dupes} duplicate records")
    if problems:
        print(f"  WARNING {workers} workers: {'; '.join(problems)}", file=sys.stderr)
    return {
        "evals_per_s": n / res.elapsed_s,
        "elapsed_s": res.elapsed_s,
        "cpu_ms": res.worker_cpu_s / n * 1000,
        "calls": stats["chat_calls"] / n,
        "rate_limited": stats["rate_limited"],
        "max_in_flight": stats["max_in_flight"],
        "intents_done": done,
        "records_ok": ok,
        "records": res.record_rows,
        "duplicates": dupes,
        "complete_traces": res.traces_with_all_records,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=240)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument(
        "--configs",
        nargs="+",
        default=["32/32", "128/128"],
        help="max_jobs/judge.max_concurrency per worker process",
    )
    p.add_argument("--latency", default="300", help="judge latency spec, ms")
    p.add_argument("--redis-url", default=DEFAULT_REDIS)
    p.add_argument("--pg-url", default=DEFAULT_PG, help="admin URL; a database is created per run")
    p.add_argument("--json", help="write the raw rounds and summaries here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    configs = [tuple(int(x) for x in c.split("/")) for c in args.configs]

    print(f"$ {command_line()}")
    print(f"machine: {machine()}\n")
    traces = load_traces(args.cases)
    raw: dict[str, list[dict[str, float]]] = {}
    judge = Judge.start(latency=args.latency)
    try:
        for rep in range(args.reps):
            order = (
                args.workers[rep % len(args.workers) :] + args.workers[: rep % len(args.workers)]
            )
            for jobs, conc in configs:
                for w in order:
                    r = one_run(args, judge, traces, w, jobs, conc)
                    raw.setdefault(f"{jobs}/{conc}@{w}", []).append(r)
                    print(
                        f"  round {rep + 1} {jobs}/{conc} × {w} workers: "
                        f"{fmt(r['evals_per_s'])} evals/s, cpu {fmt(r['cpu_ms'])} ms/eval, "
                        f"dupes {r['duplicates']}",
                        file=sys.stderr,
                    )
    finally:
        judge.stop()

    summ = {k: {m: Summary.of([r[m] for r in rs]) for m in rs[0]} for k, rs in raw.items()}
    rows = []
    for jobs, conc in configs:
        base = summ.get(f"{jobs}/{conc}@{args.workers[0]}", {}).get("evals_per_s")
        for w in args.workers:
            s = summ[f"{jobs}/{conc}@{w}"]
            runs = raw[f"{jobs}/{conc}@{w}"]
            e = s["evals_per_s"]
            bound = w * conc / (2 * float(args.latency) / 1000) if args.latency.isdigit() else 0
            rows.append(
                [
                    f"{jobs} / {conc}",
                    str(w),
                    f"{fmt(e.median)} ({fmt(e.low)}–{fmt(e.high)})",
                    f"{e.median / base.median:.2f}×" if base else "—",
                    f"{e.median / (w / args.workers[0]) / base.median:.0%}" if base else "—",
                    fmt(bound) if bound else "—",
                    f"{fmt(s['cpu_ms'].median)} ({fmt(s['cpu_ms'].low)}–{fmt(s['cpu_ms'].high)})",
                    fmt(s["calls"].median),
                    f"{int(sum(r['duplicates'] for r in runs))}",
                    f"{int(min(r['intents_done'] for r in runs))}/{args.cases}",
                    f"{int(min(r['records_ok'] for r in runs))}/{2 * args.cases}",
                ]
            )
    head = [
        "max_jobs / judge conc. per worker",
        "workers",
        "evaluations/s (median, min–max)",
        "÷ 1 worker",
        "scaling efficiency",
        "concurrency bound/s",
        "worker CPU ms/eval",
        "judge calls/eval",
        "duplicates (all rounds)",
        "intents done (min)",
        "records ok (min)",
    ]
    print(table(head, rows))
    print(
        f"\n{args.cases} cases × {args.reps} rounds per cell; judge latency {args.latency} ms; "
        "one PostgreSQL database and one Redis per run; concurrency bound = workers × judge "
        "calls in flight ÷ (2 calls × latency); duplicates = COUNT(*) − COUNT(DISTINCT "
        "(trace_id, span_id, rubric, rubric_version)) over eval_records, summed over rounds"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "raw": raw,
                    "summary": {k: {m: asdict(s) for m, s in d.items()} for k, d in summ.items()},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
