"""Dependencies fail under real worker processes: PostgreSQL stopped mid-intake, Redis killed
(-9) and restarted, Redis with AOF stopped by SIGTERM, NaN signals and poisoned entries, the
judge refusing connections and coming back.

Each test asserts the invariant exactly: every enqueued and sampled trace (rate 1.0) ends with
one record per rubric version, none lost, none duplicated, no error record, nothing pending
after the sweeper ran. Waiting polls SQL with a deadline. Small counts in CI; set
EVALUATOR_FAULTS_LARGE=1 for the figures in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Settings
from evaluator.intake.drain import build_intake
from evaluator.intake.enqueue import SyncTraceEnqueuer, intake_key
from evaluator.intake.parking import quarantine_key
from evaluator.intake.sweeper import sweep
from evaluator.sources.ingest import ingest_traces
from evaluator.store import outbox
from evaluator.store.store import Store
from evaluator.worker.runtime import sampling_config

from .conftest import TONE_RUBRIC, make_settings, rag_trace, write_rubric
from .judge_stub import JudgeStub
from .services import (
    PostgresCluster,
    RedisServer,
    free_port,
    private_postgres,
    private_redis,
    private_redis_aof,
)

# Imported for pytest to collect as fixtures; named here so linters see them used.
__all__ = ["private_postgres", "private_redis", "private_redis_aof"]

LARGE = os.environ.get("EVALUATOR_FAULTS_LARGE") == "1"
N = 300 if LARGE else 30
OUTAGE_S = 20.0 if LARGE else 10.0
pytestmark = pytest.mark.slow


def _settings(
    tmp_path: Path, redis_url: str, db_url: str, judge_url: str, **judge: Any
) -> Settings:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    return make_settings(
        tmp_path, redis_url, database={"url": db_url},
        judge={"model": "gpt-4o-mini", "base_url": judge_url, "max_retries": 0, "timeout_s": 2.0,
               "max_wait_s": 0.0, "cache_ttl_s": 0, **judge},
        worker={"job_timeout_s": 10, "max_jobs": 8, "max_tries": 12, "sweep_grace_s": 0,
                "intake_idle_sleep_s": 0.05},
        intake={"linger_ms": 5},
    )  # fmt: skip


class Worker:
    """`evaluator worker` as a subprocess, its output in a file (no pipe to fill or leak)."""

    def __init__(self, tmp_path: Path, name: str = "worker") -> None:
        self.log = tmp_path / f"{name}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evaluator.cli.main", "--log-level", "INFO",
             "--settings", str(tmp_path / "settings.toml"), "worker"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=self._out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[str], Worker]]:
    started: list[Worker] = []

    def start(name: str = "worker") -> Worker:
        started.append(Worker(tmp_path, name))
        return started[-1]

    yield start
    for w in started:
        w.stop()


def _ingest(settings: Settings, ids: list[str]) -> None:
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace(t, answer=f"answer of {t}") for t in ids])
    store.close()


def _state(settings: Settings) -> dict[str, Any]:
    store = Store(settings.database.url)
    try:
        rows = list(store.records(limit=100_000))
        intents = outbox.list_intents(store.engine, limit=100_000)
    finally:
        store.close()
    return {
        "rows": rows,
        "keys": [(r.trace_id, r.rubric, r.rubric_version) for r in rows],
        "statuses": {r.status for r in rows},
        "pending": sum(i.status == outbox.PENDING for i in intents),
        "intents": {i.trace_id for i in intents},
    }


def _run_sweep(settings: Settings) -> None:
    """What the cron does once a minute, now (intents older than the job timeout)."""

    async def run() -> None:
        redis = Redis.from_url(settings.redis.url)
        store = Store(settings.database.url)
        try:
            sampling = sampling_config(settings, load_rubrics(settings.rubrics.path))
            intake = build_intake(redis, settings, sampling=sampling, engine=store.engine)
            await sweep(intake, store.engine, stale_after=timedelta(seconds=10),
                        dead_after_attempts=settings.worker.dead_letter_after)  # fmt: skip
        finally:
            store.close()
            await redis.aclose()

    asyncio.run(run())


def _wait_for_records(
    settings: Settings, ids: list[str], worker: Worker, *, deadline_s: float = 120.0,
    sweep_every_s: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    """Poll SQL until every trace has its record and nothing is pending (or fail)."""
    end = time.monotonic() + deadline_s
    last_sweep = time.monotonic()
    while True:
        state = _state(settings)
        done = {k[0] for k in state["keys"]}
        if done >= set(ids) and state["pending"] == 0:
            return state
        assert worker.proc.poll() is None, f"the worker exited:\n{worker.output()}"
        if time.monotonic() > end:
            missing = sorted(set(ids) - done)[:10]
            raise AssertionError(
                f"{len(set(ids) - done)} traces without a record (e.g. {missing}), "
                f"{state['pending']} pending\n{worker.output()}"
            )
        if sweep_every_s and time.monotonic() - last_sweep > sweep_every_s:
            _run_sweep(settings)
            last_sweep = time.monotonic()
        time.sleep(0.2)


def _assert_invariant(state: dict[str, Any], ids: list[str]) -> None:
    # One record per (trace, rubric, version): none lost, none twice, no error, none pending.
    assert sorted(state["keys"]) == sorted((t, "tone", "1") for t in ids)
    assert state["statuses"] == {"ok"}, [r.explanation for r in state["rows"] if r.status != "ok"]
    assert state["pending"] == 0


def _enqueue_at(settings: Settings, ids: list[str], per_s: float, **signals: Any) -> None:
    enq = SyncTraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix,
                            linger_ms=5, retry_delay_s=0.2)  # fmt: skip
    for t in ids:
        enq.enqueue(t, **signals)
        time.sleep(1 / per_s)
    enq.close()
    assert enq.buffered == 0 and enq.stats.dropped == 0


def test_postgres_stopped_mid_intake_loses_nothing(
    tmp_path: Path, private_postgres: PostgresCluster, redis_url: str, workers: Any
) -> None:
    ids = [f"pg{i}" for i in range(N)]
    with JudgeStub() as judge:
        settings = _settings(tmp_path, redis_url, private_postgres.url, judge.url)
        _ingest(settings, ids)
        worker = workers()
        third = N // 3
        _enqueue_at(settings, ids[:third], 15)
        private_postgres.stop("immediate")  # a crash: connections die mid-statement
        stopped = time.monotonic()
        _enqueue_at(settings, ids[third : 2 * third], 15)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself
        private_postgres.start()
        _enqueue_at(settings, ids[2 * third :], 15)
        state = _wait_for_records(settings, ids, worker, sweep_every_s=15)
    _run_sweep(settings)
    _assert_invariant(_state(settings), ids)
    assert state["intents"] == set(ids)
    assert worker.proc.poll() is None


def test_redis_killed_and_restarted_workers_survive(
    tmp_path: Path, private_redis: RedisServer, workers: Any
) -> None:
    first, second = [f"a{i}" for i in range(N)], [f"b{i}" for i in range(N)]
    with JudgeStub() as judge:
        db = f"sqlite:///{tmp_path / 'evals.db'}"
        # The shared RPM limiter lives in Redis: judge calls meet the dead Redis too (this
        # once became a permanent "scorer crashed: ConnectionError" record).
        settings = _settings(tmp_path, private_redis.url, db, judge.url, rpm_limit=100_000)
        _ingest(settings, first + second)
        pool = [workers("w1"), workers("w2")]
        _enqueue_at(settings, first, 50)
        private_redis.stop(signal.SIGKILL)  # no persistence: queue, jobs and intake gone
        private_redis.start()
        _enqueue_at(settings, second, 50)
        # What reached SQL (intents) must all end evaluated; the sweeper re-creates lost jobs.
        reached = sorted(_state(settings)["intents"] | set(second))
        state = _wait_for_records(settings, reached, pool[0], sweep_every_s=3)
        assert all(w.proc.poll() is None for w in pool), [w.output() for w in pool]
    _run_sweep(settings)
    state = _state(settings)
    _assert_invariant(state, sorted(state["intents"]))
    assert set(second) <= state["intents"]


def test_redis_with_aof_stopped_by_sigterm_loses_nothing(
    tmp_path: Path, private_redis_aof: RedisServer, workers: Any
) -> None:
    ids = [f"aof{i}" for i in range(N)]
    with JudgeStub() as judge:
        db = f"sqlite:///{tmp_path / 'evals.db'}"
        settings = _settings(tmp_path, private_redis_aof.url, db, judge.url)
        _ingest(settings, ids)
        # Half enqueued with no worker running: they live only in Redis's intake list.
        _enqueue_at(settings, ids[: N // 2], 100)
        private_redis_aof.restart(signal.SIGTERM)  # fsyncs the AOF on the way down
        worker = workers()
        _enqueue_at(settings, ids[N // 2 :], 100)
        state = _wait_for_records(settings, ids, worker)
    _assert_invariant(state, ids)


def test_nan_signals_and_poisoned_entries_spoil_nothing_on_postgres(
    tmp_path: Path, private_postgres: PostgresCluster, redis_url: str, workers: Any
) -> None:
    ids = [f"nan{i}" for i in range(N)]
    with JudgeStub() as judge:
        settings = _settings(tmp_path, redis_url, private_postgres.url, judge.url)
        _ingest(settings, [*ids, "raw-nan"])
        enq = SyncTraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
        for i, t in enumerate(ids):
            bad = [{"latency_ms": float("nan")}, {"cost_usd": float("inf")},
                   {"feedback": float("-inf")}, {"latency_ms": -5.0}][i % 4]  # fmt: skip
            enq.enqueue(t, **bad)
        assert enq.stats.values_refused == N and enq.stats.accepted == N
        enq.close()
        # An older app (or anyone with write access) pushing what the drain must survive.
        import redis as sync_redis

        client = sync_redis.Redis.from_url(settings.redis.url)
        key = intake_key(settings.redis.key_prefix)
        client.rpush(key, b'raw-nan\x1f{"l":NaN,"c":Infinity}', b"\xff\xfe\x00\x1f{", b"\x00")
        worker = workers()
        state = _wait_for_records(settings, [*ids, "raw-nan"], worker)
        quarantined = client.llen(quarantine_key(settings.redis.key_prefix))
        client.close()
    _assert_invariant(state, [*ids, "raw-nan"])
    assert quarantined == 2


def test_judge_down_then_up_defers_and_completes_without_errors(
    tmp_path: Path, workers: Any, redis_url: str
) -> None:
    ids = [f"j{i}" for i in range(N)]
    port = free_port()
    db = f"sqlite:///{tmp_path / 'evals.db'}"
    settings = _settings(tmp_path, redis_url, db, f"http://127.0.0.1:{port}/v1")
    _ingest(settings, ids)
    worker = workers()
    _enqueue_at(settings, ids, 100)
    # Connection refused: every job fails its judge call and is deferred (a second attempt
    # counted), none recorded.
    end = time.monotonic() + 60
    while len(pending := _pending(settings)) < N or min(i.attempts for i in pending) < 2:
        assert time.monotonic() < end, worker.output()
        time.sleep(0.2)
    assert _state(settings)["rows"] == []
    with JudgeStub(port=port):
        state = _wait_for_records(settings, ids, worker, sweep_every_s=5)
    _assert_invariant(state, ids)


def _pending(settings: Settings) -> list[outbox.EvalIntent]:
    store = Store(settings.database.url)
    try:
        return outbox.list_intents(store.engine, status=outbox.PENDING, limit=100_000)
    finally:
        store.close()


def test_a_worker_started_while_postgres_is_down_waits_and_then_serves(
    tmp_path: Path, private_postgres: PostgresCluster, redis_url: str, workers: Any
) -> None:
    ids = [f"late{i}" for i in range(N)]
    with JudgeStub() as judge:
        settings = _settings(tmp_path, redis_url, private_postgres.url, judge.url)
        _ingest(settings, ids)
        private_postgres.stop("fast")
        worker = workers()
        _enqueue_at(settings, ids, 100)
        end = time.monotonic() + 60
        while "reconnecting" not in worker.output():  # start-up failed on the database
            assert worker.proc.poll() is None and time.monotonic() < end, worker.output()
            time.sleep(0.2)
        private_postgres.start()
        state = _wait_for_records(settings, ids, worker)
    _assert_invariant(state, ids)
