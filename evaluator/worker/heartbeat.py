"""The worker's own heartbeat: one Redis key per live worker process.

Each worker writes `<key_prefix>:heartbeat:<queue>:<id>` — its id, host, pid, start time,
the time of its last finished job and of this beat — every `worker.heartbeat_s`, with a TTL
of 3 × heartbeat_s, and deletes it on a clean stop. `evaluator health --require-worker=N`
counts the keys. arq's own health-check key is not used: its TTL is about an hour and work
does not refresh it.

Guarantee: a worker killed with SIGKILL (or frozen: its event loop never gets to beat)
disappears from the count at most 3 × heartbeat_s after its last beat (30 s at the default
10 s), i.e. `health --require-worker` turns unhealthy within that long after fewer than N
workers remain. Assumes Redis's clock for the TTL; the beat itself carries no clock claims.
A beat that fails (Redis away) is logged once per outage and retried on the next period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger("evaluator.worker.heartbeat")

TTL_PERIODS = 3


def key_pattern(key_prefix: str, queue_name: str) -> str:
    return f"{key_prefix}:heartbeat:{queue_name}:*"


def worker_key(key_prefix: str, queue_name: str, worker_id: str) -> str:
    return f"{key_prefix}:heartbeat:{queue_name}:{worker_id}"


class Heartbeat:
    """Beats for one worker process until stopped; `job_done()` records the last job time."""

    def __init__(
        self,
        redis: Any,
        key_prefix: str,
        queue_name: str,
        period_s: float,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.redis, self.period_s = redis, period_s
        # More state to publish with each beat (the judge's adaptive concurrency limit).
        self.extra = extra
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self.key = worker_key(key_prefix, queue_name, self.id)
        self.started_at = time.time()
        self.last_job_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def job_done(self) -> None:
        self.last_job_at = time.time()

    def value(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "host": self.host,
                "pid": self.pid,
                "started_at": self.started_at,
                "last_job_at": self.last_job_at,
                "beat_at": time.time(),
                **(self.extra() if self.extra is not None else {}),
            }
        )

    async def beat(self) -> None:
        ttl_ms = max(1, round(TTL_PERIODS * self.period_s * 1000))
        await self.redis.set(self.key, self.value(), px=ttl_ms)

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
                if self._failing:
                    log.warning("heartbeat: writing to Redis again")
                self._failing = False
            except Exception as exc:  # Redis away: the key expires, health says so
                if not self._failing:
                    log.warning("heartbeat: cannot write to Redis (%r); retrying", exc)
                self._failing = True
            await asyncio.sleep(self.period_s)

    async def start(self) -> None:
        """First beat before returning (a worker counts once it is up), then in the background."""
        try:
            await self.beat()
        except Exception as exc:
            self._failing = True
            log.warning("heartbeat: cannot write to Redis (%r); retrying", exc)
        self._task = asyncio.create_task(self._loop_after_first(), name="evaluator-heartbeat")

    async def _loop_after_first(self) -> None:
        await asyncio.sleep(self.period_s)
        await self._run()

    async def stop(self) -> None:
        """Stop beating and delete the key: a clean stop leaves the count at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.redis.delete(self.key)
        except Exception as exc:  # the key expires on its own
            log.debug("heartbeat: key not deleted (%r)", exc)


async def live_workers(redis: Any, key_prefix: str, queue_name: str) -> list[dict[str, Any]]:
    """The heartbeats whose TTL has not run out, oldest start first."""
    found = []
    async for key in redis.scan_iter(match=key_pattern(key_prefix, queue_name), count=500):
        raw = await redis.get(key)
        if raw is None:  # expired between SCAN and GET
            continue
        try:
            found.append(json.loads(raw))
        except ValueError:
            continue
    return sorted(found, key=lambda w: w.get("started_at") or 0)
