"""The arq job contract of evaluation jobs: the function names the worker registers, the
arguments each job carries, the job ids, and the one writer of those jobs into arq's queue.

Every enqueuer (the intake drain, the sweeper, `evaluator retry`, backfill, a batch job's
follow-ups) and the worker's registered functions (evaluator.worker.app) take these from
here, so a job written by one is a job the other reads:

- `evaluate_trace(trace_id, signals, kind[, tried])`: one trace; its id is
  `evaluate:{kind}:{trace_id}` (`job_id_for`), `kind` "rate" or "tail", so a trace is
  queued at most once per kind;
- `evaluate_traces([[trace_id, signals, kind(, tried)], ...])`: several traces in one job
  (arq's per-job Redis commands and Python paid once per batch); its id
  `evaluate:batch:{n}:{digest of the members}` (`batch_job_id`) names its size, which the
  queue's depth in traces counts, and each member gets a marker naming its batch
  (`batch_marker_prefix`).

Jobs are created by Lua scripts in bulk (arq's own `enqueue_job` costs a WATCH/MULTI round
trip per job) in arq's own format, serialized as JSON (evaluator.intake.serialization).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from evaluator.intake.serialization import serialize
from evaluator.sampling import Reason
from evaluator.store.outbox import Intent

EVALUATE_JOB = "evaluate_trace"  # the registered job name: a contract with every enqueuer
EVALUATE_BATCH_JOB = "evaluate_traces"  # several traces in one job (the intake's batches)
JOB_EXPIRES_MS = 86_400_000

# A trace is queued already when its own job (or result) exists, or when its marker names a
# batch job that still exists (a finished or failed batch job is gone: its marker is stale).
# The queue's depth is counted in traces: a batch job's id names its size, an older batch job
# counts as traces_per_job, any other job as one. A creator asks `opened()` before each job
# and `added(n)` after it, so a job is created only while the queue holds fewer traces than
# the bound (it ends at most one batch over); the queue is scanned only when ZCARD cannot tell.
_QUEUED_FN = """
local function queued_already(jp, rp, mp, id)
  if redis.call('EXISTS', jp .. id, rp .. id) > 0 then return true end
  local batch = redis.call('GET', mp .. id)
  return batch and redis.call('EXISTS', jp .. batch) == 1
end
local function traces_in(q, per_job)
  local total = 0
  for _, m in ipairs(redis.call('ZRANGE', q, 0, -1)) do
    local n = string.match(m, '^evaluate:batch:(%d+):')
    if n then total = total + tonumber(n)
    elseif string.sub(m, 1, 15) == 'evaluate:batch:' then total = total + per_job
    else total = total + 1 end
  end
  return total
end
local bound, per_job = tonumber(ARGV[6]), tonumber(ARGV[7])
local jobs = bound > 0 and redis.call('ZCARD', ARGV[1]) or 0
local depth, exact = jobs * per_job, jobs >= bound
if exact then depth = jobs end
local function opened()
  if bound <= 0 or depth < bound then return true end
  if exact then return false end
  depth, exact = traces_in(ARGV[1], per_job), true
  return depth < bound
end
local function added(n) depth = depth + n end
"""

# One job per trace unless it is queued already (like arq's enqueue_job, for many at once).
# ARGV: queue, job prefix, result prefix, expiry ms, marker prefix, bound in traces (0: none),
# traces per job, the batch job these replace ('' none), check markers (0/1), then (job id,
# payload, score) per job. A batch job's own follow-ups skip the marker check (their marker
# names the batch job that is creating them) and take its place in the queue (it has handed
# every member on or finished it), so handing on never deepens the queue.
# Returns {queued ids, ids refused for want of room}.
_ENQUEUE_LUA = (
    _QUEUED_FN
    + """
local queued, over = {}, {}
for i = 10, #ARGV, 3 do
  local id = ARGV[i]
  local taken
  if ARGV[9] == '1' then
    taken = queued_already(ARGV[2], ARGV[3], ARGV[5], id)
  else
    taken = redis.call('EXISTS', ARGV[2] .. id, ARGV[3] .. id) > 0
  end
  if not taken then
    if opened() then
      redis.call('PSETEX', ARGV[2] .. id, ARGV[4], ARGV[i + 1])
      redis.call('ZADD', ARGV[1], ARGV[i + 2], id)
      queued[#queued + 1] = id
      added(1)
    else
      over[#over + 1] = id
    end
  end
end
if ARGV[8] ~= '' then redis.call('ZREM', ARGV[1], ARGV[8]) end
return {queued, over}
"""
)

# Batch jobs: one arq job carrying several traces (arq's per-job Redis commands and Python
# are paid once per batch). The payload is arq's job format built from each member's JSON
# arguments, leaving out the members queued already; each member queued gets a marker
# naming its batch, which the single-trace enqueue above (the sweeper's) checks.
# ARGV: queue, job prefix, result prefix, expiry ms, marker prefix, bound in traces (0: none),
# traces per job, now ms, function name, then per batch: batch job id, n, n x (member job id,
# member arguments as JSON). Returns {queued ids, ids refused for want of room}.
_ENQUEUE_BATCHES_LUA = (
    _QUEUED_FN
    + """
local jp, rp, ttl, mp, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[8]
local queued, over = {}, {}
local i = 10
while i <= #ARGV do
  local batch_id, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local parts, members = {}, {}
  if redis.call('EXISTS', jp .. batch_id, rp .. batch_id) == 0 then
    for j = i, i + 2 * n - 1, 2 do
      if not queued_already(jp, rp, mp, ARGV[j]) then
        members[#members + 1] = ARGV[j]
        parts[#parts + 1] = ARGV[j + 1]
      end
    end
  end
  i = i + 2 * n
  if #parts > 0 and not opened() then
    for _, id in ipairs(members) do over[#over + 1] = id end
  elseif #parts > 0 then
    local payload = '{"t":null,"f":"' .. ARGV[9] .. '","a":[[' .. table.concat(parts, ',')
      .. ']],"k":{},"et":' .. now .. '}'
    redis.call('PSETEX', jp .. batch_id, ttl, payload)
    redis.call('ZADD', ARGV[1], now, batch_id)
    added(n)
    for _, id in ipairs(members) do
      redis.call('PSETEX', mp .. id, ttl, batch_id)
      queued[#queued + 1] = id
    end
  end
end
return {queued, over}
"""
)


# ARGV as the enqueue scripts' first seven. The traces queued (at least the bound when full).
_DEPTH_LUA = (
    _QUEUED_FN
    + """
if not exact and jobs > 0 then depth = traces_in(ARGV[1], per_job) end
return depth
"""
)


def kind_of(reason: Reason) -> str:
    # Rate-sampled and tail-sampled runs are distinct: a later negative-feedback enqueue
    # must still evaluate a trace whose first, rate-only run did not cover every rubric.
    return "rate" if reason is Reason.RATE else "tail"


def job_id_for(trace_id: str, reason: Reason | str) -> str:
    # Reason is a str enum: test it first (a tail reason's job is the "tail" kind's).
    kind = kind_of(reason) if isinstance(reason, Reason) else reason
    return f"evaluate:{kind}:{trace_id}"


def batch_marker_prefix(key_prefix: str) -> str:
    """`{prefix}:in-batch:{job id}` -> the batch job that carries that trace."""
    return f"{key_prefix}:in-batch:"


@dataclass(frozen=True, slots=True)
class QueuedTrace:
    """A trace for an evaluation job: the arguments the job function receives for it."""

    trace_id: str
    signals: dict[str, Any]
    kind: str
    # Tries a batch job spent on it before handing it to a job of its own.
    tried: int = 0

    @property
    def job_id(self) -> str:
        return job_id_for(self.trace_id, self.kind)

    def intent(self) -> Intent:
        """Its durable intent (evaluator.store.outbox), recorded before its job exists."""
        return Intent(trace_id=self.trace_id, kind=self.kind, signals=self.signals)

    def args(self) -> tuple[Any, ...]:
        base = (self.trace_id, self.signals, self.kind)
        return (*base, self.tried) if self.tried else base


def batch_job_id(members: list[QueuedTrace]) -> str:
    """Derived from the members, so a batch created again (a parked intake batch processed
    again) is the same job and not a second one; it names its size, which the queue's depth
    in traces counts (the back-pressure bound)."""
    digest = hashlib.sha1("\n".join(m.job_id for m in members).encode(), usedforsecurity=False)
    return f"evaluate:batch:{len(members)}:{digest.hexdigest()[:24]}"


def job_payload(queued: QueuedTrace, now_ms: int) -> bytes:
    return serialize_job(EVALUATE_JOB, queued.args(), {}, None, now_ms, serializer=serialize)


class JobQueue:
    """arq's queue as the intake writes it: jobs packed up to `traces_per_job` traces, and
    with `bounded` calls, created only while the queue holds fewer than `max_queue_depth`
    traces (0: no bound)."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        queue_name: str,
        max_queue_depth: int = 0,
        traces_per_job: int = 1,
    ) -> None:
        self.key_prefix = key_prefix
        self.queue_name = queue_name
        self.max_queue_depth = max_queue_depth
        self.traces_per_job = traces_per_job
        self._enqueue_script = redis.register_script(_ENQUEUE_LUA)
        self._batch_script = redis.register_script(_ENQUEUE_BATCHES_LUA)
        self._depth_script = redis.register_script(_DEPTH_LUA)

    async def depth(self) -> int:
        """The traces queued (at least `max_queue_depth` when the queue is full)."""
        return int(await self._depth_script(args=self._script_head(True)))

    async def pack(
        self, jobs: list[QueuedTrace], now_ms: int, *, bounded: bool
    ) -> tuple[list[str], list[str]]:
        """The intake's jobs: traces in batch jobs of up to `traces_per_job`, a trace listed
        twice once; returns the job ids of the traces queued (not queued already) and of
        those refused for want of room (`bounded`)."""
        first: dict[str, QueuedTrace] = {}
        for q in jobs:
            first.setdefault(q.job_id, q)
        unique = list(first.values())
        size = self.traces_per_job
        chunks = [unique[i : i + size] for i in range(0, len(unique), size)]
        singles = [(c[0], now_ms) for c in chunks if len(c) == 1]
        batches = [c for c in chunks if len(c) > 1]
        queued, over = await self.create_single(singles, check_batches=True, bounded=bounded)
        if batches:
            more, refused = await self.create_batches(batches, now_ms, bounded=bounded)
            queued, over = queued + more, over + refused
        return queued, over

    async def create_single(
        self,
        jobs: list[tuple[QueuedTrace, int]],
        *,
        check_batches: bool,
        bounded: bool,
        replacing: str = "",
    ) -> tuple[list[str], list[str]]:
        """Single-trace jobs, each at its time (epoch ms), like arq's `enqueue_job` for many
        at once. `check_batches`: leave out a trace a live batch job carries (the batch's
        own follow-ups do not: they are replacing it); `replacing`: that batch job's id, which
        leaves the queue in the same call. Returns the job ids queued and refused for want
        of room (`bounded`)."""
        if not jobs and not replacing:
            return [], []
        args = [*self._script_head(bounded), replacing, int(check_batches)]
        for queued, at_ms in jobs:
            args.extend((queued.job_id, job_payload(queued, at_ms), at_ms))
        done, over = await self._enqueue_script(args=args)
        return [i.decode() for i in done], [i.decode() for i in over]

    async def create_batches(
        self, batches: list[list[QueuedTrace]], now_ms: int, *, bounded: bool
    ) -> tuple[list[str], list[str]]:
        """Batch jobs (EVALUATE_BATCH_JOB) of these members, leaving out each member queued
        already; returns the member job ids queued and refused for want of room."""
        args = [*self._script_head(bounded), now_ms, EVALUATE_BATCH_JOB]
        for members in batches:
            args.extend((batch_job_id(members), len(members)))
            for q in members:
                args.extend((q.job_id, serialize(q.args())))
        done, over = await self._batch_script(args=args)
        return [i.decode() for i in done], [i.decode() for i in over]

    def _script_head(self, bounded: bool) -> list[Any]:
        """The arguments both enqueue scripts start with (ARGV[1..7])."""
        return [
            self.queue_name,
            job_key_prefix,
            result_key_prefix,
            JOB_EXPIRES_MS,
            batch_marker_prefix(self.key_prefix),
            self.max_queue_depth if bounded else 0,
            self.traces_per_job,
        ]
