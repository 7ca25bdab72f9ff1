"""Worker side of intake: drain trace IDs in batches, decide sampling, enqueue arq jobs.

The hot path is one LPOP of up to `batch` entries, a hash per ID, and, for the sampled few,
one Lua call that creates arq-compatible jobs in bulk (arq's own `enqueue_job` costs a
WATCH/MULTI round trip per job). Every decision is counted in a Redis hash.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from .enqueue import intake_key
from .sampling import Reason, Signals, TailRules, decide, hash_point
from .serialization import serialize
from .wire import WireError, decode

log = logging.getLogger("evaluator.intake")

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


def job_id_for(trace_id: str, reason: Reason) -> str:
    # Rate-sampled and tail-sampled runs get distinct IDs: a later negative-feedback enqueue
    # must still evaluate a trace whose first, rate-only run did not cover every rubric.
    kind = "rate" if reason is Reason.RATE else "tail"
    return f"evaluate:{kind}:{trace_id}"


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


class Intake:
    def __init__(
        self, redis: Redis, *, key_prefix: str, queue_name: str, sampling: SamplingConfig
    ) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self.sampling = sampling
        self._key = intake_key(key_prefix)
        self._stats_key = stats_key(key_prefix)
        self._enqueue_script = redis.register_script(_ENQUEUE_LUA)

    async def drain_once(self, batch: int) -> DrainResult:
        entries: list[bytes] | None = await self.redis.lpop(self._key, batch)  # type: ignore[assignment]
        result = DrainResult()
        if not entries:
            return result
        result.popped = len(entries)
        jobs: list[tuple[str, bytes]] = []
        now = timestamp_ms()
        for entry in entries:
            try:
                trace_id, signals = decode(entry)
            except WireError as exc:
                result.invalid += 1
                log.warning("intake: dropped invalid entry %r: %s", entry[:80], exc)
                continue
            reason = decide(
                hash_point(trace_id),
                self.sampling.max_rate,
                signals or Signals(),
                self.sampling.rules,
            )
            result.reasons[reason.value] += 1
            if reason is Reason.NOT_SAMPLED:
                continue
            result.sampled += 1
            wire_signals = signals.to_wire() if signals else {}
            payload = serialize_job(
                EVALUATE_JOB, (trace_id, wire_signals), {}, None, now, serializer=serialize
            )
            jobs.append((job_id_for(trace_id, reason), payload))
        if jobs:
            result.jobs_created = await self._create_jobs(jobs, now)
        await self._count(result)
        return result

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
        raw = await self.redis.hgetall(self._stats_key)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def pending(self) -> int:
        return int(await self.redis.llen(self._key))
