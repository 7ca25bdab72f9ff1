"""Where sampled traces wait for room in the queue (back-pressure), oldest first.

A trace the intake or the sweeper cannot queue because the queue holds `worker.max_queue_depth`
traces is held here: its job id in the sorted set `{prefix}:intake:held` (scored by arrival,
so the oldest leaves first) and its job arguments in the hash `{prefix}:intake:held:args`.
Every worker's intake loop takes held traces out as soon as the queue has room (the drain's
`refill`), packed into batch jobs like fresh ones, so a backlog drains at the worker's rate
instead of waiting for the once-a-minute sweeper.

Guarantee: nothing here is the record of the work. Each held trace has a pending intent in
SQL (evaluator.store.outbox) written before it was held; if Redis loses this set, or it is
full (HELD_MAX), the sweeper finds the intents due and holds or queues them again. Holding
is idempotent (a trace held twice is held once, in its first place).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import cast

from redis.asyncio import Redis

# Held traces beyond this wait in SQL only (the sweeper's); ~300 B of Redis memory each.
HELD_MAX = 100_000
REFILL_MAX = 10_000  # held traces one refill takes at most (like one intake batch)


def held_key(prefix: str) -> str:
    return f"{prefix}:intake:held"


def held_args_key(prefix: str) -> str:
    return f"{prefix}:intake:held:args"


# KEYS: held, args. ARGV: cap, first score, then (job id, arguments) pairs. New ids only
# (a held id keeps its place), while the set is under the cap. Returns how many are held now.
_HOLD_LUA = """
local cap, score, added = tonumber(ARGV[1]), tonumber(ARGV[2]), 0
local size = redis.call('ZCARD', KEYS[1])
for i = 3, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    added = added + 1
  elseif size < cap then
    redis.call('ZADD', KEYS[1], string.format('%.0f', score), ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    score, size, added = score + 1, size + 1, added + 1
  end
end
return added
"""

# KEYS: held, args. ARGV: n. The n oldest held traces: id, arguments, id, arguments ...
_PEEK_LUA = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""


async def hold(redis: Redis, prefix: str, items: Sequence[tuple[str, bytes]], now_ms: int) -> int:
    """Hold (job id, job arguments) pairs after those held already; returns how many are held
    (new or held before). The rest (over HELD_MAX) stay pending in SQL for the sweeper."""
    if not items:
        return 0
    args: list[bytes | str | int] = [
        HELD_MAX,
        now_ms * 1000,
    ]  # room for 1,000 per ms in arrival order
    for job_id, payload in items:
        args.extend((job_id, payload))
    script = redis.register_script(_HOLD_LUA)
    return int(await script(keys=[held_key(prefix), held_args_key(prefix)], args=args))


async def waiting(redis: Redis, prefix: str) -> int:
    """How many traces are held."""
    return int(await cast("Awaitable[int]", redis.zcard(held_key(prefix))))


async def peek(redis: Redis, prefix: str, n: int) -> list[tuple[str, bytes]]:
    """The `n` oldest held traces (left held: `release` them once their jobs exist)."""
    if n <= 0:
        return []
    script = redis.register_script(_PEEK_LUA)
    flat = await script(keys=[held_key(prefix), held_args_key(prefix)], args=[n])
    return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]


async def release(redis: Redis, prefix: str, job_ids: Sequence[str]) -> None:
    """No longer held (queued, or needing no job)."""
    if not job_ids:
        return
    pipe = redis.pipeline(transaction=True)
    pipe.zrem(held_key(prefix), *job_ids)
    pipe.hdel(held_args_key(prefix), *job_ids)
    await pipe.execute()
