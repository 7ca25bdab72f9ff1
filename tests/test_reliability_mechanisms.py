"""The mechanisms behind docs/reliability.md, one by one: a failed drain keeps its batch,
cron jobs per deployment, record identity across "not found" errors, text the databases
refuse, enqueuers that flush at exit, the Redis persistence check, the back-off policy.
Real Redis, real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from arq import Worker
from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis
from sqlalchemy import create_engine

from evaluator.cli.health import redis_persistence
from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import intake_key
from evaluator.intake.parking import processing_prefix
from evaluator.sampling import Signals, TailRules
from evaluator.store import outbox
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.worker.app import cron_name, worker_options
from judges.llm.backoff import Backoff, backoff_s

from .conftest import make_settings
from .services import RedisServer, free_port, private_redis, private_redis_aof

__all__ = ["private_redis", "private_redis_aof"]
RULES = TailRules()


async def test_a_failed_drain_keeps_its_batch_and_retries_it_first(
    redis_url: str, tmp_path: Path
) -> None:
    client = Redis.from_url(redis_url)
    await client.rpush(intake_key("app"), *[f"id-{i}" for i in range(50)])
    # A database nobody listens on: the drain fails as it does while PostgreSQL is down.
    down = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    intake = Intake(client, key_prefix="app", queue_name="q", sampling=SamplingConfig(1.0, RULES),
                    engine=down, max_queue_depth=0)  # fmt: skip
    with pytest.raises(Exception, match="connect"):
        await intake.drain_once(20)
    parked = processing_prefix("app") + intake.worker_id
    assert await client.llen(parked) == 20  # kept, not deleted
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    intake.engine = store.engine  # the database is back
    first = await intake.drain_once(20)
    assert first.popped == 20 and await client.llen(intake_key("app")) == 30  # the parked ones
    await intake.drain_all(20)
    ids = {i.trace_id for i in outbox.list_intents(store.engine, limit=100)}
    assert ids == {f"id-{i}" for i in range(50)} and await client.llen(parked) == 0
    store.close()
    down.dispose()
    await client.aclose()


async def test_back_pressure_holds_jobs_back_as_pending_intents(
    redis_url: str, tmp_path: Path
) -> None:
    client = Redis.from_url(redis_url)
    await client.rpush(intake_key("app"), *[f"bp-{i}" for i in range(30)])
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    intake = Intake(client, key_prefix="app", queue_name="q", sampling=SamplingConfig(1.0, RULES),
                    engine=store.engine, max_queue_depth=10)  # fmt: skip
    result = await intake.drain_all(10)
    assert await client.zcard("q") == 10 and result.held_back == 20
    assert outbox.count_intents(store.engine, outbox.PENDING) == 30  # the sweeper's work
    from evaluator.outputs.metrics import render_metrics

    sync = redis.Redis.from_url(redis_url)
    text = render_metrics(sync, store, key_prefix="app", queue_name="q").decode()
    sync.close()
    assert "evaluator_intents_pending 30.0" in text
    assert "evaluator_intake_held_back_total 20.0" in text
    store.close()
    await client.aclose()


async def test_cron_jobs_run_in_each_of_two_deployments_on_one_redis(
    redis_url: str, tmp_path: Path
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    deployments = [make_settings(tmp_path / n, redis_url) for n in ("a", "b")]
    now = datetime.now(UTC)
    for settings in deployments:
        worker = Worker(**{**worker_options(settings), "handle_signals": False})
        worker._pool = await create_pool(RedisSettings.from_dsn(redis_url))
        for job in worker.cron_jobs:
            job.next_run = now  # both deployments' sweeper due in the same second
        await worker.run_cron(now, 0.5)
        queued = await worker.pool.zrange(settings.redis.queue_name, 0, -1)
        sweep = cron_name(settings, "sweep")
        assert [j for j in queued if j.decode().startswith(sweep)], (sweep, queued)
        await worker.pool.aclose()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_an_error_recorded_before_the_trace_was_known_is_replaced(
    db: str, tmp_path: Path, postgres_url: str
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}" if db == "sqlite" else postgres_url)
    base = {"trace_id": "t", "rubric": "tone", "rubric_version": "1", "scorer": "llm_rubric"}
    not_found = EvalRecord(**base, span_id="", status="error", details={"error_kind": "input"})
    assert store.upsert_record(not_found)
    assert store.upsert_record(EvalRecord(**base, span_id="s1", status="ok", score=1.0))
    assert not store.upsert_record(EvalRecord(**base, span_id="", status="error"))  # late
    rows = store.records(trace_id="t")
    assert [(r.span_id, r.status) for r in rows] == [("s1", "ok")]
    store.close()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_nul_and_lone_surrogates_never_make_a_record_unrecordable(
    db: str, tmp_path: Path, postgres_url: str
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}" if db == "sqlite" else postgres_url)
    record = EvalRecord(
        trace_id="t", span_id="s", rubric="tone", rubric_version="1", scorer="llm_rubric",
        status="error", explanation="a\x00b\ud800c", details={"raw_output": "x\x00y", "k\x00": 1},
    )  # fmt: skip
    assert store.upsert_record(record)
    (row,) = store.records(trace_id="t")
    assert row.explanation == "ab\ufffdc" and row.details == {"raw_output": "xy", "k": 1}
    outbox.record_intents(store.engine, [outbox.Intent("t", "rate", {"note": "\x00"})])
    outbox.note_failure(store.engine, "rate:t", "judge said \x00")
    (intent,) = outbox.list_intents(store.engine)
    assert intent.last_error == "judge said " and intent.signals == {"note": ""}
    store.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_short_lived_process_loses_no_enqueued_id(kind: str, redis_url: str) -> None:
    prefix = f"exit-{kind}-{random.getrandbits(32)}"
    body = {
        "sync": f"""
            from evaluator.intake.enqueue import SyncTraceEnqueuer
            e = SyncTraceEnqueuer({redis_url!r}, key_prefix={prefix!r}, linger_ms=60_000)
            for i in range(1000):
                e.enqueue(f"t{{i}}", latency_ms=float("nan"))
            """,
        "async": f"""
            import asyncio
            from evaluator.intake.enqueue import TraceEnqueuer
            async def main():
                e = TraceEnqueuer({redis_url!r}, key_prefix={prefix!r}, linger_ms=60_000)
                for i in range(1000):
                    e.enqueue(f"t{{i}}", cost_usd=float("inf"))
            asyncio.run(main())
            """,
    }[kind]
    subprocess.run([sys.executable, "-c", textwrap.dedent(body)], check=True, timeout=60,
                   capture_output=True)  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    entries = client.lrange(intake_key(prefix), 0, -1)
    client.delete(intake_key(prefix))
    client.close()
    assert entries == [f"t{i}".encode() for i in range(1000)]  # IDs kept, bad values dropped


def test_signal_values_out_of_range_are_refused_and_named() -> None:
    signals, refused = Signals.checked(
        error=True, cost_usd=float("inf"), latency_ms=float("nan"), feedback=-0.5
    )
    assert signals == Signals(error=True, feedback=-0.5)
    assert refused == ["cost_usd", "latency_ms"]
    assert Signals.from_wire({"l": float("nan"), "c": -1, "f": 1e300}) == Signals()


async def test_health_reports_redis_persistence(
    private_redis: RedisServer, private_redis_aof: RedisServer
) -> None:
    for server, expected in ((private_redis, "off"), (private_redis_aof, "aof")):
        client = Redis.from_url(server.url)
        report = await redis_persistence(client)
        await client.aclose()
        assert report["persistence"] == expected
        assert ("warning" in report) == (expected != "aof")


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_s(n, base=1.0, cap=8.0, rng=rng) for n in range(1, 8)]
    for n, d in enumerate(delays, start=1):
        high = min(8.0, 2 ** (n - 1))
        assert high / 2 <= d <= high
    b = Backoff(base=0.5, cap=2.0)
    assert max(b.next() for _ in range(10)) <= 2.0
    b.reset()
    assert b.next() <= 0.5


def test_retry_reruns_error_records_by_rubric_kind_and_time(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from evaluator.cli.main import main

    from .conftest import TONE_RUBRIC, write_rubric

    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    store = Store(settings.database.url)
    for trace, kind in (("down", "judge_unavailable"), ("bad", "input")):
        store.upsert_record(EvalRecord(trace_id=trace, span_id="s", rubric="tone",
                                       rubric_version="1", scorer="llm_rubric", status="error",
                                       details={"error_kind": kind}))  # fmt: skip
    argv = ["--settings", str(tmp_path / "settings.toml"), "retry", "--errors", "--rubric", "tone"]
    assert main([*argv, "--kind", "judge_unavailable", "--since", "2000-01-01"]) == 0
    assert main([*argv, "--until", "2000-01-01"]) == 0  # nothing that old
    assert "re-enqueued 1 error" in capsys.readouterr().out
    pending = outbox.list_intents(store.engine, status=outbox.PENDING)
    assert [i.trace_id for i in pending] == ["down"]
    client = redis.Redis.from_url(redis_url)
    assert client.zcard(settings.redis.queue_name) == 1
    client.close()
    store.close()


async def test_a_judge_outage_past_the_jobs_tries_is_postponed_not_recorded(
    tmp_path: Path, redis_url: str
) -> None:
    import httpx
    import respx

    from evaluator.config.rubrics import load_rubrics
    from evaluator.intake.drain import build_intake
    from evaluator.intake.enqueue import TraceEnqueuer
    from evaluator.intake.sweeper import sweep
    from evaluator.sources.ingest import ingest_traces
    from evaluator.worker.app import run_burst
    from evaluator.worker.runtime import sampling_config

    from .conftest import JUDGE_URL, TONE_RUBRIC, rag_trace, write_rubric
    from .test_worker_e2e import JUDGE, verdict

    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(tmp_path, redis_url, judge={**JUDGE, "cache_ttl_s": 0},
                             worker={"max_tries": 1, "job_timeout_s": 5})  # fmt: skip
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace("t")])
    enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
    enq.enqueue("t")
    await enq.aclose()
    with respx.mock(base_url=JUDGE_URL) as mock:
        mock.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
        await run_burst(settings)
    (intent,) = outbox.list_intents(store.engine)
    assert intent.status == outbox.PENDING and intent.attempts == 0  # not towards dead letter
    assert "unreachable" in intent.last_error and store.records() == []
    # The judge is back: the sweeper re-creates the job once the postponement (1-2 s) is over.
    client = Redis.from_url(redis_url)
    intake = build_intake(client, settings, engine=store.engine,
                          sampling=sampling_config(settings, load_rubrics(settings.rubrics.path)))  # fmt: skip
    deadline = asyncio.get_running_loop().time() + 60  # generous: 1-2 s on an idle machine
    while not (await sweep(intake, store.engine, stale_after=timedelta(0),
                           dead_after_attempts=10)).reenqueued:  # fmt: skip
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    await client.aclose()
    with respx.mock(base_url=JUDGE_URL) as mock:
        mock.post("/chat/completions").mock(return_value=verdict(4))
        await run_burst(settings)
    assert [(r.trace_id, r.status) for r in store.records()] == [("t", "ok")]
    store.close()


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_enqueued_before_ingest_then_again_leaves_one_record_each(
    db: str, tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    import respx

    from .conftest import JUDGE_URL, TONE_RUBRIC, rag_trace, write_rubric
    from .test_worker_e2e import JUDGE, evaluate, records, verdict

    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if db == "sqlite" else postgres_url
    settings = make_settings(tmp_path, redis_url, judge=JUDGE, database={"url": url})
    ids = [f"early{i}" for i in range(5)]
    with respx.mock(base_url=JUDGE_URL) as mock:
        # The judge's reasoning carries a NUL, which PostgreSQL refuses in text and JSON.
        mock.post("/chat/completions").mock(return_value=verdict(4, "fine\x00 and polite"))
        await evaluate(settings, [], ids=ids)  # not ingested yet: "not found" errors
        assert {(r.span_id, r.status) for r in records(settings)} == {("", "error")}
        await evaluate(settings, [rag_trace(t) for t in ids])  # ingested, enqueued again
    rows = records(settings)
    assert sorted(r.trace_id for r in rows) == ids  # 5 rows, not 10 (or 25)
    assert {r.status for r in rows} == {"ok"} and all(r.span_id for r in rows)
    assert all("\x00" not in (r.explanation or "") for r in rows)
