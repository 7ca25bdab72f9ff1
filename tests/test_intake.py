"""Worker-side intake against a real Redis: batched drain, sampling, bulk arq jobs."""

from __future__ import annotations

import redis
from redis.asyncio import Redis

from evaluator.intake.drain import Intake, SamplingConfig, stats_key
from evaluator.intake.enqueue import intake_key
from evaluator.intake.jobs import EVALUATE_JOB, job_id_for
from evaluator.intake.serialization import deserialize
from evaluator.intake.wire import encode
from evaluator.sampling import Reason, Signals, TailRules, hash_point

RULES = TailRules(on_error=True, on_negative_feedback=True, cost_above_usd=0.05, latency_above_ms=0)


def _push(url: str, entries: list[str]) -> None:
    client = redis.Redis.from_url(url)
    client.rpush(intake_key("app"), *entries)
    client.close()


async def test_drain_samples_by_rate_and_tail_rules_and_counts(redis_url: str) -> None:
    ids = [f"trace-{i}" for i in range(2000)]
    expected_rate = {t for t in ids if hash_point(t) < 0.25}
    errors = [t for t in ids if t not in expected_rate][:5]
    entries = [encode(t, Signals(error=True) if t in errors else None) for t in ids]
    _push(redis_url, [*entries, "\x1f{}", " bad id "])  # two invalid entries

    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q", sampling=SamplingConfig(0.25, RULES))
    result = await intake.drain_all(batch=300)

    assert result.popped == 2002 and result.invalid == 2
    assert result.reasons[Reason.RATE.value] == len(expected_rate)
    assert result.reasons[Reason.ERROR.value] == 5
    assert result.sampled == len(expected_rate) + 5 == result.jobs_created
    assert result.reasons[Reason.NOT_SAMPLED.value] == 2000 - result.sampled
    assert await client.zcard("q") == result.sampled
    # The job is arq's format, JSON-serialised, under an ID that says what it is.
    job_id = job_id_for(errors[0], Reason.ERROR)
    job = deserialize(await client.get(f"arq:job:{job_id}"))
    assert job["f"] == EVALUATE_JOB and job["a"] == [errors[0], {"e": True}, "tail"]
    stats = await intake.stats()
    assert (
        stats["received"] == 2002
        and stats["invalid"] == 2
        and stats["jobs_created"] == result.sampled
    )
    assert await intake.pending() == 0
    await client.aclose()


async def test_same_trace_enqueued_many_times_makes_one_job(redis_url: str) -> None:
    _push(redis_url, ["dup"] * 100)
    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q", sampling=SamplingConfig(1.0, RULES))
    result = await intake.drain_all(batch=1000)
    assert result.sampled == 100 and result.jobs_created == 1
    assert await client.zcard("q") == 1
    assert int((await client.hgetall(stats_key("app")))[b"jobs_created"]) == 1
    await client.aclose()


async def test_empty_intake_is_cheap_and_safe(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q", sampling=SamplingConfig(1.0, RULES))
    result = await intake.drain_once(batch=100)
    assert result.popped == 0 and result.jobs_created == 0
    await client.aclose()


async def test_batch_parked_by_a_dead_worker_returns_to_the_intake(redis_url: str) -> None:
    from evaluator.intake.parking import alive_prefix, processing_prefix, recover_abandoned

    client = Redis.from_url(redis_url)
    await client.rpush(processing_prefix("app") + "dead1", "a", "b", "c")
    await client.rpush(processing_prefix("app") + "live1", "x")
    await client.set(alive_prefix("app") + "live1", "1", ex=60)
    assert await recover_abandoned(client, "app") == 3
    assert await client.lrange(intake_key("app"), 0, -1) == [b"a", b"b", b"c"]
    assert await client.llen(processing_prefix("app") + "live1") == 1  # its worker is alive
    await client.aclose()


async def test_durable_drain_parks_nothing_after_it_commits(redis_url: str, tmp_path) -> None:
    from evaluator.intake.parking import processing_prefix
    from evaluator.store.outbox import list_intents
    from evaluator.store.store import Store

    _push(redis_url, [f"id-{i}" for i in range(500)])
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q", sampling=SamplingConfig(0.2, RULES),
                    engine=store.engine)  # fmt: skip
    result = await intake.drain_all(batch=100)
    intents = list_intents(store.engine, limit=10_000)
    assert len(intents) == result.sampled == await client.zcard("q")
    assert [k async for k in client.scan_iter(match=processing_prefix("app") + "*")] == []
    await client.aclose()
    store.close()


async def test_tail_rules_see_the_stored_trace_of_a_bare_id(redis_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An ID enqueued with no signals is still evaluated when the stored trace has an error,
    negative feedback or a latency past the bound; an ordinary stored trace is not."""
    from evaluator.sources.ingest import ingest_traces
    from evaluator.store.store import Store

    def trace(tid: str, **attrs: object) -> dict[str, object]:
        span = {"span_id": "c", "name": "chat", "status": attrs.pop("status", "ok"),
                "start_time": "2026-01-01T00:00:00Z",
                "end_time": attrs.pop("end", "2026-01-01T00:00:01Z"), "attributes": {}}  # fmt: skip
        return {"trace_id": tid, "attributes": attrs, "spans": [span]}

    store = Store(f"sqlite:///{tmp_path / 't.db'}")
    ingest_traces(store, [
        trace("fb", feedback=-1), trace("err", status="error"),
        trace("slow", end="2026-01-01T00:00:30Z"), trace("plain"),
    ])  # fmt: skip
    rules = TailRules(latency_above_ms=15_000)
    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q",
                    sampling=SamplingConfig(0.0, rules), engine=store.engine)  # fmt: skip
    _push(redis_url, ["fb", "err", "slow", "plain", "never-ingested"])
    result = await intake.drain_once(100)
    await client.aclose()
    store.close()
    assert result.sampled == 3
    assert result.reasons[Reason.FEEDBACK.value] == 1
    assert result.reasons[Reason.ERROR.value] == 1
    assert result.reasons[Reason.LATENCY.value] == 1
    assert result.reasons[Reason.NOT_SAMPLED.value] == 2
