"""Intake benchmark (issue 2 targets, issue 7 §2), everything measured in one run.

    python -m bench.intake                      # 5 rounds, full size (~1 min)
    python -m bench.intake --reps 3 --scale 0.1 # quicker
    python -m bench.intake --json out.json      # also write the raw numbers

Each round measures, side by side on the same Redis (db 12, flushed before every step):

- app side: `TraceEnqueuer.enqueue()` per trace, amortised over the whole run *including*
  the background flush to Redis (wall clock from the first enqueue until every ID is in the
  Redis list, divided by the number of IDs), and the same for `SyncTraceEnqueuer` (its
  flusher thread competes for the GIL, so its cost is counted too); plus process CPU;
- worker side: `Intake.drain_all()` from a pre-filled intake list — LPOP batch, decode,
  hash sampling at 10 %, counters, one Lua call creating the sampled arq jobs;
- the peer: arq's own `enqueue_job` (sequential, one at a time) and a real arq `Worker`
  running no-op jobs in burst mode (arq defaults otherwise);
- the physical limit: pipelined RPUSH and batched LPOP of bare IDs with redis-py (hiredis).

Targets: app side ≤ 5 µs per trace amortised; intake ≥ 100× arq's no-op job rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
from arq import Worker, create_pool, func
from arq.connections import RedisSettings
from redis.asyncio import Redis as AsyncRedis

from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import SyncTraceEnqueuer, TraceEnqueuer, intake_key
from evaluator.sampling import TailRules
from evaluator.store.store import Store

from .report import Summary, command_line, fmt, machine, table

DEFAULT_REDIS = "redis://127.0.0.1:6379/12"
PREFIX = "bench"
QUEUE = "bench:queue"
ARQ_QUEUE = "bench:arq"
SAMPLE_RATE = 0.1


@dataclass(frozen=True, slots=True)
class Sizes:
    enqueue: int = 200_000
    intake: int = 200_000
    arq_jobs: int = 2_000
    redis_ids: int = 1_000_000

    def scaled(self, factor: float) -> Sizes:
        def s(n: int, floor: int) -> int:
            return max(floor, int(n * factor))

        return Sizes(
            s(self.enqueue, 1000),
            s(self.intake, 1000),
            s(self.arq_jobs, 50),
            s(self.redis_ids, 5000),
        )


def trace_ids(n: int) -> list[str]:
    # OTel-style 32-hex trace IDs, generated before timing starts.
    return [uuid.uuid4().hex for _ in range(n)]


def flushdb(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def fill_intake(url: str, ids: list[str]) -> None:
    client = redis.Redis.from_url(url)
    key = intake_key(PREFIX)
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(ids), 5000):
        pipe.rpush(key, *ids[i : i + 5000])
    pipe.execute()
    client.close()


# --- app side -------------------------------------------------------------------------


async def app_async(url: str, ids: list[str], *, with_signals: bool) -> dict[str, float]:
    """µs per enqueue(), wall and CPU, from the first call until Redis holds every ID."""
    # The buffer bound is sized to the burst: this measures cost, not the drop policy.
    enq = TraceEnqueuer(url, key_prefix=PREFIX, buffer_max=len(ids))
    await enq._redis.ping()  # connect outside the timed part, like a warm app
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, trace_id in enumerate(ids):
        if with_signals:
            enq.enqueue(trace_id, latency_ms=840.0, cost_usd=0.002)
        else:
            enq.enqueue(trace_id)
        if i % 1000 == 999:
            await asyncio.sleep(0)  # an app yields to its loop between requests
    # flush() can return while the background task still has a batch in flight (see
    # BENCHMARKS.md, "findings"), so wait for the count, not for flush().
    while enq.stats.pushed < len(ids):
        assert not enq.stats.dropped, enq.stats
        await enq.flush()
        await asyncio.sleep(0)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await enq.aclose()
    return {"wall_us": wall / len(ids) * 1e6, "cpu_us": cpu / len(ids) * 1e6}


def app_sync(url: str, ids: list[str]) -> dict[str, float]:
    enq = SyncTraceEnqueuer(url, key_prefix=PREFIX, buffer_max=len(ids))
    enq._redis.ping()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for trace_id in ids:
        enq.enqueue(trace_id)
    enq.flush()  # the rest, from this thread; the flusher thread may still be mid-push
    deadline = time.monotonic() + 60
    while enq.stats.pushed < len(ids):
        assert not enq.stats.dropped and time.monotonic() < deadline, enq.stats
        time.sleep(0.0005)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    enq.close()
    return {"wall_us": wall / len(ids) * 1e6, "cpu_us": cpu / len(ids) * 1e6}


# --- worker side ----------------------------------------------------------------------


async def intake_rate(
    url: str, ids: list[str], batch: int, *, durable: bool = False
) -> dict[str, float]:
    """Trace IDs/s from the Redis list to a sampling decision, jobs created for the sampled.

    `durable` is the worker's production path: the batch is parked in a processing list
    and every sampled trace is recorded as an intent in SQL (a fresh SQLite file) first.
    """
    fill_intake(url, ids)
    client = AsyncRedis.from_url(url)
    store = Store(f"sqlite:///{tempfile.mkdtemp()}/intents.db") if durable else None
    intake = Intake(
        client,
        key_prefix=PREFIX,
        queue_name=QUEUE,
        sampling=SamplingConfig(max_rate=SAMPLE_RATE, rules=TailRules()),
        engine=store.engine if store else None,
    )
    await client.ping()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = await intake.drain_all(batch)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    queued = await client.zcard(QUEUE)
    await client.aclose()
    if store is not None:
        store.close()
    assert result.popped == len(ids), result
    assert result.jobs_created == result.sampled == queued, (result, queued)
    return {
        "ids_per_s": len(ids) / wall,
        "cpu_us": cpu / len(ids) * 1e6,
        "sampled_share": result.sampled / len(ids),
    }


# --- the peer: arq itself -------------------------------------------------------------


async def noop(_ctx: dict[str, Any]) -> None:
    return None


async def arq_rates(url: str, n: int) -> dict[str, float]:
    settings = RedisSettings.from_dsn(url)
    pool = await create_pool(settings, default_queue_name=ARQ_QUEUE)
    t0 = time.perf_counter()
    for _ in range(n):
        await pool.enqueue_job("noop")
    enqueue_us = (time.perf_counter() - t0) / n * 1e6
    await pool.aclose()

    worker = Worker(
        functions=[func(noop, name="noop")],
        redis_settings=settings,
        queue_name=ARQ_QUEUE,
        burst=True,
        poll_delay=0,
        handle_signals=False,
    )
    t0 = time.perf_counter()
    await worker.main()
    elapsed = time.perf_counter() - t0
    done = worker.jobs_complete
    await worker.close()
    assert done == n, (done, n)
    return {"enqueue_us": enqueue_us, "jobs_per_s": n / elapsed}


# --- the physical limit ---------------------------------------------------------------


def redis_limit(url: str, ids: list[str]) -> dict[str, float]:
    """Bare IDs through redis-py + hiredis: RPUSH 500 per command, 20 commands per pipeline;
    LPOP 2,000 per command, 10 per pipeline. No decoding, no decisions."""
    client = redis.Redis.from_url(url)
    key = "bench:raw"
    t0 = time.perf_counter()
    for i in range(0, len(ids), 10_000):
        pipe = client.pipeline(transaction=False)
        for j in range(i, min(i + 10_000, len(ids)), 500):
            pipe.rpush(key, *ids[j : j + 500])
        pipe.execute()
    push = len(ids) / (time.perf_counter() - t0)
    popped = 0
    t0 = time.perf_counter()
    while True:
        pipe = client.pipeline(transaction=False)
        for _ in range(10):
            pipe.lpop(key, 2000)
        got = [r for r in pipe.execute() if r]
        if not got:
            break
        popped += sum(len(r) for r in got)
    pop = popped / (time.perf_counter() - t0)
    client.close()
    assert popped == len(ids)
    return {"push_per_s": push, "pop_per_s": pop}


# --- driver ---------------------------------------------------------------------------


async def one_round(url: str, sizes: Sizes, batch: int) -> dict[str, float]:
    out: dict[str, float] = {}

    async def step(name: str, fn: Callable[[], Awaitable[dict[str, float]]]) -> None:
        flushdb(url)
        for key, value in (await fn()).items():
            out[f"{name}.{key}"] = value

    async def sync_step(name: str, fn: Callable[[], dict[str, float]]) -> None:
        flushdb(url)
        for key, value in fn().items():
            out[f"{name}.{key}"] = value

    ids = trace_ids(max(sizes.enqueue, sizes.intake))
    await step("enqueue", lambda: app_async(url, ids[: sizes.enqueue], with_signals=False))
    await step("enqueue_signals", lambda: app_async(url, ids[: sizes.enqueue], with_signals=True))
    await sync_step("enqueue_sync", lambda: app_sync(url, ids[: sizes.enqueue]))
    await step("intake", lambda: intake_rate(url, ids[: sizes.intake], batch))
    await step("intake_durable", lambda: intake_rate(url, ids[: sizes.intake], batch, durable=True))
    await step("arq", lambda: arq_rates(url, sizes.arq_jobs))
    await sync_step("redis", lambda: redis_limit(url, trace_ids(sizes.redis_ids)))
    flushdb(url)
    return out


async def run(
    url: str = DEFAULT_REDIS, *, reps: int = 5, scale: float = 1.0, batch: int = 10_000
) -> dict[str, Summary]:
    """All rounds; returns a Summary per metric (keys like 'intake.ids_per_s')."""
    sizes = Sizes().scaled(scale)
    rounds = [await one_round(url, sizes, batch) for _ in range(reps)]
    return {key: Summary.of([r[key] for r in rounds]) for key in rounds[0]}


def render(results: dict[str, Summary], reps: int, sizes: Sizes) -> str:
    m = {k: v.median for k, v in results.items()}

    def row(what: str, key: str, unit: str, target: str = "") -> list[str]:
        s = results[key]
        return [what, f"{fmt(s.median)} {unit}", f"{fmt(s.low)} – {fmt(s.high)}", target]

    arq_rate = m["arq.jobs_per_s"]
    rows = [
        row(
            "app: `enqueue()` async, amortised incl. flush (wall)",
            "enqueue.wall_us",
            "µs",
            "≤ 5 µs",
        ),
        row("app: `enqueue()` async, process CPU", "enqueue.cpu_us", "µs"),
        row("app: `enqueue(latency_ms, cost_usd)` async (wall)", "enqueue_signals.wall_us", "µs"),
        row(
            "app: `enqueue()` sync form incl. flusher thread (wall)",
            "enqueue_sync.wall_us",
            "µs",
            "≤ 5 µs",
        ),
        row("app: `enqueue()` sync form, process CPU", "enqueue_sync.cpu_us", "µs"),
        row("worker: intake, list → decision (+10 % jobs)", "intake.ids_per_s", "IDs/s"),
        row("worker: intake, process CPU per ID", "intake.cpu_us", "µs"),
        row(
            "worker: intake + durable intents in SQLite (production path)",
            "intake_durable.ids_per_s",
            "IDs/s",
        ),
        row("arq: bare `enqueue_job` (sequential)", "arq.enqueue_us", "µs"),
        row("arq: no-op jobs, burst Worker (defaults)", "arq.jobs_per_s", "jobs/s"),
        row("redis: pipelined RPUSH of IDs", "redis.push_per_s", "IDs/s"),
        row("redis: batched LPOP of IDs", "redis.pop_per_s", "IDs/s"),
    ]
    ratios = [
        ["intake ÷ arq no-op job rate", f"{m['intake.ids_per_s'] / arq_rate:.0f}×", "≥ 100×"],
        [
            "intake with durable intents ÷ arq no-op job rate",
            f"{m['intake_durable.ids_per_s'] / arq_rate:.0f}×",
            "≥ 100×",
        ],
        [
            "arq `enqueue_job` ÷ our `enqueue()` (async, wall)",
            f"{m['arq.enqueue_us'] / m['enqueue.wall_us']:.0f}×",
            "",
        ],
        [
            "intake ÷ Redis batched LPOP limit",
            f"{m['intake.ids_per_s'] / m['redis.pop_per_s']:.0%}",
            "",
        ],
        [
            "sampled share (check: ≈ 10 %)",
            f"{m['intake.sampled_share']:.1%}",
            "",
        ],
    ]
    sizes_line = (
        f"sizes per round: enqueue {sizes.enqueue:,} IDs, intake {sizes.intake:,} IDs, "
        f"arq {sizes.arq_jobs:,} jobs, redis {sizes.redis_ids:,} IDs; {reps} rounds"
    )
    return "\n".join(
        [
            table(["measure", f"median of {reps}", "min – max", "target"], rows),
            "",
            table(["ratio (of medians)", "value", "target"], ratios),
            "",
            sizes_line,
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help="a db this bench may FLUSHDB")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    parser.add_argument(
        "--batch", type=int, default=10_000, help="intake batch (worker.intake_batch default)"
    )
    parser.add_argument("--json", help="write the summaries to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("arq").setLevel(logging.WARNING)

    print(f"$ {command_line()}")
    print(f"machine: {machine()}\n")
    results = asyncio.run(run(args.redis_url, reps=args.reps, scale=args.scale, batch=args.batch))
    print(render(results, args.reps, Sizes().scaled(args.scale)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: vars_of(v) for k, v in results.items()}, f, indent=2)


def vars_of(s: Summary) -> dict[str, float]:
    return {"median": s.median, "min": s.low, "max": s.high, "n": s.n}


if __name__ == "__main__":
    main()
