"""Rate-limit adherence (issue 7 §5): two worker processes against a judge limited to R
requests per minute, with our shared limiter (judge.rpm_limit = R) and without it.

    python -m bench.rate_limit                      # R = 600, 660 cases (1,320 calls), 2 rounds
    python -m bench.rate_limit --rpm 120 --cases 130 --reps 1     # smoke (~1 min)

The judge is bench/judge_server.py (through bench.multiworker.TimelineJudge, which also
records the time and status of every chat call) with `--rpm R`: a sliding 60 s window over
chat calls, a call beyond R answered 429 with Retry-After / retry-after-ms = when the oldest
call in the window ages out. Latency 300 ms.

Per run: a fresh PostgreSQL database, Redis db 13 flushed, cases ingested, two real
`python -m evaluator.cli.main --settings FILE worker` processes (not burst; shipped
the shipped worker.max_jobs and judge.max_concurrency each, shipped max_retries 2 and max_wait_s 20,
reply cache off), all IDs enqueued, polled until every intent is done, SIGTERM.

- limiter:  judge.rpm_limit = R — the token bucket in Redis shared by both processes
            (evaluator/judge_limits.py), plus the client's 429 handling;
- none:     judge.rpm_limit = 0 — 429 + Retry-After and the client's adaptive concurrency only.

Reported: accepted (200) chat calls per 60 s window from the first call, as % of R, for the
windows that closed before the last call (the last, partial window is demand-bound, not
limit-bound); 429s as % of all chat attempts; intents done; traces with both records;
records ok vs error (an error record = the evaluation ran but its judge call gave up).
Rounds alternate which mode goes first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from evaluator.config.settings import Settings

from .multiworker import DEFAULT_PG, DEFAULT_REDIS, Judge, WorkerRun, pg_database
from .report import Summary, command_line, fmt, machine, table
from .throughput import load_traces


def windows(calls: list[tuple[float, int]], rpm: int) -> dict[str, Any]:
    """Accepted calls per 60 s window from the first call; which windows closed in time."""
    if not calls:
        return {"windows": [], "full": []}
    t0 = calls[0][0]
    last = calls[-1][0]
    n_win = int((last - t0) // 60) + 1
    ok = [0] * n_win
    limited = [0] * n_win
    for t, status in calls:
        k = int((t - t0) // 60)
        if status == 200:
            ok[k] += 1
        elif status == 429:
            limited[k] += 1
    full = [k for k in range(n_win) if t0 + 60 * (k + 1) <= last]
    return {
        "windows": [
            {"ok": ok[k], "429": limited[k], "pct_of_r": ok[k] / rpm} for k in range(n_win)
        ],
        "full": full,
        "span_s": last - t0,
    }


def one_run(
    args: argparse.Namespace,
    judge: Judge,
    traces: list[dict[str, Any]],
    mode: str,
    log_dir: Path | None,
) -> dict[str, Any]:
    with pg_database(args.pg_url, tag="bench_rl") as db_url:
        judge.reset()
        res = WorkerRun(
            traces,
            workers=args.workers,
            redis_url=args.redis_url,
            db_url=db_url,
            judge_url=judge.url,
            max_jobs=args.jobs,
            judge_concurrency=args.judge_concurrency,
            rpm_limit=args.rpm if mode == "limiter" else 0,
            timeout_s=args.timeout,
            log_dir=log_dir,
        ).run(on_started=lambda _pids: judge.reset())
        stats = judge.stats()
        timeline = judge.timeline()["calls"]
    n = len(traces)
    attempts = len(timeline)
    limited = sum(1 for _, s in timeline if s == 429)
    win = windows(timeline, args.rpm)
    full_pcts = [win["windows"][k]["pct_of_r"] for k in win["full"]]
    return {
        "mode": mode,
        "elapsed_s": res.elapsed_s,
        "attempts": attempts,
        "calls_ok": stats["chat_calls"],
        "rate_limited": limited,
        "pct_429": limited / attempts if attempts else 0.0,
        "windows": win["windows"],
        "full_windows": win["full"],
        "min_full_window_pct": min(full_pcts) if full_pcts else float("nan"),
        "median_full_window_pct": Summary.of(full_pcts).median if full_pcts else float("nan"),
        "intents_done": res.intents.get("done", 0),
        "intents": res.intents,
        "records": res.records,
        "records_ok": res.records.get("ok", 0),
        "records_error": res.records.get("error", 0),
        "traces_complete": res.traces_with_all_records,
        "lost": n - res.traces_with_all_records,
        "duplicates": res.record_rows - res.record_distinct,
        "timed_out": res.timed_out,
        "exit_codes": res.exit_codes,
    }


def pct(x: float) -> str:
    return "—" if x != x else f"{x:.1%}"  # NaN → —


def render(raw: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    modes = [m for m in ("limiter", "none") if m in raw]

    def cell(mode: str, key: str, f=fmt) -> str:  # type: ignore[no-untyped-def]
        vals = [r[key] for r in raw[mode] if r[key] == r[key]]
        if not vals:
            return "—"
        s = Summary.of(vals)
        return f"{f(s.median)} ({f(s.low)}–{f(s.high)})"

    n = args.cases
    rows = [
        [
            "accepted calls / full 60 s window, % of R (median of windows)",
            *[cell(m, "median_full_window_pct", pct) for m in modes],
            "≥ 95 %",
        ],
        [
            "accepted calls / full 60 s window, % of R (worst window)",
            *[cell(m, "min_full_window_pct", pct) for m in modes],
            "≥ 95 %",
        ],
        ["429s, % of chat attempts", *[cell(m, "pct_429", pct) for m in modes], "≤ 1 %"],
        ["429s (count)", *[cell(m, "rate_limited") for m in modes], ""],
        ["chat attempts (200 + 429)", *[cell(m, "attempts") for m in modes], ""],
        ["intents done", *[cell(m, "intents_done") for m in modes], f"{n}"],
        [
            "traces with both records (lost = cases − this)",
            *[cell(m, "traces_complete") for m in modes],
            f"{n}",
        ],
        ["records ok", *[cell(m, "records_ok") for m in modes], f"{2 * n}"],
        [
            "records error (judge gave up: 429 + Retry-After > max_wait_s)",
            *[cell(m, "records_error") for m in modes],
            "0",
        ],
        ["duplicate records", *[cell(m, "duplicates") for m in modes], "0"],
        [
            "wall time, s (first enqueue → all intents done)",
            *[cell(m, "elapsed_s") for m in modes],
            "",
        ],
    ]
    head = [
        "measure (median, min–max over rounds)",
        *[
            {
                "limiter": f"shared limiter (rpm_limit = {args.rpm})",
                "none": "no limiter (rpm_limit = 0)",
            }[m]
            for m in modes
        ],
        "target",
    ]
    out = [table(head, rows), ""]
    for m in modes:
        for i, r in enumerate(raw[m]):
            wins = ", ".join(
                f"{w['ok']} ok/{w['429']}×429{'' if k in r['full_windows'] else ' (partial)'}"
                for k, w in enumerate(r["windows"])
            )
            out.append(f"- {m}, round {i + 1}: per 60 s window: {wins}")
    out.append(
        f"\nR = {args.rpm} requests/min (sliding 60 s window at the judge), judge latency "
        f"{args.latency} ms; {args.workers} worker processes, each max_jobs {args.jobs}, "
        f"judge.max_concurrency {args.judge_concurrency}; {n} cases = {2 * n} judge calls; "
        f"{args.reps} rounds per mode, alternating which goes first"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rpm", type=int, default=600)
    p.add_argument("--cases", type=int, default=660)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--jobs", type=int, default=Settings().worker.max_jobs)
    p.add_argument("--judge-concurrency", type=int, default=Settings().judge.max_concurrency)
    p.add_argument("--latency", default="300")
    p.add_argument("--modes", nargs="+", default=["limiter", "none"])
    p.add_argument("--timeout", type=float, default=600.0, help="per run, s")
    p.add_argument("--redis-url", default=DEFAULT_REDIS)
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--logs", type=Path, help="keep the worker logs here")
    p.add_argument("--json", help="write the raw rounds here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    print(f"$ {command_line()}")
    print(f"machine: {machine()}\n")
    traces = load_traces(args.cases)
    if len(traces) < args.cases:
        p.error(f"only {len(traces)} cases available")
    raw: dict[str, list[dict[str, Any]]] = {}
    judge = Judge.start(rpm=args.rpm, latency=args.latency)
    try:
        for rep in range(args.reps):
            order = args.modes if rep % 2 == 0 else list(reversed(args.modes))
            for mode in order:
                log_dir = args.logs / f"{mode}{rep + 1}" if args.logs else None
                r = one_run(args, judge, traces, mode, log_dir)
                raw.setdefault(mode, []).append(r)
                if args.json:  # after every run: a later failure keeps the earlier rounds
                    with open(args.json, "w") as f:
                        json.dump(
                            {"args": vars(args) | {"logs": str(args.logs)}, "raw": raw},
                            f,
                            indent=2,
                            default=str,
                        )
                print(
                    f"  round {rep + 1} {mode:7s}: {fmt(r['elapsed_s'])} s, windows "
                    f"{[w['ok'] for w in r['windows']]}, 429s {r['rate_limited']} "
                    f"({pct(r['pct_429'])}), records {r['records']}, lost {r['lost']}",
                    file=sys.stderr,
                )
    finally:
        judge.stop()
    print(render(raw, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": vars(args) | {"logs": str(args.logs)}, "raw": raw},
                f,
                indent=2,
                default=str,
            )


if __name__ == "__main__":
    main()
