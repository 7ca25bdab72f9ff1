"""Paired before/after benchmarks of two commits (issue 27's done-when).

    python -m bench.paired [--before 36cfb00] [--after HEAD] [--pairs 10] [--json out.json]
    python -m bench.paired --benches worker --after-env EVALUATOR_JUDGE__INITIAL_CONCURRENCY=32

Checks both commits out as detached git worktrees (`--worktrees PREFIX`: PREFIX-before,
PREFIX-after, default /tmp/pair-*; removed at the end) and runs three benches (`--benches`),
each side from its own worktree (cwd and PYTHONPATH of that tree, so the code measured is the
commit's, not this work tree's edits):

- app import: `python -c "from evaluator import enqueue_trace"` and `evaluator --help`
  (bench/startup.py's `run_once`): CPU (user+sys) of a fresh process, median of `--procs`;
- intake (BENCHMARKS §1): each tree's own `bench.intake` functions on `--intake-ids` IDs:
  `TraceEnqueuer.enqueue()` and `SyncTraceEnqueuer.enqueue()` CPU µs per trace, and
  `Intake.drain_all()` CPU µs per trace (plain and durable);
- worker CPU per trace (BENCHMARKS §5): one real worker process of that tree on PostgreSQL
  and Redis, judge latency 0 ms, faithfulness (judge) + answer relevance (bench.profile_worker's
  `judge2` set), utime+stime of the worker from /proc per evaluated trace; the harness around
  it (schema, ingest, enqueue, checks) is that tree's bench.multiworker, the fake judge server
  (one for the whole run) the after tree's.

Interleaving: pair i runs every bench's before and after back to back, before first when i is
even and after first when i is odd, so load from other processes on the machine falls on
both sides of a pair alike. Each pair gives a ratio after/before; the report is the median
ratio with the exact distribution-free (order-statistic, binomial) confidence interval for the
median: [r_(k), r_(n+1-k)] with the largest k whose coverage 1 - 2 P(Bin(n, 1/2) <= k-1) is
>= 95 % (n = 10: k = 2, 97.9 %). Assumption: the pairs' ratios are independent draws of one
continuous distribution (no symmetry or normality needed). A regression is an interval whose
lower end is above 1.05 (the whole interval above: the after tree is slower by more than 5 %
at that level); an interval straddling 1.05 is "not shown". `--after-env` sets environment
for the after side only: an attribution run, not the shipped configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .report import command_line, machine
from .startup import run_once

REPO = Path(__file__).resolve().parent.parent
THRESHOLD = 1.05

# Runs inside a tree (cwd = PYTHONPATH = the tree): that tree's bench.intake functions.
INTAKE_DRIVER = """
import asyncio, json, sys
from bench import intake as b
url, n = sys.argv[1], int(sys.argv[2])
ids = b.trace_ids(n)
out = {}
b.flushdb(url); out["enqueue (async) CPU µs/trace"] = asyncio.run(
    b.app_async(url, ids, with_signals=False))["cpu_us"]
b.flushdb(url); out["enqueue (sync) CPU µs/trace"] = b.app_sync(url, ids)["cpu_us"]
b.flushdb(url); out["drain CPU µs/trace"] = asyncio.run(b.intake_rate(url, ids, 10_000))["cpu_us"]
b.flushdb(url); out["drain durable CPU µs/trace"] = asyncio.run(
    b.intake_rate(url, ids, 10_000, durable=True))["cpu_us"]
b.flushdb(url)
print(json.dumps(out))
"""

# Runs inside the measured tree (its own schema, ingest and worker); argv: cases, judge URL,
# Redis, PG.
WORKER_DRIVER = """
import json, logging, sys
from pathlib import Path
from bench.multiworker import WorkerRun, pg_database
from bench.profile_worker import use_rubric_set
from bench.throughput import RUBRICS, load_traces
from evaluator.config.settings import Settings
logging.basicConfig(level=logging.WARNING)
cases, judge_url, redis_url, pg_url = sys.argv[1:5]
use_rubric_set("judge2")
traces = load_traces(int(cases))
n = len(traces)
with pg_database(pg_url, tag="bench_pair") as db_url:
    r = WorkerRun(traces, repo=Path.cwd(), workers=1, redis_url=redis_url, db_url=db_url,
                  judge_url=judge_url, max_jobs=Settings().worker.max_jobs,
                  judge_concurrency=Settings().judge.max_concurrency).run()
expected = n * len(RUBRICS)
if r.records != {"ok": expected} or r.record_rows != expected:
    sys.exit(f"expected {expected} ok records, got {r.records} ({r.record_rows} rows)")
print(json.dumps({"worker CPU ms/trace": r.worker_cpu_s / n * 1000,
                  "worker wall ms/trace": r.elapsed_s / n * 1000}))
"""


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def add_worktree(path: Path, rev: str) -> str:
    if path.exists():
        git("worktree", "remove", "--force", str(path))
    git("worktree", "add", "--detach", str(path), rev)
    return git("-C", str(path), "rev-parse", "--short", "HEAD")


# Extra environment for the after side only (--after-env), e.g. to attribute a difference.
AFTER_ENV: dict[str, str] = {}


def tree_env(tree: Path) -> dict[str, str]:
    extra = AFTER_ENV if tree.name.endswith("-after") else {}
    return {**os.environ, **extra, "PYTHONPATH": str(tree)}


def run_json(cmd: list[str], tree: Path) -> dict[str, float]:
    out = subprocess.run(cmd, cwd=tree, env=tree_env(tree), capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{tree}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_bench(procs: int) -> Callable[[Path], dict[str, float]]:
    commands = {
        "app import CPU ms": [sys.executable, "-c", "from evaluator import enqueue_trace"],
        "evaluator --help CPU ms": [str(Path(sys.executable).with_name("evaluator")), "--help"],
    }

    def measure(tree: Path) -> dict[str, float]:
        out = {}
        for name, cmd in commands.items():
            cpus = [run_once(cmd, cwd=tree, env=tree_env(tree))[1] for _ in range(procs)]
            out[name] = statistics.median(cpus) * 1000
        return out

    return measure


def intake_bench(redis_url: str, n: int) -> Callable[[Path], dict[str, float]]:
    return lambda tree: run_json([sys.executable, "-c", INTAKE_DRIVER, redis_url, str(n)], tree)


def worker_bench(
    cases: int, judge_url: str, redis_url: str, pg_url: str
) -> Callable[[Path], dict[str, float]]:
    args = [str(cases), judge_url, redis_url, pg_url]
    return lambda tree: run_json([sys.executable, "-c", WORKER_DRIVER, *args], tree)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_judge(tree: Path) -> tuple[subprocess.Popen[str], str]:
    """bench/multiworker's fake judge (latency 0 ms) from `tree`; the process and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.multiworker", "judge", "--latency", "0"],
        cwd=tree,
        env=tree_env(tree),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"judge server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def median_interval(ratios: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Exact order-statistic interval for the median of n i.i.d. continuous values.

    [x_(k), x_(n+1-k)] covers the median with probability 1 - 2 P(Bin(n, 1/2) <= k - 1);
    k is the largest with coverage >= level. Returns (low, high, coverage).
    """
    xs, n = sorted(ratios), len(ratios)

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, j) for j in range(k)) / 2**n

    k = max((k for k in range(1, n // 2 + 1) if coverage(k) >= level), default=0)
    if k == 0:
        return math.nan, math.nan, math.nan
    return xs[k - 1], xs[n - k], coverage(k)


def verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "too few pairs for a 95 % interval (n >= 6)"
    if low > THRESHOLD:
        return "**regression**"
    if high <= THRESHOLD:
        return "no regression (interval ≤ 1.05)"
    return "not shown either way (interval straddles 1.05)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", default="36cfb00")
    p.add_argument("--after", default="HEAD")
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--procs", type=int, default=5, help="fresh processes per import sample")
    p.add_argument("--intake-ids", type=int, default=50_000)
    p.add_argument("--cases", type=int, default=300, help="traces per worker run")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/7", help="a db to FLUSHDB")
    p.add_argument("--worker-redis-url", default="redis://127.0.0.1:6379/8")
    p.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--json", type=Path, help="write every pair's numbers here")
    p.add_argument("--keep", action="store_true", help="keep the worktrees")
    p.add_argument("--worktrees", default="/tmp/pair", help="PREFIX: PREFIX-before, PREFIX-after")
    p.add_argument("--benches", default="import,intake,worker", help="a comma-separated subset")
    p.add_argument(
        "--after-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the after side only (attribution runs; not the shipped config)",
    )
    args = p.parse_args(argv)
    AFTER_ENV.update(kv.split("=", 1) for kv in args.after_env)
    BEFORE_DIR, AFTER_DIR = Path(f"{args.worktrees}-before"), Path(f"{args.worktrees}-after")

    before_sha = add_worktree(BEFORE_DIR, args.before)
    after_sha = add_worktree(AFTER_DIR, args.after)
    print(f"$ {command_line()}")
    print(f"machine: {machine()}")
    print(f"before {before_sha} ({BEFORE_DIR}), after {after_sha} ({AFTER_DIR})")
    if AFTER_ENV:
        print(f"after side's extra environment: {AFTER_ENV}")
    print(f"uptime at start: {uptime()}")
    judge: subprocess.Popen[str] | None = None
    pairs: list[dict[str, dict[str, float]]] = []  # per pair: side -> metric -> value
    try:
        judge, judge_url = start_judge(AFTER_DIR)
        every = {
            "import": lambda: import_bench(args.procs),
            "intake": lambda: intake_bench(args.redis_url, args.intake_ids),
            "worker": lambda: worker_bench(
                args.cases, judge_url, args.worker_redis_url, args.pg_url
            ),
        }
        benches = {name: every[name]() for name in args.benches.split(",")}
        for i in range(args.pairs):
            sides = ("before", "after") if i % 2 == 0 else ("after", "before")
            pair: dict[str, dict[str, float]] = {"before": {}, "after": {}}
            for name, measure in benches.items():
                t0 = time.perf_counter()
                for side in sides:
                    pair[side].update(measure(BEFORE_DIR if side == "before" else AFTER_DIR))
                print(f"pair {i + 1} {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            pairs.append(pair)
            print(f"pair {i + 1}: {json.dumps(pair)}", file=sys.stderr)
    finally:
        if judge is not None:
            judge.terminate()
            judge.wait(timeout=10)
        if not args.keep:
            for path in (BEFORE_DIR, AFTER_DIR):
                git("worktree", "remove", "--force", str(path))
    print(f"uptime at end: {uptime()}")
    print(report(pairs))
    if args.json:
        args.json.write_text(
            json.dumps({"before": before_sha, "after": after_sha, "pairs": pairs}, indent=1)
        )


def report(pairs: list[dict[str, dict[str, float]]]) -> str:
    n = len(pairs)
    lines = [
        f"| metric | before (median) | after (median) | median after/before ({n} pairs) "
        "| 95 % interval (exact, order statistics) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for metric in pairs[0]["before"]:
        before = [p["before"][metric] for p in pairs]
        after = [p["after"][metric] for p in pairs]
        ratios = [a / b for a, b in zip(after, before, strict=True)]
        low, high, cov = median_interval(ratios)
        lines.append(
            f"| {metric} | {statistics.median(before):.3g} | {statistics.median(after):.3g} "
            f"| {statistics.median(ratios):.3f} | {low:.3f}–{high:.3f} ({cov:.1%}) "
            f"| {verdict(low, high)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
