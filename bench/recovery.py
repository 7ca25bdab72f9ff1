"""Recovery after back-pressure (issue 26 §2): one `evaluator worker` process behind a small
`worker.max_queue_depth`, a judge that hangs, a backlog held back, then a healthy judge.

One run, one worker process, one loopback judge, one Redis db, one SQLite file:
1. no fault: `traces` IDs enqueued, timed from the first push until every intent is done
   (the worker's no-fault rate, behind the same bound);
2. the judge hangs (each call waits on an event the run sets later): `traces` more IDs
   enqueued; the intake queues up to the bound and holds the rest; the run waits until the
   intake has drained every ID (each is a job or held) and the judge holds calls;
3. the event is set (the judge answers those calls and every later one at once): timed from
   then until every backlog intent is done (the recovery rate).
Throughout, a thread samples the queue every 10 ms (one Lua call returning every queued job's
payload) and records its depth in traces and the held set's size.

    python -m bench.recovery [--traces 240] [--bound 20] [--per-job 8] [--runs 3]

Only loopback traffic (Redis on 127.0.0.1, the judge on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from evaluator.intake.backlog import held_key
from evaluator.intake.drain import stats_key
from evaluator.intake.enqueue import SyncTraceEnqueuer
from evaluator.intake.jobs import EVALUATE_BATCH_JOB, EVALUATE_JOB

DEFAULT_REDIS = "redis://127.0.0.1:6379/13"

RUBRIC = """
name = "tone"
version = "1"
scorer = "llm_rubric"
pass_threshold = 0.75
[sampling]
rate = 1.0
[scale]
min = 1
max = 5
[llm_rubric]
criteria = "Is the answer polite and direct?"
steps = ["Read the answer.", "Score it."]
inputs = ["question", "answer"]
"""

# Every queued job's payload, read atomically (a job cannot finish between two reads).
_QUEUE_LUA = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = redis.call('GET', 'arq:job:' .. id) or ''
end
return out
"""


class GateJudge:
    """An OpenAI-compatible judge on 127.0.0.1. After `hang()` every call waits until
    `release()` (then it and every later call answers at once)."""

    def __init__(self) -> None:
        self.calls = 0
        self.held = 0  # calls waiting on the gate now
        self._hanging = False
        self._released = threading.Event()
        self._lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with judge._lock:
                    judge.calls += 1
                    wait = judge._hanging
                    judge.held += wait
                if wait:
                    judge._released.wait()
                    with judge._lock:
                        judge.held -= 1
                content = json.dumps({"reasoning": "stub", "score": 4})
                body = json.dumps(
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion",
                        "created": 1_700_000_000,
                        "model": "judge-model",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 120, "completion_tokens": 30,
                                  "total_tokens": 150},
                    }
                ).encode()  # fmt: skip
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the worker is gone

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hang(self) -> None:
        with self._lock:
            self._hanging = True

    def release(self) -> None:
        with self._lock:
            self._hanging = False
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def traces_in(payloads: list[bytes]) -> tuple[int, int]:
    """Traces carried by these arq job payloads (evaluation jobs only), and how many of them
    are batch members handed on to jobs of their own (a single job carrying its tries)."""
    total = singles = 0
    for raw in payloads:
        if not raw:
            continue  # gone between ZRANGE and GET cannot happen in one script; kept safe
        job = json.loads(raw)
        if job["f"] == EVALUATE_BATCH_JOB:
            total += len(job["a"][0])
        elif job["f"] == EVALUATE_JOB:
            total, singles = total + 1, singles + (len(job["a"]) > 3)
    return total, singles


@dataclass
class Sampler:
    """Samples the queue's depth in traces and the held set's size every 10 ms."""

    client: redis.Redis
    queue: str
    held: str
    depths: list[int] = field(default_factory=list)
    singles: list[int] = field(default_factory=list)
    helds: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._script = self.client.register_script(_QUEUE_LUA)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        depth, singles = traces_in(self._script(keys=[self.queue]))
        self.depths.append(depth)
        self.singles.append(singles)
        self.helds.append(int(self.client.zcard(self.held)))
        return depth

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.01)  # the sampling interval (nothing waits on it)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Result:
    traces: int
    bound: int
    per_job: int
    nofault_s: float = 0.0
    recovery_s: float = 0.0
    max_depth: int = 0  # traces in the queue, the most any sample saw
    samples: int = 0
    max_held: int = 0  # traces held back at once, the most any sample saw
    max_singles: int = 0  # traces in jobs of their own (handed on), the most any sample saw
    released: int = 0  # held traces the intake loop queued (stats `released`)
    held_back: int = 0  # traces held back by the intake (stats `held_back`)
    records: dict[str, int] = field(default_factory=dict)  # status -> count
    distinct_traces: int = 0
    judge_calls: int = 0
    worker_log: str = ""

    @property
    def nofault_rate(self) -> float:
        return self.traces / self.nofault_s

    @property
    def recovery_rate(self) -> float:
        return self.traces / self.recovery_s

    @property
    def ratio(self) -> float:
        return self.recovery_rate / self.nofault_rate

    def line(self) -> str:
        return (
            f"no-fault {self.nofault_rate:7.1f} traces/s ({self.nofault_s:.2f} s), recovery "
            f"{self.recovery_rate:7.1f} traces/s ({self.recovery_s:.2f} s), ratio "
            f"{self.ratio:.2f}; max depth {self.max_depth} traces (bound {self.bound} + one "
            f"batch {self.per_job}) over {self.samples} samples; max held {self.max_held}, "
            f"released {self.released}, handed on (most at once) {self.max_singles}"
        )


def _trace(trace_id: str, n: int) -> dict[str, Any]:
    # Distinct answers: identical prompts would be served from the judge reply cache.
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.input.messages": [
            {"role": "user", "parts": [{"type": "text", "content": "What is the capital?"}]}
        ],
        "gen_ai.output.messages": [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": f"Paris, answer {n}."}],
                "finish_reason": "stop",
            }
        ],
    }
    return {
        "trace_id": trace_id,
        "attributes": {"prompt.version": "v1", "feature": "qa"},
        "spans": [
            {
                "span_id": f"{trace_id}-c",
                "name": "chat",
                "status": "ok",
                "start_time": "2026-01-01T00:00:00Z",
                "end_time": "2026-01-01T00:00:01Z",
                "attributes": chat,
            }
        ],
    }


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "evaluator.cli.main", *args]


def _done(db: Path, prefix: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute(
            "SELECT count(*) FROM eval_intents WHERE status = 'done' AND trace_id LIKE ?",
            (f"{prefix}%",),
        ).fetchone()
    return int(row[0])


def _until(what: str, check: Any, deadline_s: float) -> float:
    """Poll `check()` until true; the time it became true."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return time.monotonic()
        time.sleep(0.005)  # the polling interval (the state decides, not this wait)
    raise TimeoutError(f"not within {deadline_s:.0f} s: {what}")


@contextmanager
def _worker(settings: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "EVALUATOR_SETTINGS": str(settings), "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(_command("worker"), env=env, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(
    redis_url: str,
    workdir: Path,
    *,
    traces: int = 240,
    bound: int = 20,
    per_job: int = 8,
    max_jobs: int = 8,
    hand_on: bool = False,
    deadline_s: float = 300.0,
) -> Result:
    """One run of the three phases (see the module's docstring). `hand_on`: the judge's
    calls time out (2 s) while it hangs, so batch members are retried in jobs of their own;
    the judge is released once the queue holds such a job. Else the hang ends before any
    client timeout (30 s)."""
    prefix = f"rec{uuid.uuid4().hex[:8]}"
    queue = f"{prefix}:queue"
    db = workdir / "evals.db"
    (workdir / "rubrics").mkdir(parents=True, exist_ok=True)
    (workdir / "rubrics" / "tone.toml").write_text(RUBRIC)
    judge = GateJudge()
    settings = workdir / "settings.toml"
    settings.write_text(
        f'[redis]\nurl = "{redis_url}"\nkey_prefix = "{prefix}"\nqueue_name = "{queue}"\n'
        f'[database]\nurl = "sqlite:///{db}"\n'
        f'[rubrics]\ndir = "{workdir / "rubrics"}"\n'
        f'[judge]\nbase_url = "{judge.url}"\nmodel = "gpt-4o-mini"\nmax_retries = 0\n'
        f"timeout_s = {2 if hand_on else 30}\n"
        f"[worker]\nmax_queue_depth = {bound}\ntraces_per_job = {per_job}\n"
        f"max_jobs = {max_jobs}\njob_timeout_s = {10 if hand_on else 61}\n"
        "trace_not_found_tries = 2\n"
    )
    ids = {p: [f"{p}{i:04d}" for i in range(traces)] for p in ("a", "b")}
    docs = workdir / "traces.jsonl"
    every = ["w0000", *ids["a"], *ids["b"]]
    docs.write_text("".join(json.dumps(_trace(t, n)) + "\n" for n, t in enumerate(every)))
    env = {**os.environ, "EVALUATOR_SETTINGS": str(settings), "HF_HUB_OFFLINE": "1"}
    subprocess.run(_command("ingest", str(docs)), env=env, check=True, capture_output=True)
    client = redis.Redis.from_url(redis_url)
    result = Result(traces=traces, bound=bound, per_job=per_job)
    enqueuer = SyncTraceEnqueuer(redis_url, key_prefix=prefix)
    try:
        sampler = Sampler(client, queue, held_key(prefix))
        with _worker(settings, workdir / "worker.log"), sampler as s:
            # Warm-up: the worker is up and has judged once.
            enqueuer.enqueue("w0000")
            enqueuer.flush()
            _until("the warm-up trace", lambda: _done(db, "w") == 1, deadline_s)

            start = time.monotonic()
            enqueuer.enqueue_many(ids["a"])
            enqueuer.flush()
            end = _until("the no-fault traces", lambda: _done(db, "a") == traces, deadline_s)
            result.nofault_s = end - start

            judge.hang()
            enqueuer.enqueue_many(ids["b"])
            enqueuer.flush()

            def held_back() -> bool:
                received = int(client.hget(stats_key(prefix), "received") or 0)
                retried = not hand_on or any(s.singles)
                return received == 2 * traces + 1 and judge.held > 0 and retried

            _until("the backlog held back", held_back, deadline_s)
            start = time.monotonic()
            judge.release()
            end = _until("the backlog", lambda: _done(db, "b") == traces, deadline_s)
            result.recovery_s = end - start
            s.sample()
        result.max_depth, result.samples = max(s.depths), len(s.depths)
        result.max_held, result.max_singles = max(s.helds), max(s.singles)
        stats = {k.decode(): int(v) for k, v in client.hgetall(stats_key(prefix)).items()}
        result.released, result.held_back = stats.get("released", 0), stats.get("held_back", 0)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT status, count(*) FROM eval_records GROUP BY status")
            result.records = {str(k): int(v) for k, v in rows}
            (distinct,) = conn.execute("SELECT count(DISTINCT trace_id) FROM eval_records")
            result.distinct_traces = int(distinct[0])
        result.judge_calls = judge.calls
    finally:
        enqueuer.close()
        judge.close()
        result.worker_log = (workdir / "worker.log").read_text(errors="replace")
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--redis", default=DEFAULT_REDIS)
    p.add_argument("--traces", type=int, default=240)
    p.add_argument("--bound", type=int, default=20)
    p.add_argument("--per-job", type=int, default=8)
    p.add_argument("--max-jobs", type=int, default=8)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--hand-on", action="store_true", help="the hang outlasts client timeouts")
    args = p.parse_args(argv)
    ratios = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            r = run(args.redis, Path(tmp), traces=args.traces, bound=args.bound,
                    per_job=args.per_job, max_jobs=args.max_jobs,
                    hand_on=args.hand_on)  # fmt: skip
        ratios.append(r.ratio)
        print(f"run {n + 1}: {r.line()}", flush=True)
    ratios.sort()
    print(f"ratio recovery / no-fault: median {ratios[len(ratios) // 2]:.2f}, min {ratios[0]:.2f}")


if __name__ == "__main__":
    main()
