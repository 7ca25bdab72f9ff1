"""Flow control for judge calls: adaptive concurrency, a rate-limit seam, a reply-cache seam.

Adaptive concurrency lives in judges.llm.concurrency (re-exported here). Shared limits
across worker processes and the reply cache live behind small protocols so that `judges`
stays free of Redis; the service plugs in Redis-backed implementations.
"""

from __future__ import annotations

from typing import Protocol

from judges.llm.backoff import backoff_s
from judges.llm.concurrency import AdaptiveConcurrency

__all__ = ["AdaptiveConcurrency", "backoff_s"]  # kept here for callers of the old location


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
