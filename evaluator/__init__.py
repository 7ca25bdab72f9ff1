"""Online evaluation worker for LLM applications.

The app-side API is small:

    from evaluator import enqueue_trace, enqueue_trace_sync, enqueue_traces

    await enqueue_trace(trace_id)                 # after a request finishes; never raises
    enqueue_trace_sync(trace_id, error=True)      # sync code; tail rules see the signals

Traces themselves are ingested with `ingest_traces(store, documents)` or
`evaluator ingest FILE.jsonl`.
"""

from __future__ import annotations

from .enqueue import (
    SyncTraceEnqueuer,
    TraceEnqueuer,
    configure,
    enqueue_trace,
    enqueue_trace_sync,
    enqueue_traces,
    enqueue_traces_sync,
    flush,
)
from .ingest import ingest_jsonl, ingest_traces
from .settings import Settings, load_settings
from .store import Store

__all__ = [
    "Settings",
    "Store",
    "SyncTraceEnqueuer",
    "TraceEnqueuer",
    "configure",
    "enqueue_trace",
    "enqueue_trace_sync",
    "enqueue_traces",
    "enqueue_traces_sync",
    "flush",
    "ingest_jsonl",
    "ingest_traces",
    "load_settings",
]
