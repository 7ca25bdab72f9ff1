"""Online evaluation worker for LLM applications.

The app-side API is small:

    from evaluator import enqueue_trace, enqueue_trace_sync, enqueue_traces

    await enqueue_trace(trace_id)                 # after a request finishes; never raises
    enqueue_trace_sync(trace_id, error=True)      # sync code; tail rules see the signals
    await evaluator.flush()                       # before an async app exits
    evaluator.flush_sync()                        # sync apps (also done at exit)

Traces themselves are ingested with `ingest_traces(store, documents)` or
`evaluator ingest FILE.jsonl`.

Names are resolved lazily (PEP 562): an app that imports `enqueue_trace` loads the intake
and the settings, not the store, SQLAlchemy, Alembic or the judge's SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SyncTraceEnqueuer": "evaluator.intake.enqueue",
    "TraceEnqueuer": "evaluator.intake.enqueue",
    "configure": "evaluator.intake.default",
    "enqueue_trace": "evaluator.intake.default",
    "enqueue_trace_sync": "evaluator.intake.default",
    "enqueue_traces": "evaluator.intake.default",
    "enqueue_traces_sync": "evaluator.intake.default",
    "flush": "evaluator.intake.default",
    "flush_sync": "evaluator.intake.default",
    "close_sync": "evaluator.intake.default",
    "ingest_jsonl": "evaluator.sources.ingest",
    "ingest_traces": "evaluator.sources.ingest",
    "Settings": "evaluator.config.settings",
    "load_settings": "evaluator.config.settings",
    "Store": "evaluator.store.store",
}

__all__ = [
    "Settings",
    "Store",
    "SyncTraceEnqueuer",
    "TraceEnqueuer",
    "close_sync",
    "configure",
    "enqueue_trace",
    "enqueue_trace_sync",
    "enqueue_traces",
    "enqueue_traces_sync",
    "flush",
    "flush_sync",
    "ingest_jsonl",
    "ingest_traces",
    "load_settings",
]

if TYPE_CHECKING:
    from evaluator.config.settings import Settings, load_settings
    from evaluator.intake.default import (
        close_sync,
        configure,
        enqueue_trace,
        enqueue_trace_sync,
        enqueue_traces,
        enqueue_traces_sync,
        flush,
        flush_sync,
    )
    from evaluator.intake.enqueue import SyncTraceEnqueuer, TraceEnqueuer
    from evaluator.sources.ingest import ingest_jsonl, ingest_traces
    from evaluator.store.store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evaluator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
