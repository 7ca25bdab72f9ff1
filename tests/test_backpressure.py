"""Back-pressure in traces (issue 26 §2): `worker.max_queue_depth` bounds the traces queued,
batch jobs and the jobs their handed-on members become included, and a held-back backlog is
queued by the intake loop as soon as there is room, packed as the intake packs.

Real Redis and SQLite. arq is played by the test (a job "runs" when the test removes it from
the queue and marks its intents done), so the simulation can interleave drains, refills,
job completions and hand-ons in any order a seed picks.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from evaluator.intake.backlog import held_key
from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import intake_key
from evaluator.intake.jobs import EVALUATE_BATCH_JOB, EVALUATE_JOB, QueuedTrace
from evaluator.intake.sweeper import sweep
from evaluator.sampling import TailRules
from evaluator.store import outbox
from evaluator.store.store import Store

QUEUE = "q"


def _intake(client: Redis, store: Store, *, bound: int, per_job: int) -> Intake:
    return Intake(client, key_prefix="bp", queue_name=QUEUE, sampling=SamplingConfig(1.0, TailRules()),
                  engine=store.engine, max_queue_depth=bound, traces_per_job=per_job)  # fmt: skip


async def _jobs(client: Redis) -> dict[str, dict[str, Any]]:
    """Every queued job: id -> its arq payload (JSON)."""
    out = {}
    for job_id in await client.zrange(QUEUE, 0, -1):
        raw = await client.get(f"arq:job:{job_id.decode()}")
        out[job_id.decode()] = json.loads(raw)
    return out


def _members(job: dict[str, Any]) -> list[list[Any]]:
    return job["a"][0] if job["f"] == EVALUATE_BATCH_JOB else [job["a"]]


async def _depth(client: Redis) -> int:
    """The queue's depth in traces, counted from the payloads (not from the ids)."""
    return sum(len(_members(j)) for j in (await _jobs(client)).values())


async def _run(client: Redis, store: Store, job_id: str, job: dict[str, Any]) -> list[str]:
    """arq runs the job to its end: it leaves the queue, its traces' intents are done."""
    await client.zrem(QUEUE, job_id)
    await client.delete(f"arq:job:{job_id}")
    traces = [str(m[0]) for m in _members(job)]
    for t in traces:
        outbox.finish(store.engine, outbox.intent_id("rate", t), status=outbox.DONE)
    return traces


@pytest.mark.parametrize(("bound", "per_job"), [(20, 8), (5, 8), (30, 1)])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_queue_never_holds_more_than_the_bound_plus_one_batch_and_loses_nothing(
    redis_url: str, tmp_path: Path, bound: int, per_job: int, seed: int
) -> None:
    """Guarantee: after any step, traces queued <= bound + traces_per_job - 1; every sampled
    trace is evaluated exactly once in the end (held ones too); a hand-on never deepens it."""
    rng = random.Random(seed)
    client = Redis.from_url(redis_url)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    intake = _intake(client, store, bound=bound, per_job=per_job)
    total, pushed, limit = 300, 0, bound + per_job - 1
    evaluated: dict[str, int] = {}
    deepest, held_most = 0, 0
    for _ in range(2000):
        op = rng.choices(["push", "drain", "run", "hand_on"], weights=[2, 3, 3, 1])[0]
        if op == "push" and pushed < total:
            n = min(total - pushed, rng.randint(1, 40))
            await client.rpush(intake_key("bp"), *[f"t{i:04d}" for i in range(pushed, pushed + n)])
            pushed += n
        elif op == "drain":
            await intake.drain_once(rng.randint(1, 60))  # refills from the held set first
        elif op in ("run", "hand_on") and (jobs := await _jobs(client)):
            job_id = rng.choice(sorted(jobs))
            job = jobs[job_id]
            if op == "hand_on" and job["f"] == EVALUATE_BATCH_JOB:
                # The batch job hands every member on (a retry each), then ends.
                handed = [(QueuedTrace(*m[:3], tried=1), timestamp_ms()) for m in _members(job)]
                before = await _depth(client)
                await intake.follow_up(handed, replacing=job_id)
                assert await _depth(client) <= before  # the singles took the batch's place
                await client.delete(f"arq:job:{job_id}")
            else:
                for t in await _run(client, store, job_id, job):
                    evaluated[t] = evaluated.get(t, 0) + 1
        depth = await _depth(client)
        assert depth <= limit, f"{depth} traces queued, bound {bound} + batch {per_job}"
        deepest = max(deepest, depth)
        held_most = max(held_most, int(await client.zcard(held_key("bp"))))
        drained = pushed == total and not await client.llen(intake_key("bp"))
        if drained and not depth and not await client.zcard(held_key("bp")):
            break
    else:
        raise AssertionError("the simulation did not finish")
    assert sorted(evaluated) == [f"t{i:04d}" for i in range(total)]
    assert set(evaluated.values()) == {1}  # none lost, none twice
    assert held_most > 0 and deepest > bound - per_job  # the bound was reached and held
    assert outbox.count_intents(store.engine, outbox.PENDING) == 0
    store.close()
    await client.aclose()


async def test_a_held_backlog_is_queued_by_drains_packed_without_a_sweep(
    redis_url: str, tmp_path: Path
) -> None:
    """200 traces behind a bound of 20: each drain (nothing to pop) queues what the room
    takes, in batch jobs of 8; no sweep is needed, and the jobs per trace are the intake's."""
    client = Redis.from_url(redis_url)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    intake = _intake(client, store, bound=20, per_job=8)
    await client.rpush(intake_key("bp"), *[f"t{i:04d}" for i in range(200)])
    first = await intake.drain_once(1000)
    assert first.jobs_created + first.held_back == 200 and first.held_back >= 200 - 27
    seen: set[str] = set()
    batches = 0
    for _ in range(200):
        jobs = await _jobs(client)
        if not jobs and not await client.zcard(held_key("bp")):
            break
        for job_id, job in jobs.items():
            batches += job["f"] == EVALUATE_BATCH_JOB
            seen.update(await _run(client, store, job_id, job))
        await intake.drain_once(1000)  # nothing to pop: the refill alone
    assert seen == {f"t{i:04d}" for i in range(200)}
    assert batches == 25  # 200 traces in jobs of 8: packed as the intake packs
    stats = await intake.stats()
    assert stats["released"] == first.held_back and stats["held_back"] == first.held_back
    store.close()
    await client.aclose()


async def test_after_redis_lost_the_held_set_one_sweep_places_the_whole_backlog(
    redis_url: str, tmp_path: Path
) -> None:
    """The held set is lost (Redis restarted empty): the intents are pending in SQL. One
    sweep queues what the bound takes and holds the rest (however small the bound), and the
    drains queue the rest: one sweep, not one per `room` traces."""
    client = Redis.from_url(redis_url)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    intake = _intake(client, store, bound=20, per_job=8)
    await client.rpush(intake_key("bp"), *[f"t{i:04d}" for i in range(150)])
    await intake.drain_once(1000)
    await client.flushdb()  # the queue and the held set gone, the intents pending in SQL
    result = await sweep(intake, store.engine, stale_after=timedelta(0), dead_after_attempts=10)
    assert result.reenqueued == 150 and result.jobs_created + result.held == 150
    assert 20 <= result.jobs_created <= 27
    seen: set[str] = set()
    for _ in range(100):
        jobs = await _jobs(client)
        if not jobs and not await client.zcard(held_key("bp")):
            break
        for job_id, job in jobs.items():
            assert job["f"] in (EVALUATE_BATCH_JOB, EVALUATE_JOB)
            seen.update(await _run(client, store, job_id, job))
        await intake.drain_once(1000)
    assert seen == {f"t{i:04d}" for i in range(150)}
    assert outbox.count_intents(store.engine, outbox.PENDING) == 0
    store.close()
    await client.aclose()


async def test_a_held_trace_whose_intent_is_done_gets_no_job(
    redis_url: str, tmp_path: Path
) -> None:
    client = Redis.from_url(redis_url)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    intake = _intake(client, store, bound=2, per_job=1)
    await client.rpush(intake_key("bp"), "a", "b", "c", "d")
    await intake.drain_once(10)
    assert sorted(await client.zrange(held_key("bp"), 0, -1)) == [b"evaluate:rate:c",
                                                                  b"evaluate:rate:d"]  # fmt: skip
    outbox.finish(store.engine, outbox.intent_id("rate", "c"), status=outbox.DONE)
    for job_id, job in (await _jobs(client)).items():
        await _run(client, store, job_id, job)
    assert await intake.refill() == 1
    assert list(await _jobs(client)) == ["evaluate:rate:d"]
    assert await client.zcard(held_key("bp")) == 0
    store.close()
    await client.aclose()
