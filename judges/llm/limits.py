"""Flow control for judge calls: adaptive concurrency, a rate-limit seam, a reply-cache seam.

The judge client owns every HTTP retry (the SDK's own retries are off), so it sees each 429
and can shrink its concurrency (AIMD: halve on 429, +1 after a run of successes). Shared
limits across worker processes and the reply cache live behind small protocols so that
`judges` stays free of Redis; the service plugs in Redis-backed implementations.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from judges.llm.backoff import backoff_s

__all__ = ["backoff_s"]  # kept here for callers of the old location


class RateLimiter(Protocol):
    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about `tokens` tokens may be sent."""

    async def pause(self, seconds: float) -> None:
        """The endpoint answered 429 with Retry-After: hold every sender that long."""


class ReplyCache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str) -> None: ...


class NoRateLimit:
    async def acquire(self, tokens: int) -> None:
        return None

    async def pause(self, seconds: float) -> None:
        return None


class AdaptiveConcurrency:
    """A semaphore whose size follows the endpoint: halves on 429, grows back slowly."""

    def __init__(self, maximum: int, *, minimum: int = 1, grow_after: int = 20) -> None:
        self.maximum = maximum
        self.minimum = minimum
        self.limit = maximum
        self._grow_after = grow_after
        self._streak = 0
        self._in_flight = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._in_flight < self.limit)
            self._in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    def on_success(self) -> None:
        self._streak += 1
        if self._streak >= self._grow_after and self.limit < self.maximum:
            self.limit += 1
            self._streak = 0

    def on_rate_limited(self) -> None:
        self._streak = 0
        self.limit = max(self.minimum, self.limit // 2)
