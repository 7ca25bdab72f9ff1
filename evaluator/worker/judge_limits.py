"""Redis-backed flow control for the judge client, shared by every worker process.

- `RedisRateLimiter`: token buckets for requests/minute and tokens/minute, refilled
  continuously, holding at most `burst_s` seconds of the rate, checked and debited atomically
  in one Lua call; a 429's Retry-After pauses every process. A caller that is refused is told
  how long to wait and sleeps that long (no busy polling).
- `RedisReplyCache`: judge replies by a hash of (model, temperature, prompt, schema), so
  re-evaluating the same content costs no judge call.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

# KEYS[1] rpm bucket, KEYS[2] tpm bucket, KEYS[3] shared pause-until;
# ARGV: now_s, rpm, tpm, tokens, burst_s.
# Buckets hold at most burst_s seconds of their rate (not a whole minute: a full minute of
# burst is exactly what a per-minute server limit answers with 429s).
# Returns 0 when admitted, else the seconds (as a string) to wait before trying again.
_BUCKETS_LUA = """
local now = tonumber(ARGV[1])
local burst = tonumber(ARGV[5])
local pause = tonumber(redis.call('GET', KEYS[3]) or '0')
if pause > now then return tostring(pause - now) end
local function level(key, rate, floor)
  if rate <= 0 then return nil, nil end
  local cap = math.max(floor, rate * burst / 60.0)
  local state = redis.call('HMGET', key, 'level', 'ts')
  -- A new bucket starts with one request's worth, not full: a full one let the first
  -- minute through R + burst calls, which a per-minute server limit answers with 429s.
  local lvl = tonumber(state[1]) or floor
  local ts = tonumber(state[2]) or now
  lvl = math.min(cap, lvl + (now - ts) * rate / 60.0)
  return lvl, cap
end
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local r = level(KEYS[1], rpm, 1)
local t, tcap = level(KEYS[2], tpm, tokens)
local wait = 0
if r and r < 1 then wait = math.max(wait, (1 - r) * 60.0 / rpm) end
local need = 0
if t then
  need = math.min(tokens, tcap)
  if t < need then wait = math.max(wait, (need - t) * 60.0 / tpm) end
end
if wait > 0 then return tostring(wait) end
if r then
  redis.call('HSET', KEYS[1], 'level', r - 1, 'ts', now)
  redis.call('EXPIRE', KEYS[1], 120)
end
if t then
  redis.call('HSET', KEYS[2], 'level', t - need, 'ts', now)
  redis.call('EXPIRE', KEYS[2], 120)
end
return 0
"""


class RedisRateLimiter:
    def __init__(
        self, redis: Redis, *, name: str, rpm: int, tpm: int, burst_s: float = 2.0
    ) -> None:
        self._redis = redis
        self._keys = [f"{name}:rpm", f"{name}:tpm", f"{name}:pause"]
        self.rpm = rpm
        self.tpm = tpm
        self.burst_s = burst_s
        self._script = redis.register_script(_BUCKETS_LUA)

    async def acquire(self, tokens: int) -> None:
        while True:
            # Redis server time would be better across hosts; wall clock is enough when the
            # workers' clocks are NTP-synced, which a 60-second bucket tolerates.
            wait = await self._script(
                keys=self._keys, args=[time.time(), self.rpm, self.tpm, tokens, self.burst_s]
            )
            seconds = float(wait)
            if seconds <= 0:
                return
            await asyncio.sleep(min(seconds, 5.0))

    async def pause(self, seconds: float) -> None:
        """A 429 told one process to wait: every process sharing the limit waits too."""
        until = time.time() + seconds
        # Only ever extend the pause; a shorter write racing a longer one costs at most one
        # early retry, which the endpoint answers with another Retry-After.
        current = await self._redis.get(self._keys[2])
        if current is None or float(current) < until:
            await self._redis.set(self._keys[2], repr(until), ex=max(1, int(seconds) + 1))


class RedisReplyCache:
    def __init__(self, redis: Redis, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_s

    async def get(self, key: str) -> str | None:
        value = await self._redis.get(f"{self._prefix}:{key}")
        return None if value is None else value.decode()

    async def set(self, key: str, value: str) -> None:
        await self._redis.set(f"{self._prefix}:{key}", value, ex=self._ttl)
