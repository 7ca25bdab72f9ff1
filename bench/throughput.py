"""Throughput and judge cost (issue 7 §3, §4): our worker vs ragas 0.4.3, same cases, one run.

    python -m bench.throughput                          # 60 cases, 0 and 300 ms, 3 rounds
    python -m bench.throughput --cases 20 --reps 1      # quicker
    python -m bench.throughput --jobs 64 --judge-concurrency 64   # our worker, wider

Cases: RAGTruth QA answers (/work/shared/data/ragtruth_qa) turned into traces by
`evaluator.sources.ragtruth.record_to_traces`. One *evaluation* = one case scored for faithfulness
AND answer relevance (ours: two eval records; ragas: two metric results).

Ours: the real worker — traces ingested into a fresh SQLite file, IDs enqueued through
`TraceEnqueuer`, then `run_burst` (intake drain + arq burst worker) with a settings file
pointing `judge.base_url` at the bench judge server; rubrics faithfulness (method judge,
one call) and answer_relevance, both at rate 1.0. Timed: `run_burst` only. Worker CPU is
this process's CPU time (all threads) during `run_burst`; the judge server and Redis run
in other processes.

Peer: ragas 0.4.3 collections metrics (Faithfulness; AnswerRelevancy, strictness 3) in
/work/venv-ragas, driven by bench/ragas_peer.py, against the same judge server, with
`--ragas-concurrency` cases in flight (default 16 = ragas's own RunConfig.max_workers).
Judge calls and tokens per evaluation come from the judge server's /stats for both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evaluator.config.settings import Settings, load_settings
from evaluator.intake.enqueue import TraceEnqueuer
from evaluator.sources.ingest import ingest_traces
from evaluator.sources.ragtruth import record_to_traces
from evaluator.store.store import Store
from evaluator.traces.cases import build_case
from evaluator.traces.model import parse_trace
from evaluator.worker.app import run_burst

from .report import Summary, command_line, fmt, machine, table

DATA = Path("/work/shared/data/ragtruth_qa/ragtruth_qa.jsonl")
RAGAS_PYTHON = Path("/work/venv-ragas/bin/python")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"

RUBRICS = {
    "faithfulness": """
name = "faithfulness"
version = "bench"
scorer = "faithfulness"
method = "judge"
pass_threshold = 0.8
[sampling]
rate = 1.0
""",
    "answer_relevance": """
name = "answer_relevance"
version = "bench"
scorer = "answer_relevance"
method = "judge"
pass_threshold = 0.6
[sampling]
rate = 1.0
""",
}


def load_traces(n: int) -> list[dict[str, Any]]:
    traces: list[dict[str, Any]] = []
    with DATA.open() as f:
        for line in f:
            traces.extend(record_to_traces(json.loads(line)))
            if len(traces) >= n:
                break
    return traces[:n]


def peer_cases(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same question/answer/contexts our scorers see, for ragas."""
    out = []
    for doc in traces:
        case = build_case(parse_trace(doc))
        out.append(
            {
                "question": case.question,
                "answer": case.answer,
                "contexts": [c.text for c in case.contexts],
            }
        )
    return out


# --- processes ------------------------------------------------------------------------


def start_judge(latency: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.judge_server", "--port", "0", "--latency", latency],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"judge server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def judge_stats(url: str, *, reset: bool = False) -> dict[str, Any]:
    base = url.removesuffix("/v1")
    req = urllib.request.Request(
        base + ("/stats/reset" if reset else "/stats"), method="POST" if reset else "GET"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


class RagasPeer:
    def __init__(self, cases_file: Path) -> None:
        self.proc = subprocess.Popen(
            [str(RAGAS_PYTHON), str(REPO / "bench" / "ragas_peer.py"), str(cases_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            # ragas sends usage analytics by default; off, or each round waits on the network.
            env={**os.environ, "RAGAS_DO_NOT_TRACK": "true"},
        )
        ready = self._read()
        self.version = ready.get("ragas", "?")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("ragas peer exited (see its stderr above)")
        return json.loads(line)

    def run(self, base_url: str, concurrency: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"base_url": base_url, "concurrency": concurrency}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --- our side -------------------------------------------------------------------------


def our_settings(
    workdir: Path, redis_url: str, judge_url: str, jobs: int, judge_conc: int
) -> Settings:
    rubrics = workdir / "rubrics"
    rubrics.mkdir(parents=True, exist_ok=True)
    for name, body in RUBRICS.items():
        (rubrics / f"{name}.toml").write_text(body)
    prefix = f"tp{uuid.uuid4().hex[:8]}"
    (workdir / "settings.toml").write_text(
        f"""
[redis]
url = "{redis_url}"
key_prefix = "{prefix}"
queue_name = "{prefix}:queue"
[database]
url = "sqlite:///{workdir / "evals.db"}"
[judge]
base_url = "{judge_url}"
model = "gpt-4o-mini"
max_concurrency = {judge_conc}
[worker]
max_jobs = {jobs}
[sampling]
default_rate = 1.0
[rubrics]
dir = "{rubrics}"
"""
    )
    return load_settings(workdir / "settings.toml", environ={})


async def ours_round(
    traces: list[dict[str, Any]], redis_url: str, judge_url: str, jobs: int, judge_conc: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
        settings = our_settings(Path(tmp), redis_url, judge_url, jobs, judge_conc)
        store = Store(settings.database.url)
        ingest_traces(store, traces)
        enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
        for doc in traces:
            enq.enqueue(doc["trace_id"])
        await enq.close()  # close() pushes everything (flush() alone may leave a batch in flight)
        judge_stats(judge_url, reset=True)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = await run_burst(settings)
        elapsed, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stats = judge_stats(judge_url)
        statuses = store.status_counts()
        store.close()
    n = len(traces)
    ok = statuses.get("ok", 0)
    if result["jobs_complete"] != n or ok != 2 * n:
        print(f"  ours: WARNING {result} records {statuses}", file=sys.stderr)
    return {
        "evals_per_s": n / elapsed,
        "cpu_ms": cpu / n * 1000,
        "calls": stats["chat_calls"] / n,
        "prompt_tokens": stats["prompt_tokens"] / n,
        "completion_tokens": stats["completion_tokens"] / n,
        "ok_share": ok / (2 * n),
    }


def ragas_round(peer: RagasPeer, judge_url: str, n: int, concurrency: int) -> dict[str, float]:
    judge_stats(judge_url, reset=True)
    out = peer.run(judge_url, concurrency)
    stats = judge_stats(judge_url)
    if out["error_count"]:
        print(f"  ragas: {out['error_count']} errors, e.g. {out['errors'][:2]}", file=sys.stderr)
    return {
        "evals_per_s": n / out["elapsed_s"],
        "cpu_ms": out["cpu_s"] / n * 1000,
        "calls": stats["chat_calls"] / n,
        "embedding_calls": stats["embedding_calls"] / n,
        "prompt_tokens": stats["prompt_tokens"] / n,
        "completion_tokens": stats["completion_tokens"] / n,
        "ok_share": out["scores"] / (2 * n),
    }


# --- driver ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, dict[str, Summary]]:
    traces = load_traces(args.cases)
    results: dict[str, dict[str, list[float]]] = {}
    judges = {lat: start_judge(lat) for lat in args.latencies}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(peer_cases(traces), f)
    peer = RagasPeer(Path(f.name)) if not args.no_ragas else None
    try:
        for rep in range(args.reps):
            for lat, (_proc, url) in judges.items():
                # Alternate who goes first, so drift on a noisy machine hits both sides.
                sides = ["ours", "ragas"] if rep % 2 == 0 else ["ragas", "ours"]
                for side in sides:
                    if side == "ours":
                        r = asyncio.run(
                            ours_round(
                                traces, args.redis_url, url, args.jobs, args.judge_concurrency
                            )
                        )
                    elif peer is not None:
                        r = ragas_round(peer, url, len(traces), args.ragas_concurrency)
                    else:
                        continue
                    bucket = results.setdefault(f"{side}@{lat}", {})
                    for key, value in r.items():
                        bucket.setdefault(key, []).append(value)
                    print(
                        f"  round {rep + 1} {side:5s} @ {lat:>4s} ms: "
                        f"{fmt(r['evals_per_s'])} evals/s",
                        file=sys.stderr,
                    )
    finally:
        if peer is not None:
            peer.close()
        for proc, _url in judges.values():
            proc.terminate()
        os.unlink(f.name)
    return {k: {m: Summary.of(v) for m, v in d.items()} for k, d in results.items()}


def render(res: dict[str, dict[str, Summary]], args: argparse.Namespace) -> str:
    def med(key: str, metric: str) -> float | None:
        s = res.get(key, {}).get(metric)
        return s.median if s else None

    def cell(key: str, metric: str) -> str:
        s = res.get(key, {}).get(metric)
        return f"{fmt(s.median)} ({fmt(s.low)}–{fmt(s.high)})" if s else "—"

    def ratio(a: float | None, b: float | None, *, pct: bool = False) -> str:
        if a is None or not b:
            return "—"
        return f"{a / b:.0%}" if pct else f"{a / b:.2f}×"

    rows = []
    for lat in args.latencies:
        o, r = f"ours@{lat}", f"ragas@{lat}"
        rows.append(
            [
                f"evaluations/s, judge latency {lat} ms",
                cell(o, "evals_per_s"),
                cell(r, "evals_per_s"),
                ratio(med(o, "evals_per_s"), med(r, "evals_per_s")),
                "≥ 30× at 300 ms" if lat == "300" else "",
            ]
        )
    lat0 = args.latencies[0]
    o, r = f"ours@{lat0}", f"ragas@{lat0}"
    rows += [
        [
            f"process CPU ms / evaluation ({lat0} ms)",
            cell(o, "cpu_ms"),
            cell(r, "cpu_ms"),
            ratio(med(o, "cpu_ms"), med(r, "cpu_ms"), pct=True),
            "ours ≤ 1 ms",
        ],
        [
            "judge chat calls / evaluation",
            cell(o, "calls"),
            cell(r, "calls"),
            ratio(med(o, "calls"), med(r, "calls"), pct=True),
            "≤ 2",
        ],
        ["embedding calls / evaluation", "0", cell(r, "embedding_calls"), "", ""],
        [
            "prompt tokens / evaluation",
            cell(o, "prompt_tokens"),
            cell(r, "prompt_tokens"),
            ratio(med(o, "prompt_tokens"), med(r, "prompt_tokens"), pct=True),
            "≤ 50 %",
        ],
        [
            "completion tokens / evaluation",
            cell(o, "completion_tokens"),
            cell(r, "completion_tokens"),
            ratio(med(o, "completion_tokens"), med(r, "completion_tokens"), pct=True),
            "",
        ],
        ["results ok (share of 2 per case)", cell(o, "ok_share"), cell(r, "ok_share"), "", ""],
    ]
    head = ["measure (median, min–max)", "ours", "ragas 0.4.3", "ours ÷ ragas", "target"]
    note = (
        f"{args.cases} cases × {args.reps} rounds; ours: max_jobs {args.jobs}, "
        f"judge.max_concurrency {args.judge_concurrency}; ragas: {args.ragas_concurrency or 'all'} "
        "cases in flight, each running both metrics concurrently"
    )
    return table(head, rows) + "\n\n" + note


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=60)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--latencies", nargs="+", default=["0", "300"], help="judge latency specs, ms")
    p.add_argument("--redis-url", default=DEFAULT_REDIS)
    shipped = Settings()
    p.add_argument(
        "--jobs",
        type=int,
        default=shipped.worker.max_jobs,
        help=f"our worker.max_jobs (shipped default {shipped.worker.max_jobs})",
    )
    p.add_argument(
        "--judge-concurrency",
        type=int,
        default=shipped.judge.max_concurrency,
        help=f"our judge.max_concurrency (shipped default {shipped.judge.max_concurrency})",
    )
    p.add_argument("--ragas-concurrency", type=int, default=16, help="cases in flight, 0 = all")
    p.add_argument("--no-ragas", action="store_true")
    p.add_argument("--json", help="write the summaries to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("arq").setLevel(logging.WARNING)
    if not args.no_ragas and not RAGAS_PYTHON.exists():
        p.error(
            f"{RAGAS_PYTHON} missing: python3 -m venv /work/venv-ragas && "
            "/work/venv-ragas/bin/pip install 'ragas==0.4.3' 'langchain-community<0.4' 'openai<2'"
        )
    print(f"$ {command_line()}")
    print(f"machine: {machine()}\n")
    res = run(args)
    print(render(res, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {k: {m: asdict(s) for m, s in d.items()} for k, d in res.items()}, f, indent=2
            )


if __name__ == "__main__":
    main()
