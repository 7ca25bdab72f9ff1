"""Adaptive concurrency against a loopback server with 2 slots that queues the rest.

The server is real HTTP on 127.0.0.1 (aiohttp), but its time is the test's: a request in a
slot needs `SERVICE` ticks, the test advances the clock one tick at a time only when the
client has reacted to everything (state, not sleeps), and a request that waited more than
`TIMEOUT` ticks is answered 408 — a timeout counted in service times, as a CPU server's
queue makes a client time out. The limiter reads the same tick clock, so every latency it
sees, and every assertion, is the same on any machine.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
import respx
from aiohttp import web
from pydantic import BaseModel
from redis.asyncio import Redis

from evaluator.cli.health import concurrency_lines
from evaluator.outputs.metrics import MetricsRecorder, render_metrics
from evaluator.store.store import Store
from evaluator.worker.heartbeat import Heartbeat, live_workers
from judges.errors import JudgeTransientError
from judges.llm.client import JudgeClient
from judges.llm.concurrency import AdaptiveConcurrency, SlotTimeout, slots_until

from .conftest import JUDGE_URL, chat_completion
from .polling import until

SLOTS = 2
SERVICE = 2  # ticks per request in a slot
TIMEOUT = 3 * SERVICE  # ticks a request may wait in all before the client would give up
REQUESTS = 60


class Verdict(BaseModel):
    score: int


@dataclass
class Pending:
    arrived: int
    answer: asyncio.Future[tuple[int, str]]
    left: int = SERVICE


@dataclass
class TwoSlotServer:
    now: int = 0
    slots: list[Pending] = field(default_factory=list)
    queue: deque[Pending] = field(default_factory=deque)
    answered: int = 0
    timed_out: int = 0
    latencies: list[int] = field(default_factory=list)
    peak_held: int = 0  # requests at the server at once (in slots or queued)

    @property
    def held(self) -> int:
        return len(self.slots) + len(self.queue)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        item = Pending(self.now, asyncio.get_running_loop().create_future())
        (self.slots if len(self.slots) < SLOTS else self.queue).append(item)
        self.peak_held = max(self.peak_held, self.held)
        status, body = await item.answer
        return web.Response(status=status, text=body, content_type="application/json")

    def tick(self) -> None:
        """One unit of server time: slots progress, finished requests are answered,
        requests that waited too long are answered 408, the queue moves up."""
        self.now += 1
        for item in list(self.slots):
            item.left -= 1
            if item.left == 0:
                self.slots.remove(item)
                self._answer(item, 200, json.dumps(chat_completion('{"score": 3}')))
        for item in list(self.queue):
            if self.now - item.arrived > TIMEOUT:
                self.queue.remove(item)
                self.timed_out += 1
                self._answer(item, 408, '{"error": {"message": "request timed out in queue"}}')
        while self.queue and len(self.slots) < SLOTS:
            self.slots.append(self.queue.popleft())

    def _answer(self, item: Pending, status: int, body: str) -> None:
        self.answered += 1
        if status == 200:
            self.latencies.append(self.now - item.arrived)
        item.answer.set_result((status, body))


async def run(*, fixed: int | None, retries: int) -> tuple:
    server = TwoSlotServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = JudgeClient(
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        max_retries=retries,
        max_concurrency=32,
        http_transport="aiohttp",
        timeout_s=600,  # the server's tick clock times requests out, not the wall clock
    )
    clock = lambda: float(server.now)  # noqa: E731
    client.concurrency = (
        AdaptiveConcurrency(32, clock=clock)
        if fixed is None
        else AdaptiveConcurrency(fixed, initial=fixed, minimum=fixed, clock=clock)
    )
    limiter = client.concurrency
    messages = [{"role": "user", "content": "grade"}]
    results = [
        asyncio.create_task(client.complete(messages, Verdict, use_cache=False))
        for _ in range(REQUESTS)
    ]
    limits: list[int] = []

    def settled() -> bool:
        # Every answer the server gave has been taken back by the client, every call not
        # finished is in flight or waiting for the limit, every call the limit admitted has
        # reached the server, and no waiting call could be admitted now.
        waiting = limiter.stats()["waiting"]
        unfinished = sum(not r.done() for r in results)
        return (
            limiter.released == server.answered
            and limiter.in_flight + waiting == unfinished
            and limiter.in_flight == server.held
            and (waiting == 0 or limiter.in_flight >= limiter.limit)
        )

    try:
        while not all(r.done() for r in results):
            await until(settled, "the client to react to the last answer")
            if all(r.done() for r in results):
                break
            limits.append(limiter.limit)
            server.tick()
        outcomes = await asyncio.gather(*results, return_exceptions=True)
    finally:
        await client.aclose()
        await runner.cleanup()
    return server, limiter, limits, outcomes


async def test_the_limit_finds_two_slots_and_every_request_finishes_without_a_timeout() -> None:
    server, limiter, limits, outcomes = await run(fixed=None, retries=0)
    assert all(not isinstance(o, BaseException) for o in outcomes)  # every request finished
    assert server.timed_out == 0
    assert max(server.latencies) <= TIMEOUT
    steady = limits[len(limits) // 4 :]  # after the first quarter of the run
    assert min(steady) >= SLOTS  # it keeps both slots busy
    assert max(steady) <= 2 * SLOTS  # at most one request queued per slot
    assert sum(steady) / len(steady) <= SLOTS + 1  # on average near the 2 slots
    assert server.peak_held <= 2 * SLOTS
    assert limiter.decreases["latency"] >= 1 and limiter.increases >= 1  # it probed and backed off


async def test_a_fixed_limit_of_32_times_out_on_the_same_server() -> None:
    server, _limiter, _, outcomes = await run(fixed=32, retries=0)
    failed = [o for o in outcomes if isinstance(o, JudgeTransientError)]
    assert server.timed_out > 0 and len(failed) == server.timed_out
    assert all("HTTP 408" in str(o) for o in failed)
    assert server.peak_held == 32


async def test_a_timeout_halves_the_limit_once_for_its_window() -> None:
    limiter = AdaptiveConcurrency(32, initial=16)
    tickets = [await limiter.acquire() for _ in range(16)]
    for t in tickets:
        await limiter.release(t, "timeout")
    assert limiter.limit == 8 and limiter.decreases == {
        "timeout": 1,
        "rate_limited": 0,
        "latency": 0,
    }


async def test_where_the_limit_stands_is_in_the_heartbeat_health_and_metrics(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    limiter = AdaptiveConcurrency(32, initial=8)
    tickets = [await limiter.acquire() for _ in range(3)]
    for t in tickets:
        change = await limiter.release(t, "rate_limited")
        if change is not None:  # what the client tells its metrics recorder
            await MetricsRecorder(redis, key_prefix=prefix).judge_event(
                f"concurrency_{change.partition(':')[0]}"
            )
    beat = Heartbeat(redis, prefix, "q", 10.0, extra=lambda: {"judge_concurrency": limiter.stats()})
    try:
        await beat.beat()
        workers = await live_workers(redis, prefix, "q")
        assert workers[0]["judge_concurrency"]["limit"] == 4
        (line,) = concurrency_lines(workers)
        assert "judge concurrency 4/32" in line and "rate_limited 1" in line
        text = render_metrics(
            sync_redis.Redis.from_url(redis_url),
            Store(f"sqlite:///{tmp_path / 'm.db'}"),
            key_prefix=prefix,
            queue_name="q",
        ).decode()
        assert "evaluator_judge_concurrency_decrease_total 1.0" in text
    finally:
        await redis.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_a_generator_on_the_judges_endpoint_takes_slots_of_the_same_limit(
    respx_mock: respx.MockRouter,
) -> None:
    from judges.llm.generator import Generator

    judge = JudgeClient(base_url=JUDGE_URL, model="m")
    generator = Generator(base_url=JUDGE_URL, max_retries=0, concurrency=judge.concurrency)
    respx_mock.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=chat_completion("An answer.")),
            httpx.Response(503, json={"error": {"message": "busy"}}),
        ]
    )
    texts, _ = await generator.sample([{"role": "user", "content": "q"}], "m", 1)
    assert texts == ["An answer."] and judge.concurrency.released == 1
    with pytest.raises(JudgeTransientError):
        await generator.sample([{"role": "user", "content": "q"}], "m", 1)
    assert judge.concurrency.decreases["rate_limited"] == 1  # the judge's limit backed off
    await generator.aclose()
    await judge.aclose()


@dataclass
class ManualClock:
    """The limiter's clock, moved by the test: every give-up decision reads it, so the
    outcome is the same however slowly the machine wakes the waiters."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_call_waiting_for_a_slot_gives_up_when_the_endpoint_answers_nothing() -> None:
    # Behind a hanging endpoint the limit is at its minimum: a call queued for a slot fails
    # as the endpoint's own timeouts do, instead of waiting until a job timeout kills the job.
    clock = ManualClock()
    limiter = AdaptiveConcurrency(4, initial=1, clock=clock)
    held = await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire(timeout_s=0.05))
    await until(lambda: limiter.stats()["waiting"] == 1, "the call to queue")
    clock.now += 0.06  # no answer for longer than its timeout
    with pytest.raises(SlotTimeout, match=r"the endpoint answered nothing for 0\.05 s"):
        await waiter
    assert limiter.in_flight == 1  # the refused call took no slot
    await limiter.release(held, "ok")
    again = await limiter.acquire(timeout_s=0.05)  # a free slot is taken at once
    assert limiter.in_flight == 1
    await limiter.release(again, "ok")


async def test_a_call_keeps_its_place_while_a_slow_endpoint_answers() -> None:
    # A CPU server answers one request every 10-30 s: the queue behind its one slot drains
    # at that pace, each call in turn, however long the wait adds up to (issue 29's demo).
    clock = ManualClock()
    limiter = AdaptiveConcurrency(4, initial=1, minimum=1, clock=clock)
    holder = await limiter.acquire()
    ahead = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    last = asyncio.create_task(limiter.acquire(timeout_s=0.05))
    await until(lambda: limiter.stats()["waiting"] == 4, "four calls to queue")
    for task in ahead:  # each answer comes 0.04 after the previous: within the timeout
        clock.now += 0.04
        await limiter.release(holder, "ok")
        holder = await task
    assert not last.done()  # waited 0.12 in all, 3 answers meanwhile: still in line
    clock.now += 0.04
    await limiter.release(holder, "ok")
    ticket = await last
    await limiter.release(ticket, "ok")
    assert limiter.in_flight == 0


async def test_a_call_past_its_jobs_deadline_starts_no_attempt() -> None:
    clock = ManualClock()
    limiter = AdaptiveConcurrency(4, initial=1, clock=clock)
    with slots_until(clock.now + 1.0):
        held = await limiter.acquire()  # before the deadline: a free slot at once
        waiter = asyncio.create_task(limiter.acquire(timeout_s=60.0))
        await until(lambda: limiter.stats()["waiting"] == 1, "the call to queue")
        clock.now += 1.0  # the endpoint is fine, but the job has no time left for a call
        with pytest.raises(SlotTimeout, match="deadline"):
            await waiter
        await limiter.release(held, "ok")
        with pytest.raises(SlotTimeout, match="deadline"):
            await limiter.acquire(timeout_s=60.0)  # even with a free slot
    again = await limiter.acquire()  # outside the job's context: no deadline
    await limiter.release(again, "ok")
    assert limiter.in_flight == 0


async def test_a_freed_slot_goes_to_the_oldest_waiter_and_survives_its_cancellation() -> None:
    limiter = AdaptiveConcurrency(4, initial=1)
    held = await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    while limiter.stats()["waiting"] < 2:
        await asyncio.sleep(0)  # a turn of the loop: both are queued, oldest first
    await limiter.release(held, "ok")  # handed to `first`, which has not run yet
    first.cancel()  # it gives up before taking it: the slot must reach `second`
    with pytest.raises(asyncio.CancelledError):
        await first
    ticket = await second
    assert limiter.in_flight == 1 and limiter.stats()["waiting"] == 0
    await limiter.release(ticket, "ok")
    assert limiter.in_flight == 0
