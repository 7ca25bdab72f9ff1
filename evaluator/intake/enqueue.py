"""App side: hand trace IDs to the evaluator at next to no cost, and never raise.

`enqueue_trace()` appends to an in-process buffer and returns; a background flusher pushes
the buffer to a Redis list in batches (one RPUSH per batch). When Redis is slow or down the
IDs stay in the bounded buffer and are retried; beyond the bound the oldest are dropped and
counted. Nothing here raises into the caller's request path.

    from evaluator import enqueue_trace
    await enqueue_trace(trace_id, error=False, latency_ms=840)

    from evaluator import enqueue_trace_sync      # in sync code (a thread flushes)
    enqueue_trace_sync(trace_id)

Shutdown: the sync enqueuer flushes at interpreter exit (atexit) and has `flush()`/`close()`
(module level: `flush_sync()`, `close_sync()`). The async one flushes when `asyncio.run()`
shuts its loop down; elsewhere call `await evaluator.flush()` before the loop ends. What is
still buffered when the process is killed (SIGKILL, os._exit) is lost: at most one linger
period (`intake.linger_ms`) of IDs, or the whole buffer while Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import redis
from typing_extensions import Unpack

from evaluator.config.redis_clients import async_redis, sync_redis
from evaluator.config.settings import RedisSettings
from evaluator.intake.wire import check_trace_id, encode
from evaluator.sampling import Labels, Signals
from judges.llm.backoff import Backoff

log = logging.getLogger("evaluator.intake.enqueue")


def intake_key(prefix: str) -> str:
    return f"{prefix}:intake"


@dataclass
class EnqueueStats:
    accepted: int = 0
    pushed: int = 0
    rejected: int = 0
    dropped: int = 0
    # Signal values refused (NaN, ±Inf, out of range); their trace IDs were still accepted.
    values_refused: int = 0
    push_failures: int = 0
    last_error: str | None = None


@dataclass
class _Buffer:
    """The bounded buffer and its accounting, shared by the async and the sync enqueuer."""

    max_size: int
    items: deque[str] = field(default_factory=deque)
    stats: EnqueueStats = field(default_factory=EnqueueStats)
    _last_log: float = 0.0

    def add(self, trace_id: str, signals: Signals | None, labels: Labels | None = None) -> bool:
        problem = check_trace_id(trace_id)
        if problem:
            self.stats.rejected += 1
            self._warn(f"enqueue rejected: {problem}")
            return False
        if len(self.items) >= self.max_size:
            self.items.popleft()
            self.stats.dropped += 1
        self.items.append(encode(trace_id, signals, labels))
        self.stats.accepted += 1
        return True

    def take(self, n: int) -> list[str]:
        items = self.items
        n = min(n, len(items))
        return [items.popleft() for _ in range(n)]

    def give_back(self, batch: list[str], error: Exception) -> None:
        # Put the batch back in front, oldest first, within the bound.
        self.stats.push_failures += 1
        self.stats.last_error = repr(error)
        room = self.max_size - len(self.items)
        keep = batch[-room:] if room > 0 else []
        self.stats.dropped += len(batch) - len(keep)
        self.items.extendleft(reversed(keep))
        self._warn(f"evaluator intake unavailable, {len(self.items)} IDs buffered: {error!r}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log > 5.0:  # at most one line per 5 s in the app's log
            self._last_log = now
            log.warning(message)


def _signals(
    buffer: _Buffer,
    trace_id: str,
    error: bool,
    cost_usd: float | None,
    latency_ms: float | None,
    feedback: float | None,
) -> Signals | None:
    if not error and cost_usd is None and latency_ms is None and feedback is None:
        return None
    signals, refused = Signals.checked(
        error=error, cost_usd=cost_usd, latency_ms=latency_ms, feedback=feedback
    )
    if refused:
        # A NaN must not reach the worker (PostgreSQL's JSON refuses it); the ID still goes.
        buffer.stats.values_refused += len(refused)
        buffer._warn(f"enqueue {trace_id!r}: refused invalid signal value(s) {refused}")
    return signals


def _labels(
    buffer: _Buffer,
    trace_id: str,
    feature: str | None,
    tenant: str | None,
    prompt_version: str | None,
) -> Labels | None:
    if feature is None and tenant is None and prompt_version is None:
        return None
    labels, refused = Labels.checked(feature=feature, tenant=tenant, prompt_version=prompt_version)
    if refused:
        # Not a str of 1..256 printable characters: the stratum falls back to the rubric alone.
        buffer.stats.values_refused += len(refused)
        buffer._warn(f"enqueue {trace_id!r}: refused invalid label(s) {refused}")
    return labels or None


class EnqueuerOptions(TypedDict, total=False):
    """Keyword options of both enqueuers (defaults in `_Enqueuer.__init__`)."""

    key_prefix: str
    batch_size: int
    linger_ms: float
    buffer_max: int
    retry_delay_s: float


class _Enqueuer:
    """What both enqueuers share: where IDs go, how they are batched, the bounded buffer."""

    def __init__(
        self,
        *,
        key_prefix: str = "evaluator",
        batch_size: int = 500,
        linger_ms: float = 20,
        buffer_max: int = 100_000,
        retry_delay_s: float = 1.0,
    ) -> None:
        self._key = intake_key(key_prefix)
        self._batch = batch_size
        self._linger = max(linger_ms / 1000, 0.001)
        self._retry_delay = retry_delay_s
        self._buffer = _Buffer(max_size=buffer_max)

    @property
    def stats(self) -> EnqueueStats:
        return self._buffer.stats

    @property
    def buffered(self) -> int:
        return len(self._buffer.items)

    def enqueue(
        self,
        trace_id: str,
        *,
        error: bool = False,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        feedback: float | None = None,
        feature: str | None = None,
        tenant: str | None = None,
        prompt_version: str | None = None,
    ) -> bool:
        """Buffer one trace ID; returns False (and counts) if the ID is invalid. The labels
        name the trace's stratum for a budgeted allocation (README, Judge budget)."""
        signals = _signals(self._buffer, trace_id, error, cost_usd, latency_ms, feedback)
        labels = _labels(self._buffer, trace_id, feature, tenant, prompt_version)
        return self._add(trace_id, signals, labels)

    def enqueue_many(self, trace_ids: Iterable[str]) -> int:
        return sum(self._add(t, None, None) for t in trace_ids)

    def _add(self, trace_id: str, signals: Signals | None, labels: Labels | None) -> bool:
        raise NotImplementedError


class TraceEnqueuer(_Enqueuer):
    """Async enqueuer: `enqueue()` is synchronous and O(1); a task flushes in batches."""

    def __init__(self, redis_url: str | RedisSettings, **options: Unpack[EnqueuerOptions]) -> None:
        super().__init__(**options)
        self._redis = async_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._push_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._shutdown_hook: AsyncGenerator[None, None] | None = None
        self._hook_started: asyncio.Task[None] | None = None

    def _add(self, trace_id: str, signals: Signals | None, labels: Labels | None) -> bool:
        ok = self._buffer.add(trace_id, signals, labels)
        if self._task is None:
            self._start()
        return ok

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the IDs wait in the buffer until flush() or a later enqueue
        self._task = loop.create_task(self._run(), name="evaluator-enqueue-flusher")
        # asyncio.run() finalises async generators after cancelling tasks and before closing
        # the loop: this one's `finally` is the loop's shutdown hook (it pushes the rest).
        self._shutdown_hook = self._flush_at_loop_end()
        self._hook_started = loop.create_task(
            anext(self._shutdown_hook), name="evaluator-enqueue-shutdown-hook"
        )

    async def _flush_at_loop_end(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._buffer.items:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._push_all(), timeout=5.0)

    async def _run(self) -> None:
        # A plain sleep, not wait_for(event): on 3.11 wait_for can hang a cancelled task, and
        # at one push per linger period a 500-ID batch already covers 25,000 IDs/s.
        backoff = Backoff(base=self._retry_delay, cap=max(self._retry_delay, 30.0))
        while True:
            await asyncio.sleep(self._linger)
            if await self._push_once():
                backoff.reset()
            else:
                await asyncio.sleep(backoff.next())

    async def _push_once(self) -> bool:
        # One pusher at a time: flush() must wait for a batch the flusher task has in flight,
        # or it would report an empty buffer while IDs are still on their way.
        async with self._push_lock:
            return await self._push_all()

    async def _push_all(self) -> bool:
        while self._buffer.items:
            batch = self._buffer.take(self._batch)
            try:
                await self._redis.rpush(self._key, *batch)
            except (redis.RedisError, OSError) as exc:
                self._buffer.give_back(batch, exc)
                return False
            except asyncio.CancelledError:
                # Cancelled mid-push (shutdown): keep the batch. If Redis did take it, the
                # worker sees it twice, which job IDs and the unique record make harmless.
                self._buffer.items.extendleft(reversed(batch))
                raise
            self._buffer.stats.pushed += len(batch)
        return True

    async def flush(self) -> bool:
        """Push everything buffered now; True if the buffer is empty afterwards."""
        return await self._push_once()

    async def aclose(self) -> None:
        """Stop the flusher, push what is buffered, close the connection."""
        if self._task is not None:
            # Cancel only between pushes, so no batch is both sent and put back (a duplicate).
            async with self._push_lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        await self._redis.aclose()


class SyncTraceEnqueuer(_Enqueuer):
    """Thread-safe enqueuer for sync code: a daemon thread flushes in batches."""

    def __init__(self, redis_url: str | RedisSettings, **options: Unpack[EnqueuerOptions]) -> None:
        super().__init__(**options)
        self._redis = sync_redis(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="evaluator-enqueue-flusher", daemon=True
        )
        self._thread.start()
        # The flusher is a daemon thread (it must not keep the app alive), so push what is
        # left when the interpreter exits; weak, so a dropped enqueuer can be collected.
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)

    def _add(self, trace_id: str, signals: Signals | None, labels: Labels | None) -> bool:
        with self._lock:
            ok = self._buffer.add(trace_id, signals, labels)
            full = len(self._buffer.items) >= self._batch
        if full:
            self._wakeup.set()
        return ok

    def _run(self) -> None:
        backoff = Backoff(base=self._retry_delay, cap=max(self._retry_delay, 30.0))
        while not self._stop.is_set():
            self._wakeup.wait(self._linger)
            self._wakeup.clear()
            if self.flush():
                backoff.reset()
            else:
                self._stop.wait(backoff.next())

    def flush(self) -> bool:
        """Push everything buffered now; True if the buffer is empty afterwards."""
        while True:
            with self._lock:
                batch = self._buffer.take(self._batch)
            if not batch:
                return True
            try:
                self._redis.rpush(self._key, *batch)
            except (redis.RedisError, OSError) as exc:
                with self._lock:
                    self._buffer.give_back(batch, exc)
                return False
            with self._lock:
                self._buffer.stats.pushed += len(batch)

    def close(self) -> None:
        """Stop the flusher and push the rest (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wakeup.set()
        self._thread.join(timeout=5)
        self.flush()
        self._redis.close()


def _close_at_exit(ref: weakref.ReferenceType[SyncTraceEnqueuer]) -> None:
    enqueuer = ref()
    if enqueuer is None:
        return
    try:
        enqueuer.close()
    except Exception:  # at exit there is no caller left to tell; the log says what was lost
        log.exception("evaluator: could not push %d buffered trace IDs at exit", enqueuer.buffered)


_MOVED = frozenset(
    {
        "configure",
        "enqueue_trace",
        "enqueue_trace_sync",
        "enqueue_traces",
        "enqueue_traces_sync",
        "flush",
        "flush_sync",
        "close_sync",
    }
)


def __getattr__(name: str) -> Any:
    # The module-level functions live in evaluator.intake.default now; old imports still work.
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module("evaluator.intake.default"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
