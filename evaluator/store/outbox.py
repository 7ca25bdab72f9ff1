"""Durable intent: "trace X must be evaluated" is recorded in SQL when it is sampled.

Redis keeps nothing on disk here, so the arq queue is a cache of work, not its record. Each
sampled (trace, kind) gets an `EvalIntent` row before its job is created; the job marks it
done; a sweeper re-creates jobs for intents that should have finished and did not (a worker
killed mid-job, Redis restarted or flushed). An intent that keeps failing goes to the dead
letter state with its cause, and `evaluator retry` replays it.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Column, DateTime, Index, Text, bindparam, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import JSON, Field, Session, SQLModel, col, select

from evaluator.store.models import table_of, utcnow
from evaluator.store.sanitize import clean, clean_text

PENDING, DONE, DEAD = "pending", "done", "dead"


class EvalIntent(SQLModel, table=True):
    __tablename__ = "eval_intents"
    __table_args__ = (Index("ix_intent_due", "status", "enqueued_at"),)

    id: str = Field(primary_key=True, max_length=300)  # "{kind}:{trace_id}"
    trace_id: str = Field(index=True, max_length=256)
    kind: str = Field(max_length=16)  # rate | tail
    signals: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=PENDING, max_length=16)
    attempts: int = 0
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    enqueued_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


def intent_id(kind: str, trace_id: str) -> str:
    return f"{kind}:{trace_id}"


@dataclass(frozen=True, slots=True)
class Intent:
    trace_id: str
    kind: str
    signals: dict[str, Any]

    @property
    def id(self) -> str:
        return intent_id(self.kind, self.trace_id)


def record_intents(engine: Engine, intents: Sequence[Intent]) -> None:
    """Insert pending intents; an existing one (pending, done or dead) is left as it is."""
    if not intents:
        return
    with engine.begin() as conn:
        insert_intents(conn, intents)


def insert_intents(conn: Connection, intents: Sequence[Intent]) -> None:
    """`record_intents` in the caller's transaction (with what must commit with them, such
    as the judge budget's admission rows)."""
    if not intents:
        return
    now = utcnow()
    rows = [
        {
            "id": clean_text(i.id),
            "trace_id": clean_text(i.trace_id),
            "kind": i.kind,
            "signals": clean(i.signals),
            "status": PENDING,
            "attempts": 0,
            "last_error": "",
            "created_at": now,
            "enqueued_at": now,
        }
        for i in {i.id: i for i in intents}.values()
    ]
    # executemany of one compiled statement: a multi-VALUES literal is recompiled for
    # every batch, which cost more than the insert itself. SQLite (the default, and on the
    # intake hot path) takes the driver's own executemany, skipping per-row processing.
    if conn.dialect.name == "sqlite":
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
        conn.exec_driver_sql(
            "INSERT OR IGNORE INTO eval_intents (id, trace_id, kind, signals, status, "
            "attempts, last_error, created_at, enqueued_at) "
            "VALUES (?, ?, ?, ?, ?, 0, '', ?, ?)",
            [
                (
                    r["id"],
                    r["trace_id"],
                    r["kind"],
                    json.dumps(r["signals"]),
                    PENDING,
                    stamp,
                    stamp,
                )
                for r in rows
            ],
        )
    else:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(table_of(EvalIntent)).on_conflict_do_nothing(index_elements=["id"])
        conn.execute(stmt, rows)


# Built once, run once per job (a statement built per call cost ~0.2 ms of CPU).
_INTENTS = table_of(EvalIntent)
# The group forms (evaluator.worker.group_commit): one statement for any number of intents.
_START_ATTEMPTS = (
    update(_INTENTS)
    .where(_INTENTS.c.id.in_(bindparam("intent_ids", expanding=True)), _INTENTS.c.status == PENDING)
    .values(attempts=_INTENTS.c.attempts + 1)
)
_FINISH_ALL = (
    update(_INTENTS)
    .where(_INTENTS.c.id.in_(bindparam("intent_ids", expanding=True)))
    .values(status=DONE, last_error="")
)
_FINISH = (
    update(_INTENTS)
    .where(_INTENTS.c.id == bindparam("intent_id"))
    .values(status=bindparam("status"), last_error=bindparam("last_error"))
)


def _transaction(target: Engine | Connection) -> contextlib.AbstractContextManager[Connection]:
    # An engine gets a transaction of its own; a connection is the caller's transaction.
    return target.begin() if isinstance(target, Engine) else contextlib.nullcontext(target)


def start_attempts(conn: Connection, intent_ids: Sequence[str]) -> None:
    """`start_attempt` for many intents in the caller's transaction (one statement; an id
    given twice — two jobs of one intent — still counts one attempt per job)."""
    counts = Counter(intent_ids)
    while counts:
        conn.execute(_START_ATTEMPTS, {"intent_ids": list(counts)})
        counts = Counter({i: n - 1 for i, n in counts.items() if n > 1})


def start_attempt(target: Engine | Connection, intent_id: str) -> None:
    """Count one more run of the intent's job (a pending intent only)."""
    with _transaction(target) as conn:
        start_attempts(conn, [intent_id])


def finish(
    target: Engine | Connection, intent_id: str, *, status: str = DONE, error: str = ""
) -> None:
    """Settle the intent; pass the connection that writes the job's records to settle it in
    the same transaction (records and "done" commit together or not at all)."""
    with _transaction(target) as conn:
        conn.execute(
            _FINISH,
            {"intent_id": intent_id, "status": status, "last_error": clean_text(error[:4000])},
        )


def finish_all(conn: Connection, intent_ids: Sequence[str]) -> None:
    """Mark many intents done in the caller's transaction (one statement)."""
    if intent_ids:
        conn.execute(_FINISH_ALL, {"intent_ids": list(intent_ids)})


def note_failure(engine: Engine, intent_id: str, error: str) -> None:
    table = table_of(EvalIntent)
    with engine.begin() as conn:
        conn.execute(
            update(table).where(table.c.id == intent_id).values(last_error=clean_text(error[:4000]))
        )


def postpone(engine: Engine, intent_id: str, delay_s: float, cause: str) -> None:
    """Hand the intent back to the sweeper in `delay_s` (plus its grace) without counting the
    run towards the dead letter: the cause (a judge outage) is not the evaluation's."""
    table = table_of(EvalIntent)
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.id == intent_id, table.c.status == PENDING)
            .values(
                enqueued_at=utcnow() + timedelta(seconds=delay_s),
                attempts=0,
                last_error=clean_text(cause[:4000]),
            )
        )


def age_s(engine: Engine, intent_id: str) -> float:
    """Seconds since the intent was first recorded (0 when unknown)."""
    table = table_of(EvalIntent)
    with engine.connect() as conn:
        created: datetime | None = conn.execute(
            sa_select(table.c.created_at).where(table.c.id == intent_id)
        ).scalar()
    if created is None:
        return 0.0
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - created).total_seconds())


def due(engine: Engine, *, stale_after: timedelta, limit: int = 5000) -> list[EvalIntent]:
    """Pending intents whose job should have finished by now."""
    cutoff = utcnow() - stale_after
    query = (
        select(EvalIntent)
        .where(EvalIntent.status == PENDING, col(EvalIntent.enqueued_at) <= cutoff)
        .order_by(col(EvalIntent.enqueued_at))
        .limit(limit)
    )
    with Session(engine) as session:
        return list(session.exec(query).all())


def mark_enqueued(engine: Engine, ids: Sequence[str]) -> None:
    if not ids:
        return
    table = table_of(EvalIntent)
    with engine.begin() as conn:
        conn.execute(update(table).where(table.c.id.in_(list(ids))).values(enqueued_at=utcnow()))


def count_intents(engine: Engine, status: str) -> int:
    query = select(func.count()).select_from(EvalIntent).where(EvalIntent.status == status)
    with Session(engine) as session:
        return int(session.exec(query).one())


def list_intents(
    engine: Engine, *, status: str | None = None, limit: int = 100
) -> list[EvalIntent]:
    query = select(EvalIntent).order_by(col(EvalIntent.created_at).desc()).limit(limit)
    if status is not None:
        query = query.where(EvalIntent.status == status)
    with Session(engine) as session:
        return list(session.exec(query).all())


def intents_of(
    engine: Engine, trace_ids: Sequence[str] | None, *, status: str | None = None
) -> list[EvalIntent]:
    """The intents of these traces (None: every trace), optionally in one status."""
    query = select(EvalIntent)
    if trace_ids is not None:
        query = query.where(col(EvalIntent.trace_id).in_(list(trace_ids)))
    if status is not None:
        query = query.where(EvalIntent.status == status)
    with Session(engine) as session:
        return list(session.exec(query).all())


def done_among(engine: Engine, intent_ids: Sequence[str]) -> set[str]:
    """The intents among these that are done (a batch job run again skips them)."""
    query = select(EvalIntent.id).where(
        col(EvalIntent.id).in_(list(intent_ids)), EvalIntent.status == DONE
    )
    with Session(engine) as session:
        return set(session.exec(query).all())


def revive(
    engine: Engine,
    *,
    trace_ids: Sequence[str] | None = None,
    then: Callable[[Connection], None] | None = None,
) -> list[EvalIntent]:
    """Dead intents (all, or these traces') back to pending with a fresh attempt budget;
    `then` runs in the same transaction (the judge budget's admission rows)."""
    table = table_of(EvalIntent)
    cond = [table.c.status == DEAD]
    if trace_ids:
        cond.append(table.c.trace_id.in_(list(trace_ids)))
    with engine.begin() as conn:
        conn.execute(
            update(table).where(*cond).values(status=PENDING, attempts=0, enqueued_at=utcnow())
        )
        if then is not None:
            then(conn)
    with Session(engine) as session:
        query = select(EvalIntent).where(EvalIntent.status == PENDING)
        if trace_ids:
            query = query.where(col(EvalIntent.trace_id).in_(list(trace_ids)))
        return list(session.exec(query).all())


def reopen(
    engine: Engine, trace_ids: Sequence[str], then: Callable[[Connection], None] | None = None
) -> list[EvalIntent]:
    """Intents of these traces (created when missing) back to pending with a fresh budget,
    whatever their state: `evaluator retry --errors` re-runs their evaluations. `then` runs
    in the transaction that sets them pending (the judge budget's admission rows)."""
    if not trace_ids:
        return []
    record_intents(engine, [Intent(trace_id=t, kind="rate", signals={}) for t in trace_ids])
    table = table_of(EvalIntent)
    ids = list(trace_ids)
    with engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.trace_id.in_(ids))
            .values(status=PENDING, attempts=0, enqueued_at=utcnow())
        )
        if then is not None:
            then(conn)
    with Session(engine) as session:
        query = select(EvalIntent).where(col(EvalIntent.trace_id).in_(ids))
        return list(session.exec(query).all())
