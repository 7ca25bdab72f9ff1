"""One run at a time across workers: a Redis lock for cron jobs that must not overlap.

arq's unique cron id enqueues a job once per period, but a run longer than the period
overlaps the next one (on this worker or another). `held` takes `key` with SET NX PX and a
random token and releases it by compare-and-delete, so a run whose lock lapsed never deletes
the lock of the run after it. Give the lock a TTL longer than the job's timeout: it then
lapses only after a run that died without releasing it (a killed worker).

    >>> async with held(redis, "prefix:batches:lock", ttl_s=360) as mine:  # doctest: +SKIP
    ...     if mine:
    ...         await run()
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("evaluator.worker.run_lock")

# Delete the key only while it still holds our token.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@asynccontextmanager
async def held(redis: Redis, key: str, *, ttl_s: float) -> AsyncIterator[bool]:
    """Yields True when this run holds the lock (and releases it after), False when another
    run holds it."""
    token = secrets.token_hex(16)
    mine = bool(await redis.set(key, token, nx=True, px=int(ttl_s * 1000)))
    try:
        yield mine
    finally:
        if mine:
            try:
                # redis-py types eval as sync-or-async (Awaitable | Any); this client is async.
                await redis.eval(_RELEASE, 1, key, token)  # type: ignore[misc]
            except RedisError:
                # The run's outcome stands; the lock lapses with its TTL.
                log.warning("could not release %s; it lapses in %.0f s", key, ttl_s)
