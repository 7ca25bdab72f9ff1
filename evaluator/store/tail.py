"""Stored traces that could trip a tail rule: read incrementally by ingestion time, and
marked when negative feedback arrives after the trace (`mark_negative_feedback`, which also
sets their records' inclusion probability to 1).

The intake keeps what this returns in memory and looks bare IDs up there: one indexed range
query per drained batch (usually empty) instead of a probe per ID, so applying the tail rules
to stored traces costs the hot path a dict lookup per ID.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Update, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from evaluator.store.models import EvalRecord, TraceRecord, utcnow
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


def mark_negative_feedback(
    engine: Engine,
    trace_ids: list[str],
    signal: float,
    then: Callable[[list[str]], None] | None = None,
    *,
    certain: bool = True,
) -> list[str]:
    """Set the stored feedback signal of these traces to `signal` (< 0) where it was not
    negative yet; returns the stored traces that turned negative now (each at most once, so
    the caller enqueues a trace once however many thumbs-down it gets). `then` runs on them
    before the commit: if it raises, nothing is marked and a later thumbs-down tries again.

    With `certain` (the negative-feedback rule is on), in the same transaction their
    existing records get inclusion probability 1: the
    negative-feedback tail rule takes every negative trace, so that is the probability such a
    trace had of being evaluated; keeping the rate's p would weigh it 1/p in trends and the
    regression check while the tail-evaluated ones weigh 1."""
    if not trace_ids:
        return []
    t = TraceRecord
    query = (
        update(t)
        .where(
            col(t.trace_id).in_(sorted(set(trace_ids))),
            or_(col(t.feedback).is_(None), col(t.feedback) >= 0),
        )
        .values(feedback=signal)
        .returning(col(t.trace_id))
    )
    with engine.begin() as conn:
        marked = sorted(row[0] for row in conn.execute(query))
        if marked and certain:
            conn.execute(_certain_inclusion(marked))
        if then is not None and marked:
            then(marked)
    return marked


def _certain_inclusion(trace_ids: list[str]) -> Update:
    """Records of these traces with p < 1 get p = 1 and count as written now, so the
    rollup's late-record re-fold (created_at since its last hour, evaluator.analytics.rollups)
    recomputes their hours; `trace_at` keeps them in their trace's hour (a row written before
    trace_at existed takes its old created_at)."""
    r = EvalRecord
    return (
        update(r)
        .where(col(r.trace_id).in_(trace_ids), col(r.inclusion_probability) < 1)
        .values(
            inclusion_probability=1.0,
            trace_at=func.coalesce(col(r.trace_at), col(r.created_at)),
            created_at=utcnow(),
        )
    )
