"""Harness for benchmarks that run several real worker processes (issue 7 §5, §6).

- `TimelineJudge`: the bench judge server (bench/judge_server.py) that also keeps the
  monotonic time and status of every chat call, served at `GET /timeline`; run it as
  `python -m bench.multiworker judge --rpm R --latency MS` (prints its URL like the server).
- `pg_database()`: a fresh PostgreSQL database for one run, dropped afterwards.
- `WorkerRun`: traces ingested into that database, N `python -m evaluator.cli.main --settings FILE
  worker` processes (not burst) started and waited for, IDs enqueued through the real
  `TraceEnqueuer`, then polled until every sampled trace's intent is done, then SIGTERM.

Only loopback traffic: Redis and PostgreSQL on 127.0.0.1, the judge on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge_server import JudgeServer, ServerConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# --- judge with a timeline --------------------------------------------------------------


class TimelineJudge(JudgeServer):
    """The bench judge, recording (monotonic seconds, status) of every chat call."""

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config)
        self.timeline: list[tuple[float, int]] = []

    async def _dispatch(self, method, path, body, reader):  # type: ignore[no-untyped-def]
        p = path.removeprefix("/v1")
        if method == "GET" and p == "/timeline":
            return 200, {}, json.dumps({"now": time.monotonic(), "calls": self.timeline}).encode()
        if method == "POST" and p == "/stats/reset":
            self.timeline = []
            self._window.clear()  # a fresh minute for the next run
        return await super()._dispatch(method, path, body, reader)

    async def _chat(self, request, reader):  # type: ignore[no-untyped-def]
        reply = await super()._chat(request, reader)
        self.timeline.append((time.monotonic(), reply[0] if reply else 0))
        return reply


def judge_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.multiworker judge")
    p.add_argument("--rpm", type=int, default=0)
    p.add_argument("--latency", default="0")
    args = p.parse_args(argv)

    async def serve() -> None:
        server = TimelineJudge(ServerConfig(port=0, rpm=args.rpm, latency=args.latency))
        url = await server.start()
        print(f"judge server listening on {url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@dataclass
class Judge:
    proc: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls, *, rpm: int = 0, latency: str = "0") -> Judge:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.multiworker",
                "judge",
                "--rpm",
                str(rpm),
                "--latency",
                latency,
            ],
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
        return cls(proc, line.rsplit(" ", 1)[1].strip())

    def _get(self, path: str, *, post: bool = False) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url.removesuffix("/v1") + path, method="POST" if post else "GET"
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        self._get("/stats/reset", post=True)

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def timeline(self) -> dict[str, Any]:
        return self._get("/timeline")

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


# --- databases ----------------------------------------------------------------------------


@contextlib.contextmanager
def pg_database(admin_url: str = DEFAULT_PG, tag: str = "bench") -> Iterator[str]:
    """CREATE DATABASE for one run; yields its SQLAlchemy URL; DROP ... WITH (FORCE) after."""
    import psycopg

    name = f"{tag}_{uuid.uuid4().hex[:8]}"
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_FLUSHED: set[str] = set()


def flush_redis(url: str) -> None:
    """FLUSHDB once per bench process: every run has its own key prefix, and the db may be
    shared with other users' tests (flushing it before every run wiped theirs)."""
    import redis

    if url in _FLUSHED:
        return
    _FLUSHED.add(url)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


# --- processes --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_settings(
    workdir: Path,
    *,
    redis_url: str,
    db_url: str,
    judge_url: str,
    max_jobs: int,
    judge_concurrency: int,
    rpm_limit: int = 0,
    extra: str = "",
) -> Path:
    from .throughput import RUBRICS

    rubrics = workdir / "rubrics"
    rubrics.mkdir(parents=True, exist_ok=True)
    for name, body in RUBRICS.items():
        (rubrics / f"{name}.toml").write_text(body)
    prefix = f"mw{uuid.uuid4().hex[:8]}"
    path = workdir / "settings.toml"
    path.write_text(
        f"""
[redis]
url = "{redis_url}"
key_prefix = "{prefix}"
queue_name = "{prefix}:queue"
[database]
url = "{db_url}"
[judge]
base_url = "{judge_url}"
model = "gpt-4o-mini"
max_concurrency = {judge_concurrency}
rpm_limit = {rpm_limit}
# Every reply is a fresh call (the bench measures calls, not the reply cache).
cache_ttl_s = 0
[worker]
max_jobs = {max_jobs}
[sampling]
default_rate = 1.0
[alerts]
enabled = false
[rubrics]
dir = "{rubrics}"
{extra}
"""
    )
    return path


@dataclass
class RunResult:
    n_traces: int
    workers: int
    elapsed_s: float  # first enqueue → every intent done
    worker_cpu_s: float  # all worker processes, same interval
    intents: dict[str, int]
    records: dict[str, int]
    record_rows: int
    record_distinct: int
    traces_with_all_records: int
    exit_codes: list[int | None] = field(default_factory=list)
    timed_out: bool = False


def _counts(db_url: str) -> tuple[dict[str, int], dict[str, int], int, int, int]:
    import psycopg

    conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        intents = dict(
            conn.execute("SELECT status, count(*) FROM eval_intents GROUP BY 1").fetchall()
        )
        records = dict(
            conn.execute("SELECT status, count(*) FROM eval_records GROUP BY 1").fetchall()
        )
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id, rubric, rubric_version)) "
            "FROM eval_records"
        ).fetchone()
        complete = conn.execute(
            "SELECT count(*) FROM (SELECT trace_id FROM eval_records GROUP BY trace_id "
            "HAVING count(DISTINCT rubric) = 2) t"
        ).fetchone()[0]
    return intents, records, rows, distinct, complete


class WorkerRun:
    """One run: ingest, start `workers` processes, enqueue, wait for every intent, stop."""

    def __init__(
        self,
        traces: list[dict[str, Any]],
        *,
        workers: int,
        redis_url: str,
        db_url: str,
        judge_url: str,
        max_jobs: int,
        judge_concurrency: int,
        rpm_limit: int = 0,
        extra_settings: str = "",
        wrap: list[str] | None = None,
        timeout_s: float = 600.0,
        log_dir: Path | None = None,
        repo: Path = REPO,
    ) -> None:
        self.repo = repo  # the source tree the workers run (a baseline checkout in A/B runs)
        self.traces = traces
        self.workers = workers
        self.redis_url = redis_url
        self.db_url = db_url
        self.judge_url = judge_url
        self.max_jobs = max_jobs
        self.judge_concurrency = judge_concurrency
        self.rpm_limit = rpm_limit
        self.extra = extra_settings
        self.wrap = wrap or []
        self.timeout_s = timeout_s
        self.log_dir = log_dir

    def run(self, on_started: Any = None, on_done: Any = None) -> RunResult:
        """`on_started(pids)` after the workers are ready, `on_done(pids)` before they stop."""
        from evaluator.sources.ingest import ingest_traces
        from evaluator.store import outbox  # noqa: F401  (its table joins the metadata)
        from evaluator.store.store import Store

        flush_redis(self.redis_url)
        with tempfile.TemporaryDirectory(prefix="bench-mw-") as tmp:
            settings_file = write_settings(
                Path(tmp),
                redis_url=self.redis_url,
                db_url=self.db_url,
                judge_url=self.judge_url,
                max_jobs=self.max_jobs,
                judge_concurrency=self.judge_concurrency,
                rpm_limit=self.rpm_limit,
                extra=self.extra,
            )
            store = Store(self.db_url)
            ingest_traces(store, self.traces)
            store.close()
            procs, logs = self._start(settings_file, Path(tmp))
            try:
                self._wait_ready(logs, procs)
                pids = [p.pid for p in self._measured(procs)]
                if on_started is not None:
                    on_started(pids)
                cpu0 = sum(cpu_seconds(p.pid) for p in self._measured(procs))
                t0 = time.perf_counter()
                asyncio.run(self._enqueue(settings_file))
                timed_out = not self._wait_done()
                elapsed = time.perf_counter() - t0
                cpu = sum(cpu_seconds(p.pid) for p in self._measured(procs)) - cpu0
                if on_done is not None:
                    on_done(pids)
            finally:
                codes = self._stop(procs)
                self._keep_logs(logs)
                self._clean_redis(settings_file)
        intents, records, rows, distinct, complete = _counts(self.db_url)
        return RunResult(
            n_traces=len(self.traces),
            workers=self.workers,
            elapsed_s=elapsed,
            worker_cpu_s=cpu,
            intents=intents,
            records=records,
            record_rows=rows,
            record_distinct=distinct,
            traces_with_all_records=complete,
            exit_codes=codes,
            timed_out=timed_out,
        )

    # --- pieces ---

    def _start(
        self, settings_file: Path, tmp: Path
    ) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
        procs, logs = [], []
        env = {**os.environ, "PYTHONPATH": str(self.repo)}
        for i in range(self.workers):
            log = tmp / f"worker{i}.log"
            cmd = [sys.executable, "-m", "evaluator.cli.main", "--settings", str(settings_file)]
            cmd += ["--log-level", "INFO", "worker"]
            if self.wrap:
                cmd = [*self.wrap, *cmd]
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=self.repo, stdout=out, stderr=subprocess.STDOUT, env=env
                    )
                )
            logs.append(log)
        return procs, logs

    def _measured(self, procs: list[subprocess.Popen[bytes]]) -> list[subprocess.Popen[bytes]]:
        # Under a wrapper (py-spy) the worker is the wrapper's child: measure that child.
        if not self.wrap:
            return procs
        out = []
        for p in procs:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()

            class _P:  # a pid holder
                pid = int(kids[0]) if kids else p.pid

            out.append(_P)  # type: ignore[arg-type]
        return out

    def _wait_ready(self, logs: list[Path], procs: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for p, log in zip(procs, logs, strict=True):
                if p.poll() is not None:
                    raise RuntimeError(f"worker exited early:\n{log.read_text()[-3000:]}")
            if all("worker ready" in log.read_text() for log in logs):
                return
            time.sleep(0.1)
        raise RuntimeError("workers not ready within 60 s")

    async def _enqueue(self, settings_file: Path) -> None:
        from evaluator.config.settings import load_settings
        from evaluator.intake.enqueue import TraceEnqueuer

        settings = load_settings(settings_file, environ={})
        enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
        for doc in self.traces:
            enq.enqueue(doc["trace_id"])
        await enq.aclose()

    def _wait_done(self) -> bool:
        import psycopg

        conninfo = self.db_url.replace("postgresql+psycopg://", "postgresql://")
        n = len(self.traces)
        deadline = time.monotonic() + self.timeout_s
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while time.monotonic() < deadline:
                done = conn.execute(
                    "SELECT count(*) FROM eval_intents WHERE status <> 'pending'"
                ).fetchone()[0]
                if done >= n:
                    return True
                time.sleep(0.02)
        return False

    def _stop(self, procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if self.wrap else signal.SIGTERM)
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=60))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait())
        return codes

    def _clean_redis(self, settings_file: Path) -> None:
        """Delete this run's keys (its prefix, and arq's keys of its job IDs) from Redis."""
        import redis

        from evaluator.config.settings import load_settings

        prefix = load_settings(settings_file, environ={}).redis.key_prefix
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for doc in self.traces:
            for kind in ("rate", "tail"):
                job = f"evaluate:{kind}:{doc['trace_id']}"
                keys += [f"arq:{k}:{job}" for k in ("job", "retry", "in-progress", "result")]
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()

    def _keep_logs(self, logs: list[Path]) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for log in logs:
            (self.log_dir / log.name).write_bytes(log.read_bytes())


if __name__ == "__main__":
    if sys.argv[1:2] == ["judge"]:
        judge_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m bench.multiworker judge [--rpm R] [--latency MS]")
