"""The app-side functions (`from evaluator import enqueue_trace, ...`): one default
enqueuer per process, built from settings on first use. Never raise into the caller.

At exit the sync enqueuer pushes what it holds (atexit); the async one when `asyncio.run()`
shuts its loop down; with another loop runner call `await evaluator.flush()` first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from evaluator.config.settings import Settings, load_settings
from evaluator.intake.enqueue import SyncTraceEnqueuer, TraceEnqueuer

log = logging.getLogger("evaluator.intake.enqueue")

_settings: Settings | None = None
_default_async: TraceEnqueuer | None = None
_default_sync: SyncTraceEnqueuer | None = None
_default_lock = threading.Lock()


def _intake_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "key_prefix": settings.redis.key_prefix,
        "batch_size": settings.intake.batch_size,
        "linger_ms": settings.intake.linger_ms,
        "buffer_max": settings.intake.buffer_max,
    }


def configure(settings: Settings | None = None) -> None:
    """Set the settings the module-level functions use (default: load_settings())."""
    global _settings, _default_async, _default_sync
    with _default_lock:
        _settings = settings or load_settings()
        _default_async = None
        _default_sync = None


def _current_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def _get_async() -> TraceEnqueuer:
    global _default_async
    with _default_lock:
        if _default_async is None:
            settings = _current_settings()
            _default_async = TraceEnqueuer(settings.redis.url, **_intake_kwargs(settings))
        return _default_async


def _get_sync() -> SyncTraceEnqueuer:
    global _default_sync
    with _default_lock:
        if _default_sync is None:
            settings = _current_settings()
            _default_sync = SyncTraceEnqueuer(settings.redis.url, **_intake_kwargs(settings))
        return _default_sync


async def enqueue_trace(
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
    """Queue one finished trace for evaluation. Never raises; False if the ID was invalid.

    `feature`, `tenant` and `prompt_version` name the trace's stratum for a judge budget
    (README, Judge budget); without them the trace is allocated by rubric alone."""
    try:
        return _get_async().enqueue(
            trace_id,
            error=error,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            feedback=feedback,
            feature=feature,
            tenant=tenant,
            prompt_version=prompt_version,
        )
    except Exception:  # the request path must never see our failure
        log.exception("enqueue_trace failed")
        return False


async def enqueue_traces(trace_ids: Iterable[str]) -> int:
    """Queue many trace IDs; returns how many were accepted. Never raises."""
    try:
        return _get_async().enqueue_many(trace_ids)
    except Exception:
        log.exception("enqueue_traces failed")
        return 0


def enqueue_trace_sync(
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
    """Sync form of enqueue_trace, for threads and sync web frameworks. Never raises."""
    try:
        return _get_sync().enqueue(
            trace_id,
            error=error,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            feedback=feedback,
            feature=feature,
            tenant=tenant,
            prompt_version=prompt_version,
        )
    except Exception:
        log.exception("enqueue_trace_sync failed")
        return False


def enqueue_traces_sync(trace_ids: Iterable[str]) -> int:
    try:
        return _get_sync().enqueue_many(trace_ids)
    except Exception:
        log.exception("enqueue_traces_sync failed")
        return 0


async def flush() -> bool:
    """Push what the default async enqueuer holds: `await evaluator.flush()` before the event
    loop ends (asyncio.run() does it on its own; other loop runners may not)."""
    return await _default_async.flush() if _default_async is not None else True


def flush_sync() -> bool:
    """Push what the default sync enqueuer holds; True if nothing is left."""
    return _default_sync.flush() if _default_sync is not None else True


def close_sync() -> None:
    """Push the rest and stop the default sync enqueuer (also done at interpreter exit)."""
    global _default_sync
    with _default_lock:
        enqueuer, _default_sync = _default_sync, None
    if enqueuer is not None:
        enqueuer.close()
