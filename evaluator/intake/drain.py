"""Worker side of intake: drain trace IDs in batches, decide sampling, enqueue arq jobs.

The hot path is one LPOP of up to `batch` entries, a hash per ID, and, for the sampled few,
one Lua call that creates arq-compatible jobs in bulk (arq's own `enqueue_job` costs a
WATCH/MULTI round trip per job). Every decision is counted in a Redis hash.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, cast

from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from evaluator.intake.enqueue import intake_key
from evaluator.intake.sampling import Reason, Signals, TailRules, decide, hash_point
from evaluator.intake.serialization import serialize
from evaluator.intake.wire import SEPARATOR, WireError, check_trace_id, decode
from evaluator.store.outbox import Intent, record_intents

log = logging.getLogger("evaluator.intake.drain")

EVALUATE_JOB = "evaluate_trace"  # the registered job name: a contract with every enqueuer
JOB_EXPIRES_MS = 86_400_000

# Create each job unless it (or its result) exists, like arq's enqueue_job, for many at once.
_ENQUEUE_LUA = """
local queued = 0
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  local job_key = ARGV[2] .. id
  if redis.call('EXISTS', job_key, ARGV[3] .. id) == 0 then
    redis.call('PSETEX', job_key, ARGV[4], ARGV[i + 1])
    redis.call('ZADD', ARGV[1], ARGV[5], id)
    queued = queued + 1
  end
end
return queued
"""


def stats_key(prefix: str) -> str:
    return f"{prefix}:stats"


_SEPARATOR = SEPARATOR.encode()


def kind_of(reason: Reason) -> str:
    # Rate-sampled and tail-sampled runs are distinct: a later negative-feedback enqueue
    # must still evaluate a trace whose first, rate-only run did not cover every rubric.
    return "rate" if reason is Reason.RATE else "tail"


def job_id_for(trace_id: str, reason: Reason | str) -> str:
    kind = reason if isinstance(reason, str) else kind_of(reason)
    return f"evaluate:{kind}:{trace_id}"


def processing_prefix(prefix: str) -> str:
    return f"{prefix}:intake:processing:"


def alive_prefix(prefix: str) -> str:
    return f"{prefix}:intake:alive:"


PROCESSING_TTL_S = 120

# Pop up to ARGV[1] entries and park them in this worker's processing list, atomically.
_POP_TO_PROCESSING_LUA = """
local items = redis.call('LPOP', KEYS[1], ARGV[1])
if not items then return {} end
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
return items
"""

# Give an abandoned processing list (its worker's heartbeat expired) back to the intake list.
_RECOVER_LUA = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('DEL', KEYS[2])
return #items
"""


async def recover_abandoned(redis: Redis, key_prefix: str) -> int:
    """Return entries parked by dead workers to the intake list; how many were returned."""
    script = redis.register_script(_RECOVER_LUA)
    returned = 0
    async for key in redis.scan_iter(match=f"{processing_prefix(key_prefix)}*"):
        worker_id = key.decode().rsplit(":", 1)[-1]
        returned += int(
            await script(
                keys=[intake_key(key_prefix), key, f"{alive_prefix(key_prefix)}{worker_id}"]
            )
        )
    return returned


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """The widest rate over all rubrics decides whether a trace becomes a job at all."""

    max_rate: float
    rules: TailRules


@dataclass
class DrainResult:
    popped: int = 0
    invalid: int = 0
    sampled: int = 0
    jobs_created: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def job_payload(trace_id: str, wire_signals: dict[str, Any], kind: str, now_ms: int) -> bytes:
    return serialize_job(
        EVALUATE_JOB, (trace_id, wire_signals, kind), {}, None, now_ms, serializer=serialize
    )


class Intake:
    """Drains one intake list. With an `engine`, sampled traces are recorded as durable
    intents (evaluator.store.outbox) before their jobs exist, and a popped batch is parked in this
    worker's processing list until then, so a crash mid-batch loses nothing."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        queue_name: str,
        sampling: SamplingConfig,
        engine: Engine | None = None,
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.sampling = sampling
        self.engine = engine
        self.key_prefix = key_prefix
        self.worker_id = uuid.uuid4().hex[:12]
        self._key = intake_key(key_prefix)
        self._processing = f"{processing_prefix(key_prefix)}{self.worker_id}"
        self._alive = f"{alive_prefix(key_prefix)}{self.worker_id}"
        self._stats_key = stats_key(key_prefix)
        self._enqueue_script = redis.register_script(_ENQUEUE_LUA)
        self._pop_script = redis.register_script(_POP_TO_PROCESSING_LUA)

    async def drain_once(self, batch: int) -> DrainResult:
        result = DrainResult()
        if self.engine is None:
            popped = self.redis.lpop(self._key, batch)
            entries = await cast("Awaitable[list[bytes] | None]", popped)
        else:
            entries = await self._pop_script(
                keys=[self._key, self._processing, self._alive], args=[batch, PROCESSING_TTL_S]
            )
        if not entries:
            return result
        result.popped = len(entries)
        jobs: list[tuple[str, bytes]] = []
        intents: list[Intent] = []
        now = timestamp_ms()
        rate = self.sampling.max_rate
        no_signals = Signals()
        not_sampled = 0
        for entry in entries:
            # Hot path: a bare ID (no signals) needs only a hash against the rate.
            if _SEPARATOR not in entry:
                trace_id = entry.decode("utf-8", "replace")
                if check_trace_id(trace_id) is None and hash_point(trace_id) >= rate:
                    not_sampled += 1
                    continue
            try:
                trace_id, signals = decode(entry)
            except WireError as exc:
                result.invalid += 1
                log.warning("intake: dropped invalid entry %r: %s", entry[:80], exc)
                continue
            reason = decide(hash_point(trace_id), rate, signals or no_signals, self.sampling.rules)
            result.reasons[reason.value] += 1
            if reason is Reason.NOT_SAMPLED:
                continue
            result.sampled += 1
            wire_signals = signals.to_wire() if signals else {}
            kind = kind_of(reason)
            jobs.append(
                (job_id_for(trace_id, reason), job_payload(trace_id, wire_signals, kind, now))
            )
            intents.append(Intent(trace_id=trace_id, kind=kind, signals=wire_signals))
        if not_sampled:
            result.reasons[Reason.NOT_SAMPLED.value] += not_sampled
        if intents and self.engine is not None:
            await asyncio.to_thread(record_intents, self.engine, intents)
        if jobs:
            result.jobs_created = await self._create_jobs(jobs, now)
        if self.engine is not None:
            await self.redis.delete(self._processing)
        await self._count(result)
        return result

    async def create_jobs(self, jobs: list[tuple[str, bytes]]) -> int:
        """Create arq jobs (job_id, payload) unless they exist; used by the sweeper too."""
        return await self._create_jobs(jobs, timestamp_ms()) if jobs else 0

    async def _create_jobs(self, jobs: list[tuple[str, bytes]], now_ms: int) -> int:
        args: list[Any] = [
            self.queue_name,
            job_key_prefix,
            result_key_prefix,
            JOB_EXPIRES_MS,
            now_ms,
        ]
        for job_id, payload in jobs:
            args.extend((job_id, payload))
        return int(await self._enqueue_script(args=args))

    async def _count(self, result: DrainResult) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self._stats_key, "received", result.popped)
        if result.invalid:
            pipe.hincrby(self._stats_key, "invalid", result.invalid)
        for reason, n in result.reasons.items():
            pipe.hincrby(self._stats_key, reason, n)
        pipe.hincrby(self._stats_key, "jobs_created", result.jobs_created)
        await pipe.execute()

    async def drain_all(self, batch: int) -> DrainResult:
        """Drain until the list is empty (burst mode, CLI); returns the totals."""
        total = DrainResult()
        while True:
            part = await self.drain_once(batch)
            if not part.popped:
                return total
            total.popped += part.popped
            total.invalid += part.invalid
            total.sampled += part.sampled
            total.jobs_created += part.jobs_created
            total.reasons.update(part.reasons)

    async def run_forever(self, batch: int, idle_sleep_s: float) -> None:
        """The worker's background loop; survives Redis errors with a back-off."""
        backoff = idle_sleep_s
        while True:
            try:
                result = await self.drain_once(batch)
                backoff = idle_sleep_s
                if result.popped < batch:
                    await asyncio.sleep(idle_sleep_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("intake: drain failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def stats(self) -> dict[str, int]:
        raw = await cast("Awaitable[dict[bytes, bytes]]", self.redis.hgetall(self._stats_key))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def pending(self) -> int:
        return int(await cast("Awaitable[int]", self.redis.llen(self._key)))
