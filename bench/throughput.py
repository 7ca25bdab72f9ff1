"""Throughput and judge cost (issue 7 §3, §4; issue 16 §4): our worker beside ragas,
phoenix-evals and deepeval, same cases, same loopback judge, one run.

    python -m bench.throughput                          # 60 cases, 0 and 300 ms, 3 rounds
    python -m bench.throughput --cases 20 --reps 1      # quicker
    python -m bench.throughput --peers ragas            # one peer only (--peers alone: none)
    python -m bench.throughput --jobs 64 --judge-concurrency 64   # our worker, wider

Cases: RAGTruth QA answers (/work/shared/data/ragtruth_qa) turned into traces by
`evaluator.sources.ragtruth.record_to_traces`. One *evaluation* = one case scored for faithfulness
AND answer relevance (ours: two eval records; ragas: two metric results).

Ours: the real worker — traces ingested into a fresh SQLite file, IDs enqueued through
`TraceEnqueuer`, then `run_burst` (intake drain + arq burst worker) with a settings file
pointing `judge.base_url` at the bench judge server; rubrics faithfulness (method judge,
one call) and answer_relevance, both at rate 1.0. Timed: `run_burst` only. Worker CPU is
this process's CPU time (all threads) during `run_burst`; the judge server and Redis run
in other processes. That figure includes the burst worker's start-up, which a peer's process
(started once, before its rounds) does not pay per round; so a second side of ours,
"served", is an `evaluator worker` process started before the round on a fresh PostgreSQL
database (bench.multiworker.WorkerRun, as in production), its CPU from the first enqueue to
every intent done.

Peers, each in its own venv (they pin SDKs this project cannot share; see PEERS for the
install commands) and driven by bench/NAME_peer.py over bench/peer_protocol.py: ragas 0.4.3
(Faithfulness; AnswerRelevancy, strictness 3), phoenix-evals (FaithfulnessEvaluator;
RetrievalRelevanceEvaluator — it has no answer relevance) and deepeval (FaithfulnessMetric;
AnswerRelevancyMetric), with `--peer-concurrency` cases in flight (default 16 = ragas's
RunConfig.max_workers). A peer whose venv is missing, or that fails to start, is skipped with
the reason in the report. Telemetry is switched off by each peer's own setting AND checked:
bench/peer_guard/sitecustomize.py refuses and records every non-loopback connection or name
lookup; the table reports the count. Judge calls and tokens per evaluation come from the
judge server's /stats for every side. Not part of CI (the venvs are installed by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
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
    """The same question/answer/contexts our scorers see, for the peers."""
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


@dataclass(frozen=True)
class PeerSpec:
    """A peer framework: where its venv is, how to install it, how to switch telemetry off."""

    label: str
    python: Path
    install: str
    telemetry_off: dict[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()  # credentials that would make a peer upload results


PEERS = {
    "ragas": PeerSpec(
        "ragas",
        Path("/work/venv-ragas/bin/python"),
        "python3 -m venv /work/venv-ragas && /work/venv-ragas/bin/pip install "
        "'ragas==0.4.3' 'langchain-community<0.4' 'openai<2'",
        {"RAGAS_DO_NOT_TRACK": "true"},
    ),
    "phoenix": PeerSpec(
        "phoenix-evals",
        Path("/work/venv-phoenix/bin/python"),
        "python3 -m venv /work/venv-phoenix && /work/venv-phoenix/bin/pip install "
        "arize-phoenix-evals openai",
        {"OTEL_SDK_DISABLED": "true", "PHOENIX_COLLECTOR_ENDPOINT": "http://127.0.0.1:9"},
        ("PHOENIX_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ),
    "deepeval": PeerSpec(
        "deepeval",
        Path("/work/venv-deepeval/bin/python"),
        "python3 -m venv /work/venv-deepeval && /work/venv-deepeval/bin/pip install deepeval",
        {"DEEPEVAL_TELEMETRY_OPT_OUT": "1", "DEEPEVAL_UPDATE_WARNING_OPT_IN": "0"},
        ("CONFIDENT_API_KEY", "OPENAI_API_KEY"),
    ),
}


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here: its venv is missing or its script failed to start."""


class Peer:
    """One peer process for the whole run (imported once, rounds interleave with ours)."""

    def __init__(
        self, name: str, cases_file: Path, workdir: Path, metric_set: str = "pair"
    ) -> None:
        spec = PEERS[name]
        if not spec.python.exists():
            raise PeerUnavailable(f"{spec.python} missing; install: {spec.install}")
        self.name, self.spec = name, spec
        self.guard_log = workdir / f"{name}-guard.jsonl"
        self.stderr_path = workdir / f"{name}-stderr.txt"
        env = {k: v for k, v in os.environ.items() if k not in spec.drop_env}
        env |= spec.telemetry_off
        # The guard only: the peer imports nothing from this project.
        env |= {
            "PYTHONPATH": str(REPO / "bench" / "peer_guard"),
            "PEER_GUARD_LOG": str(self.guard_log),
        }
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [
                str(spec.python),
                str(REPO / "bench" / f"{name}_peer.py"),
                str(cases_file),
                metric_set,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        try:
            ready = self._read()
        except RuntimeError as exc:
            self.close()
            raise PeerUnavailable(str(exc)) from None
        self.version = ready.get("version", "?")
        self.metrics: list[str] = ready.get("metrics", [])
        self.missing: list[str] = ready.get("missing", [])  # metrics of the set it lacks

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            tail = self.stderr_path.read_text().strip().splitlines()[-3:]
            raise RuntimeError(
                f"{self.name} peer exited {self.proc.returncode}: {' | '.join(tail)}"
            )
        return json.loads(line)

    def run(self, base_url: str, concurrency: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"base_url": base_url, "concurrency": concurrency}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._stderr.close()

    def blocked(self) -> list[dict[str, Any]]:
        """Non-loopback attempts the guard refused, exit-time ones included (after close)."""
        if not self.guard_log.exists():
            return []
        return [json.loads(line) for line in self.guard_log.read_text().splitlines() if line]


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
        await enq.aclose()  # aclose() pushes everything (flush() alone may leave a batch in flight)
        judge_stats(judge_url, reset=True)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = await run_burst(settings)
        elapsed, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stats = judge_stats(judge_url)
        statuses = store.status_counts()
        store.close()
    n = len(traces)
    ok = statuses.get("ok", 0)
    if result["traces_evaluated"] != n or ok != 2 * n:
        print(f"  ours: WARNING {result} records {statuses}", file=sys.stderr)
    return {
        "evals_per_s": n / elapsed,
        "cpu_ms": cpu / n * 1000,
        "calls": stats["chat_calls"] / n,
        "prompt_tokens": stats["prompt_tokens"] / n,
        "completion_tokens": stats["completion_tokens"] / n,
        "ok_share": ok / (2 * n),
    }


def served_round(
    traces: list[dict[str, Any]], redis_url: str, judge_url: str, jobs: int, judge_conc: int
) -> dict[str, float]:
    """Our worker as it runs in production: one `evaluator worker` process (served, not
    burst) on a fresh PostgreSQL database, started and ready before the round, like a peer's
    process; CPU = that process's from the first enqueue to every intent done."""
    from .multiworker import WorkerRun, pg_database

    with pg_database(tag="bench_tp") as db_url:
        judge_stats(judge_url, reset=True)
        run = WorkerRun(
            traces, workers=1, redis_url=redis_url, db_url=db_url, judge_url=judge_url,
            max_jobs=jobs, judge_concurrency=judge_conc,
        ).run()  # fmt: skip
        stats = judge_stats(judge_url)
    n = len(traces)
    ok = run.records.get("ok", 0)
    if run.timed_out or ok != 2 * n:
        print(f"  served: WARNING {run}", file=sys.stderr)
    return {
        "evals_per_s": n / run.elapsed_s,
        "cpu_ms": run.worker_cpu_s / n * 1000,
        "calls": stats["chat_calls"] / n,
        "prompt_tokens": stats["prompt_tokens"] / n,
        "completion_tokens": stats["completion_tokens"] / n,
        "ok_share": ok / (2 * n),
    }


def peer_round(peer: Peer, judge_url: str, n: int, concurrency: int) -> dict[str, float]:
    judge_stats(judge_url, reset=True)
    out = peer.run(judge_url, concurrency)
    stats = judge_stats(judge_url)
    if out["error_count"]:
        print(
            f"  {peer.name}: {out['error_count']} errors, e.g. {out['errors'][:2]}",
            file=sys.stderr,
        )
    return {
        "evals_per_s": n / out["elapsed_s"],
        "cpu_ms": out["cpu_s"] / n * 1000,
        "calls": stats["chat_calls"] / n,
        "embedding_calls": stats["embedding_calls"] / n,
        "prompt_tokens": stats["prompt_tokens"] / n,
        "completion_tokens": stats["completion_tokens"] / n,
        "ok_share": out["scores"] / (len(peer.metrics) * n),
        "nan_share": out["nan_scores"] / (len(peer.metrics) * n),
    }


# --- driver ---------------------------------------------------------------------------


OURS_METRICS = ["faithfulness (judge, 1 call)", "answer_relevance"]
# "ours": run_burst in this process on SQLite, its start-up included; "served": a worker
# process that was running before the round (served_round).
OUR_SIDES = ["ours", "served"]


def run(
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, Summary]], dict[str, dict[str, Any]]]:
    """Summaries per `side@latency`, and per peer: version, metrics, guard count or skip."""
    traces = load_traces(args.cases)
    results: dict[str, dict[str, list[float]]] = {}
    info: dict[str, dict[str, Any]] = {}
    judges = {lat: start_judge(lat) for lat in args.latencies}
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    cases_file = workdir / "cases.json"
    cases_file.write_text(json.dumps(peer_cases(traces)))
    peers: dict[str, Peer] = {}
    for name in args.peers:
        try:
            peers[name] = Peer(name, cases_file, workdir)
        except PeerUnavailable as exc:
            info[name] = {"label": PEERS[name].label, "skipped": str(exc)}
            print(f"  {name}: skipped — {exc}", file=sys.stderr)
    try:
        for rep in range(args.reps):
            for lat, (_proc, url) in judges.items():
                # Rotate who goes first, so drift on a noisy machine hits every side.
                sides = [*OUR_SIDES, *peers]
                sides = sides[rep % len(sides) :] + sides[: rep % len(sides)]
                for side in sides:
                    if side == "ours":
                        r = asyncio.run(
                            ours_round(
                                traces, args.redis_url, url, args.jobs, args.judge_concurrency
                            )
                        )
                    elif side == "served":
                        r = served_round(
                            traces, args.redis_url, url, args.jobs, args.judge_concurrency
                        )
                    else:
                        r = peer_round(peers[side], url, len(traces), args.peer_concurrency)
                    bucket = results.setdefault(f"{side}@{lat}", {})
                    for key, value in r.items():
                        bucket.setdefault(key, []).append(value)
                    print(
                        f"  round {rep + 1} {side:8s} @ {lat:>4s} ms: "
                        f"{fmt(r['evals_per_s'])} evals/s",
                        file=sys.stderr,
                    )
    finally:
        for name, peer in peers.items():
            peer.close()
            blocked = peer.blocked()
            info[name] = {
                "label": peer.spec.label,
                "version": peer.version,
                "metrics": peer.metrics,
                "blocked": len(blocked),
                "blocked_targets": sorted({b["target"] for b in blocked}),
            }
        for proc, _url in judges.values():
            proc.terminate()
        shutil.rmtree(workdir, ignore_errors=True)
    summaries = {k: {m: Summary.of(v) for m, v in d.items()} for k, d in results.items()}
    return summaries, info


def render(
    res: dict[str, dict[str, Summary]], info: dict[str, dict[str, Any]], args: argparse.Namespace
) -> str:
    ran = [name for name in args.peers if "skipped" not in info.get(name, {"skipped": ""})]

    def med(key: str, metric: str) -> float | None:
        s = res.get(key, {}).get(metric)
        return s.median if s else None

    def cell(key: str, metric: str) -> str:
        s = res.get(key, {}).get(metric)
        return f"{fmt(s.median)} ({fmt(s.low)}–{fmt(s.high)})" if s else "—"

    def ratios(metric: str, lat: str, *, pct: bool = False, side: str = "ours") -> str:
        ours = med(f"{side}@{lat}", metric)
        out = []
        for name in ran:
            peer = med(f"{name}@{lat}", metric)
            out.append(
                "—"
                if ours is None or not peer
                else f"{ours / peer:.0%}"
                if pct
                else f"{ours / peer:.2f}×"
            )
        return " / ".join(out)

    def row(label: str, metric: str, lat: str, target: str = "", *, pct: bool = False) -> list[str]:
        cells = [cell(f"{side}@{lat}", metric) for side in [*OUR_SIDES, *ran]]
        both = [ratios(metric, lat, pct=pct, side=side) for side in OUR_SIDES]
        return [label, *cells, *both, target]

    def per_core(lat: str) -> list[str]:
        # Evaluations per second of one core's CPU time: 1000 / CPU ms per evaluated trace.
        cells, values = [], {}
        for side in [*OUR_SIDES, *ran]:
            ms = med(f"{side}@{lat}", "cpu_ms")
            values[side] = 1000 / ms if ms else None
            cells.append(fmt(values[side]) if ms else "—")
        both = [
            " / ".join(
                f"{values[side] / values[name]:.1f}×" if values[side] and values[name] else "—"
                for name in ran
            )
            for side in OUR_SIDES
        ]
        target = "≥ 10× ragas" if lat == "300" else ""
        return [f"evaluations per core-second, {lat} ms (1000 / CPU ms)", *cells, *both, target]

    lat0 = args.latencies[0]
    ours_blank = [""] * len(OUR_SIDES)
    rows = [
        ["metrics scored per trace", " + ".join(OURS_METRICS), "the same"]
        + [" + ".join(info[name]["metrics"]) for name in ran]
        + [*ours_blank, ""]
    ]
    for lat in args.latencies:
        rows.append(row(f"evaluations/s, judge latency {lat} ms", "evals_per_s", lat))
    for lat in args.latencies:
        target = "ours ≤ 4 ms" if lat == lat0 else ""
        rows.append(
            row(f"process CPU ms / evaluated trace ({lat} ms)", "cpu_ms", lat, target, pct=True)
        )
    rows += [per_core(lat) for lat in args.latencies]
    rows += [
        row("judge chat calls / evaluated trace", "calls", lat0, "", pct=True),
        ["embedding calls / evaluated trace", "0", "0"]
        + [cell(f"{name}@{lat0}", "embedding_calls") for name in ran]
        + [*ours_blank, ""],
        row("prompt tokens / evaluated trace", "prompt_tokens", lat0, "", pct=True),
        row("completion tokens / evaluated trace", "completion_tokens", lat0, "", pct=True),
        row("results ok (share of 2 per trace)", "ok_share", lat0),
        ["non-loopback connections refused", "(not guarded)", "(not guarded)"]
        + [str(info[name]["blocked"]) for name in ran]
        + [*ours_blank, "0"],
    ]
    head = ["measure (median, min–max)", "ours, burst (SQLite, start-up incl.)"]
    head += ["ours, served worker (PostgreSQL)"]
    head += [f"{info[name]['label']} {info[name]['version']}" for name in ran]
    vs = " / ".join(ran)
    head += [f"burst ÷ {vs}", f"served ÷ {vs}"] if ran else ["ratio", "ratio"]
    head += ["target"]
    note = (
        f"{args.cases} traces × {args.reps} rounds; ours: max_jobs {args.jobs}, "
        f"judge.max_concurrency {args.judge_concurrency}; peers: "
        f"{args.peer_concurrency or 'all'} traces in flight, each running its metrics concurrently"
    )
    skipped = [
        f"- {info[name]['label']}: skipped — {info[name]['skipped']}"
        for name in args.peers
        if name not in ran
    ]
    refused = [
        f"- {info[name]['label']}: refused {', '.join(info[name]['blocked_targets'])}"
        for name in ran
        if info[name]["blocked"]
    ]
    return "\n".join([table(head, rows), "", note, *skipped, *refused])


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
    p.add_argument(
        "--peers",
        nargs="*",
        choices=sorted(PEERS),
        default=list(PEERS),
        help="peers to run beside ours (default all; none with --peers alone)",
    )
    p.add_argument(
        "--peer-concurrency",
        "--ragas-concurrency",
        type=int,
        default=16,
        help="traces in flight per peer, 0 = all",
    )
    p.add_argument("--json", help="write the summaries to this file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("arq").setLevel(logging.WARNING)
    print(f"$ {command_line()}")
    print(f"machine: {machine()}\n")
    res, info = run(args)
    print(render(res, info, args))
    if args.json:
        with open(args.json, "w") as f:
            summaries = {k: {m: asdict(s) for m, s in d.items()} for k, d in res.items()}
            json.dump({**summaries, "peers": info}, f, indent=2)


if __name__ == "__main__":
    main()
