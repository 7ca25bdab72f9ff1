"""Tail-rule signals of a stored trace as columns, so the intake can apply the tail rules to a
trace enqueued by its bare ID with one indexed query per batch (feedback, cost, latency; the
error flag exists since 0001).

Existing rows are filled from their payloads in batches.

Revision ID: 0005_trace_signals
Revises: 0004_feedback
Create Date: 2026-11-30
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005_trace_signals"
down_revision: str | None = "0004_feedback"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("feedback", "cost_usd", "latency_ms")
_BATCH = 2000


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _latency_ms(spans: list[Any]) -> float | None:
    # Frozen copy of Trace.latency_ms at this revision: a migration must not change meaning
    # when the model does.
    def times(key: str) -> list[datetime]:
        out = []
        for span in spans:
            raw = span.get(key) if isinstance(span, dict) else None
            if isinstance(raw, str):
                try:
                    out.append(datetime.fromisoformat(raw.replace("Z", "+00:00")))
                except ValueError:
                    continue
        return out

    starts, ends = times("start_time"), times("end_time")
    if not starts or not ends:
        return None
    try:
        return (max(ends) - min(starts)).total_seconds() * 1000
    except TypeError:  # naive and aware times mixed
        return None


def signals_of(payload: Any) -> dict[str, float | None]:
    raw = json.loads(payload) if isinstance(payload, str) else payload
    doc: dict[str, Any] = raw if isinstance(raw, dict) else {}
    attrs = doc.get("attributes")
    attrs = attrs if isinstance(attrs, dict) else {}
    spans = doc.get("spans")
    spans = spans if isinstance(spans, list) else []
    return {
        "feedback": _number(attrs.get("feedback")),
        "cost_usd": _number(attrs.get("cost_usd")),
        "latency_ms": _latency_ms(spans),
    }


def upgrade() -> None:
    existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("traces")}
    with op.batch_alter_table("traces") as batch:
        for name in COLUMNS:
            if name not in existing:
                batch.add_column(sa.Column(name, sa.Float(), nullable=True))
    bind = op.get_bind()
    traces = sa.table(
        "traces",
        sa.column("trace_id", sa.String),
        sa.column("payload", sa.JSON),
        *(sa.column(name, sa.Float) for name in COLUMNS),
    )
    last = ""
    while True:
        rows = bind.execute(
            sa.select(traces.c.trace_id, traces.c.payload)
            .where(traces.c.trace_id > last)
            .order_by(traces.c.trace_id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for trace_id, payload in rows:
            bind.execute(
                traces.update().where(traces.c.trace_id == trace_id).values(**signals_of(payload))
            )
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
