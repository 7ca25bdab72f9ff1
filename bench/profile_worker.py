"""Where a worker process spends its CPU per evaluation (issue 7 §3 follow-up).

    python -m bench.profile_worker                  # 600 cases, judge latency 0 ms, 1 worker
    python -m bench.profile_worker --raw bench/results/profile_worker.txt
    python -m bench.profile_worker --rubrics combined3   # the three RAG rubrics, one call

One real `python -m evaluator.cli.main --settings FILE worker` process on PostgreSQL and Redis
db 13 (bench.multiworker), judge latency 0 ms, the faithfulness (judge) + answer relevance
rubrics of bench/throughput.py, shipped worker.max_jobs / judge.max_concurrency, reply cache
off. First `--plain` unprofiled runs give the worker's CPU ms per evaluation (utime+stime
from /proc over first enqueue → all intents done); then py-spy attaches to the ready worker
(`py-spy record --pid … --format raw --gil`: only the thread holding the GIL is sampled,
i.e. Python CPU time; without --gil py-spy counts pool threads blocked in queue/socket waits
as busy and over-counts ~4×), is stopped when
every intent is done, and its stacks are summarised: CPU ms per evaluation inclusive by
component (a sample counts for a component when any frame of its stack is in it) and by
function, and the top leaf (self) functions.
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from evaluator.config.settings import Settings

from .multiworker import DEFAULT_PG, DEFAULT_REDIS, REPO, Judge, WorkerRun, pg_database
from .report import Summary, command_line, fmt, machine, table
from .throughput import RUBRICS, load_traces

# --rubrics: the evaluated rubric set (a trace = all of them); "judge2" is §2's.
_RAG = ("faithfulness", "answer_relevance", "context_relevance")
RUBRIC_SETS = {
    "judge2": {s: "judge" for s in _RAG[:2]},
    "judge3": {s: "judge" for s in _RAG},
    "combined3": {s: "combined" for s in _RAG},
}


def use_rubric_set(name: str) -> None:
    """Rewrite bench.throughput.RUBRICS in place (bench.multiworker writes it per run)."""
    RUBRICS.clear()
    for scorer, method in RUBRIC_SETS[name].items():
        RUBRICS[scorer] = (
            f'name = "{scorer}"\nversion = "bench"\nscorer = "{scorer}"\nmethod = "{method}"\n'
            "pass_threshold = 0.6\n[sampling]\nrate = 1.0\n"
        )


# Components, first match wins for "exclusive" attribution of a leaf; inclusive counts any.
COMPONENTS: list[tuple[str, str]] = [
    ("openai SDK (request build, transform, response parse)", r"^openai/"),
    (
        "HTTP client (httpx, aiohttp, httpcore)",
        r"^(httpx|httpcore|h11|anyio|aiohttp|httpx_aiohttp|yarl|multidict)/",
    ),
    ("pydantic (validation, schema, serialisation)", r"^(pydantic|pydantic_core)/"),
    ("SQLAlchemy / SQLModel", r"^(sqlalchemy|sqlmodel)/"),
    ("psycopg (PostgreSQL driver)", r"^psycopg"),
    ("arq (job loop)", r"^arq/"),
    ("redis-py", r"^redis/"),
    ("judges/ (our scorers, prompts, client)", r"^judges/"),
    ("evaluator/ (our pipeline, store, outbox, intake)", r"^evaluator/"),
    ("json (stdlib)", r"^json/"),
    ("asyncio (event loop, to_thread)", r"^(asyncio|concurrent|threading|selectors)"),
    ("logging", r"^logging/"),
]

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+):(?P<line>\d+)\)$")


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = []
        for raw in stack.split(";"):
            m = FRAME.match(raw)
            frames.append((m["func"], m["file"]) if m else (raw, ""))
        stacks.append((frames, int(count)))
    return stacks


def norm_file(file: str) -> str:
    # py-spy prints paths relative to sys.path entries where it can; keep the package part.
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file


def summarise(stacks: list[tuple[list[tuple[str, str]], int]], rate: int, n: int) -> str:
    total = sum(c for _, c in stacks)
    ms = 1000 / rate / n  # ms of CPU per evaluation per sample

    incl_comp: collections.Counter[str] = collections.Counter()
    incl_func: collections.Counter[str] = collections.Counter()
    self_func: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        files = [norm_file(f) for _, f in frames]
        for name, pattern in COMPONENTS:
            if any(re.search(pattern, f) for f in files):
                incl_comp[name] += count
        seen = set()
        for (func, _), f in zip(frames, files, strict=True):
            key = f"{f.rsplit('.py', 1)[0].replace('/', '.')}.{func}"
            if key not in seen:
                seen.add(key)
                incl_func[key] += count
        func, _ = frames[-1]
        self_func[f"{files[-1].rsplit('.py', 1)[0].replace('/', '.')}.{func}"] += count

    def rows(counter: collections.Counter[str], k: int) -> list[list[str]]:
        return [[name, fmt(c * ms), f"{c / total:.0%}"] for name, c in counter.most_common(k)]

    ours = [(k, c) for k, c in incl_func.items() if k.startswith(("judges.", "evaluator."))]
    ours_counter = collections.Counter(dict(ours))
    out = [
        f"py-spy: {total} GIL-holding samples at {rate} Hz over {n} evaluations = "
        f"{fmt(total * ms)} CPU ms / evaluation (all threads)\n",
        "By component (inclusive: a sample counts for each component on its stack):\n",
        table(["component", "CPU ms / eval", "share"], rows(incl_comp, 20)),
        "\nOur functions (inclusive):\n",
        table(["function", "CPU ms / eval", "share"], rows(ours_counter, 25)),
        "\nAll functions (inclusive), top 40:\n",
        table(["function", "CPU ms / eval", "share"], rows(incl_func, 40)),
        "\nLeaf (self) functions, top 25:\n",
        table(["function", "CPU ms / eval", "share"], rows(self_func, 25)),
    ]
    return "\n".join(out)


def paired(run, baseline: Path, pairs: int, n: int) -> None:  # type: ignore[no-untyped-def]
    """A/B: the baseline checkout's worker and this tree's take turns (the order flipping
    each pair), so that the machine's load moves both alike; CPU ms per evaluated trace."""
    base: list[float] = []
    new: list[float] = []
    for i in range(pairs):
        for side in ("base", "new") if i % 2 == 0 else ("new", "base"):
            r = run(repo=baseline.resolve() if side == "base" else REPO)
            (base if side == "base" else new).append(r.worker_cpu_s / n * 1000)
            print(
                f"  {side}: {fmt((base if side == 'base' else new)[-1])} CPU ms/trace",
                file=sys.stderr,
            )
    ratios = sorted(b / a for a, b in zip(base, new, strict=True))

    def spread(values: list[float]) -> str:
        return f"{fmt(statistics.median(values))} ms ({fmt(min(values))}–{fmt(max(values))})"

    print(f"baseline {baseline}: {spread(base)}")
    print(f"this tree: {spread(new)}")
    ratio = statistics.median(new) / statistics.median(base)
    print(
        f"this ÷ baseline: ratio of medians {ratio:.2f}, "
        f"median of pair ratios {statistics.median(ratios):.2f} ({pairs} pairs)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=600)
    p.add_argument("--plain", type=int, default=2, help="unprofiled runs for the CPU baseline")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--jobs", type=int, default=Settings().worker.max_jobs)
    p.add_argument("--judge-concurrency", type=int, default=Settings().judge.max_concurrency)
    p.add_argument("--redis-url", default=DEFAULT_REDIS)
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument(
        "--no-gil",
        dest="gil",
        action="store_false",
        help="sample every running thread, not only the one holding the GIL (py-spy "
        "then counts threads blocked in psycopg/queue waits as busy)",
    )
    p.add_argument("--raw", type=Path, help="keep py-spy's raw (collapsed) stacks here")
    p.add_argument(
        "--baseline",
        type=Path,
        help="a checkout to compare with: --plain paired runs, baseline and this tree taking "
        "turns (ratio of medians and median of per-pair ratios); no py-spy",
    )
    p.add_argument("--rubrics", choices=sorted(RUBRIC_SETS), default="judge2")
    p.add_argument("--latency", default="0", help="judge latency spec, ms (bench/judge_server)")
    args = p.parse_args(argv)
    use_rubric_set(args.rubrics)
    logging.basicConfig(level=logging.WARNING)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        p.error("py-spy missing: pip install py-spy")

    print(f"$ {command_line()}")
    print(f"machine: {machine()}\n")
    traces = load_traces(args.cases)
    n = len(traces)
    judge = Judge.start(latency=args.latency)

    def run(on_started=None, on_done=None, repo=REPO):  # type: ignore[no-untyped-def]
        with pg_database(args.pg_url, tag="bench_prof") as db_url:
            result = WorkerRun(
                traces,
                repo=repo,
                workers=1,
                redis_url=args.redis_url,
                db_url=db_url,
                judge_url=judge.url,
                max_jobs=args.jobs,
                judge_concurrency=args.judge_concurrency,
            ).run(on_started=on_started, on_done=on_done)
        # A run whose jobs failed is cheap and wrong: count it only when every trace has an
        # ok record for every rubric.
        expected = n * len(RUBRICS)
        if result.records != {"ok": expected} or result.record_rows != expected:
            raise SystemExit(
                f"{repo}: expected {expected} ok records, got {result.records} "
                f"({result.record_rows} rows); the worker's log says why"
            )
        return result

    try:
        if args.baseline is not None:
            paired(run, args.baseline, args.plain, n)
            return
        plain = []
        for _ in range(args.plain):
            r = run()
            plain.append((r.worker_cpu_s / n * 1000, n / r.elapsed_s))
            print(
                f"  plain: {fmt(plain[-1][0])} CPU ms/eval, {fmt(plain[-1][1])} evals/s",
                file=sys.stderr,
            )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "pyspy.txt"
            spy: list[subprocess.Popen[bytes]] = []

            def start(pids: list[int]) -> None:
                spy.append(
                    subprocess.Popen(
                        [
                            pyspy,
                            "record",
                            "--pid",
                            str(pids[0]),
                            "--format",
                            "raw",
                            "-r",
                            str(args.rate),
                            "-o",
                            str(out),
                            *(["--gil"] if args.gil else []),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                )
                import time

                time.sleep(1.0)  # let py-spy attach before the first enqueue

            def stop(_pids: list[int]) -> None:
                spy[0].send_signal(signal.SIGINT)
                _, err = spy[0].communicate(timeout=30)
                if not out.exists():
                    raise RuntimeError(f"py-spy wrote nothing: {err.decode()[-2000:]}")

            r = run(on_started=start, on_done=stop)
            profiled = r.worker_cpu_s / n * 1000
            if args.raw:
                args.raw.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(out, args.raw)
            stacks = parse(out)
    finally:
        judge.stop()
    s = Summary.of([c for c, _ in plain]) if plain else None
    e = Summary.of([x for _, x in plain]) if plain else None
    if s and e:
        print(
            f"worker CPU per evaluation, unprofiled ({len(plain)} runs, median, min–max): "
            f"{fmt(s.median)} ms ({fmt(s.low)}–{fmt(s.high)}); {fmt(e.median)} evals/s "
            f"({fmt(e.low)}–{fmt(e.high)})"
        )
    print(
        f"profiled run (/proc): {fmt(profiled)} CPU ms / evaluation; {n} cases, "
        f"judge latency {args.latency} ms, max_jobs {args.jobs}, judge.max_concurrency "
        f"{args.judge_concurrency}, PostgreSQL\n"
    )
    print(summarise(stacks, args.rate, n))


if __name__ == "__main__":
    main()
