"""Stored traces that could trip a tail rule, read incrementally by ingestion time.

The intake keeps what this returns in memory and looks bare IDs up there: one indexed range
query per drained batch (usually empty) instead of a probe per ID, so applying the tail rules
to stored traces costs the hot path a dict lookup per ID.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from evaluator.store.models import TraceRecord
from evaluator.store.store import as_utc


@dataclass(frozen=True, slots=True)
class StoredTail:
    trace_id: str
    ingested_at: datetime
    error: bool
    cost_usd: float | None
    latency_ms: float | None
    feedback: float | None


def tail_traces_since(
    engine: Engine,
    since: datetime,
    *,
    on_error: bool,
    on_negative_feedback: bool,
    cost_above_usd: float,
    latency_above_ms: float,
    limit: int = 100_000,
) -> list[StoredTail]:
    """Traces ingested at or after `since` whose stored signals may trip a rule, oldest first."""
    t = TraceRecord
    conditions: list[ColumnElement[bool]] = []
    if on_error:
        conditions.append(col(t.is_error).is_(True))
    if on_negative_feedback:
        conditions.append(col(t.feedback) < 0)
    if cost_above_usd > 0:
        conditions.append(col(t.cost_usd) > cost_above_usd)
    if latency_above_ms > 0:
        conditions.append(col(t.latency_ms) > latency_above_ms)
    if not conditions:
        return []
    query = (
        select(
            col(t.trace_id),
            col(t.ingested_at),
            col(t.is_error),
            col(t.cost_usd),
            col(t.latency_ms),
            col(t.feedback),
        )
        .where(col(t.ingested_at) >= since, or_(*conditions))
        .order_by(col(t.ingested_at))
        .limit(limit)
    )
    with engine.connect() as conn:
        return [
            StoredTail(tid, as_utc(at), bool(err), cost, latency, feedback)
            for tid, at, err, cost, latency, feedback in conn.execute(query)
        ]
