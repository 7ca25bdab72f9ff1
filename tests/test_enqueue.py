"""App-side enqueue against a real Redis, and against an address where none answers."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
import redis

from evaluator.intake.enqueue import SyncTraceEnqueuer, TraceEnqueuer, intake_key
from evaluator.intake.wire import decode

from .polling import until


def _dead_redis_url() -> str:
    # A loopback port nobody listens on: connections are refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


async def test_async_enqueue_pushes_in_batches(redis_url: str) -> None:
    enq = TraceEnqueuer(redis_url, key_prefix="app", batch_size=100, linger_ms=5)
    for i in range(250):
        assert enq.enqueue(f"trace-{i}", latency_ms=20.0 if i == 0 else None)
    # The background flusher pushes them, without a flush() or close() from the app.
    await until(lambda: enq.stats.pushed == 250, "the flusher to push 250 IDs")
    await enq.aclose()
    client = redis.Redis.from_url(redis_url)
    entries = client.lrange(intake_key("app"), 0, -1)
    assert len(entries) == 250
    first_id, first_signals = decode(entries[0])
    assert first_id == "trace-0" and first_signals is not None and first_signals.latency_ms == 20.0
    assert decode(entries[-1]) == ("trace-249", None)
    assert enq.stats.pushed == 250 and enq.stats.dropped == 0


async def test_redis_down_never_raises_and_keeps_a_bounded_buffer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    enq = TraceEnqueuer(
        _dead_redis_url(), batch_size=10, linger_ms=1, buffer_max=50, retry_delay_s=0.01
    )
    with caplog.at_level(logging.WARNING, logger="evaluator.intake.enqueue"):
        for i in range(80):
            enq.enqueue(f"t{i}")
        await until(lambda: enq.stats.push_failures >= 1, "the flusher's first failed push")
        assert await enq.flush() is False
    assert enq.buffered == 50
    assert enq.stats.dropped == 30
    assert enq.stats.push_failures >= 1
    assert "intake unavailable" in caplog.text
    await enq.aclose()


async def test_buffered_ids_are_delivered_once_redis_is_back(redis_url: str) -> None:
    enq = TraceEnqueuer(_dead_redis_url(), key_prefix="app", buffer_max=100)
    for i in range(20):
        enq.enqueue(f"t{i}")
    assert await enq.flush() is False
    # Point the same enqueuer at a live Redis: what was kept is pushed, in order.
    await enq._redis.aclose()
    enq._redis = redis.asyncio.Redis.from_url(redis_url)
    assert await enq.flush() is True
    entries = redis.Redis.from_url(redis_url).lrange(intake_key("app"), 0, -1)
    assert [decode(e)[0] for e in entries] == [f"t{i}" for i in range(20)]
    await enq.aclose()


async def test_invalid_ids_are_counted_not_raised(redis_url: str) -> None:
    enq = TraceEnqueuer(redis_url, key_prefix="app")
    assert enq.enqueue("") is False
    assert enq.enqueue(" padded ") is False
    assert enq.enqueue("x" * 1000) is False
    assert enq.enqueue(12345) is False  # type: ignore[arg-type]
    assert enq.enqueue("fine") is True
    assert enq.stats.rejected == 4
    await enq.aclose()


def test_sync_enqueuer_flushes_from_a_thread(redis_url: str) -> None:
    enq = SyncTraceEnqueuer(redis_url, key_prefix="app", batch_size=50, linger_ms=5)
    assert enq.enqueue_many(f"s{i}" for i in range(120)) == 120
    enq.enqueue("bad", error=True, feedback=-1.0)
    enq.close()
    entries = redis.Redis.from_url(redis_url).lrange(intake_key("app"), 0, -1)
    assert len(entries) == 121
    trace_id, signals = decode(entries[-1])
    assert trace_id == "bad" and signals is not None and signals.error and signals.feedback == -1.0


def test_sync_enqueuer_with_redis_down_returns_immediately() -> None:
    enq = SyncTraceEnqueuer(_dead_redis_url(), buffer_max=10, retry_delay_s=0.01)
    for i in range(15):
        assert enq.enqueue(f"t{i}") is True
    enq.close()
    assert enq.stats.pushed == 0
    assert enq.stats.dropped >= 5


async def test_flush_waits_for_the_batch_the_flusher_has_in_flight(redis_url: str) -> None:
    enq = TraceEnqueuer(redis_url, key_prefix="app", batch_size=500, linger_ms=1)
    for i in range(20_000):
        enq.enqueue(f"t{i}")
        if i % 1000 == 0:
            await asyncio.sleep(0.002)  # let the background flusher start pushing
    assert await enq.flush() is True
    assert enq.stats.pushed == 20_000
    assert redis.Redis.from_url(redis_url).llen(intake_key("app")) == 20_000
    await enq.aclose()


async def test_labels_travel_on_the_wire_with_both_enqueuers(redis_url: str) -> None:
    from evaluator.intake.wire import decode_entry
    from evaluator.sampling import Labels

    enq = TraceEnqueuer(redis_url, key_prefix="app", linger_ms=5)
    assert enq.enqueue("a1", feature="search", tenant="acme", prompt_version="v7")
    assert enq.enqueue("a2", prompt_version="x" * 300, error=True)  # label refused, ID kept
    await enq.aclose()
    sync = SyncTraceEnqueuer(redis_url, key_prefix="app", linger_ms=5)
    assert sync.enqueue("s1", tenant="beta")
    sync.close()
    entries = redis.Redis.from_url(redis_url).lrange(intake_key("app"), 0, -1)
    decoded = [decode_entry(e) for e in entries]
    assert decoded[0][0] == "a1" and decoded[0][2] == Labels("search", "acme", "v7")
    assert decoded[1][2] is None and decoded[1][1] is not None and decoded[1][1].error
    assert decoded[2][2] == Labels(tenant="beta") and decoded[2][1] is not None
    assert enq.stats.values_refused == 1
    # An old reader's view: the labelled entry still decodes to the ID and no signals.
    assert decode(entries[2]) == ("s1", decoded[2][1]) and not decoded[2][1].error
