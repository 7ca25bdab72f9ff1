"""Judge calls waiting in the provider's Batch API, kept in SQL so a restart loses none.

A `BatchRequest` is one rubric's pending judge call for one trace, keyed by a `custom_id`
derived from the record's identity (trace, span, rubric, rubric version): parking the same
evaluation twice stores it once, and its result is written through the same unique record.
Its life: pending → submitted (in a `JudgeBatch`) → done (an ok record) or error (an error
record); a batch that expires or is cancelled returns its unanswered requests to pending. A
settled request keeps no `body` (the prompt quotes the trace): the record holds the verdict.
Parking an evaluation whose request ended in `error` again (`evaluator retry --errors` re-runs
the trace) sends it again, as online mode overwrites an error record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Text, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import JSON, Field, SQLModel

from evaluator.store.models import table_of, utcnow

PENDING, SUBMITTED, DONE, ERROR = "pending", "submitted", "done", "error"
SETTLED = (DONE, ERROR)


class BatchRequest(SQLModel, table=True):
    __tablename__ = "batch_requests"
    __table_args__ = (
        Index("ix_batch_requests_status", "status", "created_at"),
        Index("ix_batch_requests_batch", "batch_id"),
    )

    custom_id: str = Field(primary_key=True, max_length=64)
    trace_id: str = Field(max_length=256)
    span_id: str = Field(default="", max_length=256)
    rubric: str = Field(max_length=128)
    rubric_version: str = Field(max_length=64)
    sampled_by: str = Field(default="", max_length=16)
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # Carried to the record when the batch answers (weights and trace-time bucketing, 0007).
    inclusion_probability: float | None = None
    trace_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    status: str = Field(default=PENDING, max_length=16)
    batch_id: str | None = Field(default=None, max_length=128)
    submissions: int = 0
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class JudgeBatch(SQLModel, table=True):
    """One batch at the provider; open until `settled_at` (its results are written)."""

    __tablename__ = "judge_batches"
    __table_args__ = (Index("ix_judge_batches_open", "settled_at"),)

    id: str = Field(primary_key=True, max_length=128)
    status: str = Field(max_length=32)  # the provider's: validating, in_progress, completed, ...
    requests: int = 0
    input_file_id: str = Field(default="", max_length=128)
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    settled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


_REQUESTS = table_of(BatchRequest)
_BATCHES = table_of(JudgeBatch)


def park(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Store pending requests inside the caller's transaction; a custom_id already pending,
    submitted or done is left as it is, one that ended in an error record is pending again."""
    if not rows:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    values = [
        {"status": PENDING, "submissions": 0, "last_error": "", "created_at": now, **r}
        for r in rows
    ]
    statement = insert(_REQUESTS)
    again = {
        "status": PENDING,
        "body": statement.excluded.body,
        "batch_id": None,
        "submissions": 0,
        "created_at": now,
    }
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["custom_id"], set_=again, where=_REQUESTS.c.status == ERROR
        ),
        values,
    )


def pending(engine: Engine, limit: int) -> list[BatchRequest]:
    """The oldest pending requests, at most `limit` (one batch file's worth)."""
    query = (
        select(_REQUESTS)
        .where(_REQUESTS.c.status == PENDING)
        .order_by(_REQUESTS.c.created_at, _REQUESTS.c.custom_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [BatchRequest(**row._mapping) for row in conn.execute(query)]


def record_submission(
    engine: Engine, *, batch_id: str, status: str, input_file_id: str, custom_ids: Sequence[str]
) -> int:
    """The batch and its requests, in one transaction; returns the requests it took (a
    request another run submitted meanwhile stays with that run's batch)."""
    with engine.begin() as conn:
        conn.execute(
            _BATCHES.insert().values(
                id=batch_id,
                status=status,
                requests=len(custom_ids),
                input_file_id=input_file_id,
                last_error="",
                created_at=utcnow(),
            )
        )
        taken = conn.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.custom_id.in_(custom_ids), _REQUESTS.c.status == PENDING)
            .values(status=SUBMITTED, batch_id=batch_id, submissions=_REQUESTS.c.submissions + 1)
        )
        return int(taken.rowcount)


def known(engine: Engine, batch_ids: Sequence[str]) -> set[str]:
    """Which of these provider batches are recorded in `judge_batches`."""
    if not batch_ids:
        return set()
    query = select(_BATCHES.c.id).where(_BATCHES.c.id.in_(list(batch_ids)))
    with engine.connect() as conn:
        return {row[0] for row in conn.execute(query)}


def open_batches(engine: Engine) -> list[str]:
    query = (
        select(_BATCHES.c.id).where(_BATCHES.c.settled_at.is_(None)).order_by(_BATCHES.c.created_at)
    )
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(query)]


def note_status(engine: Engine, batch_id: str, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(_BATCHES).where(_BATCHES.c.id == batch_id).values(status=status))


def submitted_in(engine: Engine, batch_id: str) -> list[BatchRequest]:
    query = select(_REQUESTS).where(
        _REQUESTS.c.batch_id == batch_id, _REQUESTS.c.status == SUBMITTED
    )
    with engine.connect() as conn:
        return [BatchRequest(**row._mapping) for row in conn.execute(query)]


def finish(conn: Connection, *, done: Sequence[str] = (), failed: Sequence[str] = ()) -> None:
    """Requests whose record is written (in the caller's transaction): `done` with an ok
    record, `failed` with an error record. Their bodies go: the record is what is kept."""
    for ids, state in ((done, DONE), (failed, ERROR)):
        if ids:
            conn.execute(
                update(_REQUESTS)
                .where(_REQUESTS.c.custom_id.in_(list(ids)))
                .values(status=state, body={})
            )


def settle(
    conn: Connection,
    batch_id: str,
    *,
    status: str,
    done: Sequence[str],
    failed: Sequence[str],
    released: Sequence[str],
    error: str = "",
) -> None:
    """Close the batch inside the transaction that writes its records: answered requests are
    done (or error), `released` ones go back to pending for the next batch."""
    finish(conn, done=done, failed=failed)
    if released:
        conn.execute(
            update(_REQUESTS)
            .where(_REQUESTS.c.custom_id.in_(released))
            .values(status=PENDING, batch_id=None, last_error=error)
        )
    conn.execute(
        update(_BATCHES)
        .where(_BATCHES.c.id == batch_id)
        .values(status=status, settled_at=utcnow(), last_error=error)
    )


def counts(engine: Engine) -> dict[str, int]:
    """Requests by state and batches still open (for `evaluator health`)."""
    with engine.connect() as conn:
        by_status: dict[str, int] = dict(
            conn.execute(
                select(_REQUESTS.c.status, func.count()).group_by(_REQUESTS.c.status)
            ).all()
        )
        open_n = conn.execute(
            select(func.count()).select_from(_BATCHES).where(_BATCHES.c.settled_at.is_(None))
        ).scalar_one()
    return {
        "batch_requests_pending": int(by_status.get(PENDING, 0)),
        "batch_requests_submitted": int(by_status.get(SUBMITTED, 0)),
        "batch_requests_error": int(by_status.get(ERROR, 0)),
        "batches_open": int(open_n),
    }
