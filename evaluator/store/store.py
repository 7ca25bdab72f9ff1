"""The SQL store: traces in, eval records out. SQLite by default, PostgreSQL by URL.

All methods are synchronous (SQLAlchemy); async callers run them in a thread.
"""

from __future__ import annotations

import functools
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, delete, event, func, tuple_
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, col, create_engine, select

from evaluator.errors import NoDatabase, SchemaError
from evaluator.store.models import EvalRecord, TraceRecord, table_of, utcnow
from evaluator.store.sanitize import clean
from evaluator.store.schema import check_current, upgrade
from evaluator.traces.model import Trace

# Columns an upsert may overwrite when the stored record is not final (status != "ok").
_MUTABLE = [
    c.name
    for c in table_of(EvalRecord).columns
    if c.name not in {"id", "trace_id", "span_id", "rubric", "rubric_version"}
]


_TRACE_PAYLOAD = sa_select(table_of(TraceRecord).c.payload).where(
    table_of(TraceRecord).c.trace_id == bindparam("trace_id")
)
_TRACE_PAYLOADS = sa_select(
    table_of(TraceRecord).c.trace_id, table_of(TraceRecord).c.payload
).where(table_of(TraceRecord).c.trace_id.in_(bindparam("trace_ids", expanding=True)))
_INSERTED = [c.name for c in table_of(EvalRecord).columns]


def _row(record: EvalRecord) -> dict[str, Any]:
    return {name: clean(getattr(record, name)) for name in _INSERTED}


def _identity(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (row["trace_id"], row["span_id"], row["rubric"], row["rubric_version"])


def _rounds(rows: dict[int, dict[str, Any]]) -> list[list[int]]:
    """The record indexes of `rows` split so that no round holds an identity twice (the
    n-th occurrence of an identity in round n), each round in identity order."""
    rounds: list[list[int]] = []
    seen: dict[tuple[str, str, str, str], int] = {}
    for i, row in rows.items():
        key = _identity(row)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    # (A missing value — the database refuses the row — sorts first rather than raising.)
    return [
        sorted(r, key=lambda i: tuple(str(v or "") for v in _identity(rows[i]))) for r in rounds
    ]


_RECORDS = table_of(EvalRecord)
_SAME_EVALUATION = and_(
    _RECORDS.c.trace_id == bindparam("trace_id"),
    _RECORDS.c.rubric == bindparam("rubric"),
    _RECORDS.c.rubric_version == bindparam("rubric_version"),
)
# An error written before the trace (so its span) was known has span_id "": the real
# evaluation of that (trace, rubric, version) replaces it instead of adding a second row.
_DROP_SPANLESS_ERRORS = delete(_RECORDS).where(
    # trace_id alone as well: it lets PostgreSQL prune the hash partitions.
    _RECORDS.c.trace_id.in_(bindparam("trace_ids", expanding=True)),
    tuple_(_RECORDS.c.trace_id, _RECORDS.c.rubric, _RECORDS.c.rubric_version).in_(
        bindparam("keys", expanding=True)
    ),
    _RECORDS.c.span_id == "",
    _RECORDS.c.status != "ok",
)
_HAS_SPAN_RECORD = sa_select(_RECORDS.c.id).where(_SAME_EVALUATION, _RECORDS.c.span_id != "")


@dataclass(frozen=True, slots=True)
class IngestResult:
    inserted: int
    replaced: int


def make_engine(url: str, *, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers (CLI, trends) run while a worker writes.
            cursor = dbapi_conn.cursor()
            _set_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _set_wal(cursor: Any, *, tries: int = 100) -> None:
    """Switch a new database file to WAL. The switch needs the file to itself and SQLite
    answers "database is locked" at once (no busy wait) while another connection of a
    starting process holds it, so wait here; once in WAL the pragma is a no-op read."""
    for attempt in range(tries):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.05)


def refuse_missing_database(url: str) -> None:
    """Raise NoDatabase for a SQLite URL whose file is not there: connecting would create
    an empty one, and a reader must not leave one behind."""
    parsed = make_url(url)
    path = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and path and path != ":memory:"
    if on_disk and not Path(str(path)).exists():
        raise NoDatabase(
            f"no database at {url}: check database.url (EVALUATOR_DATABASE__URL), or run a "
            "command that writes (`evaluator ingest`, "
            "`evaluator worker`, `evaluator demo`) or `evaluator db upgrade` first"
        )


def is_input_fault(exc: BaseException) -> bool:
    """True when the database refused the *data* (a value, a constraint), not when it was
    unreachable: the caller then retries item by item instead of failing the batch."""
    if not isinstance(exc, SQLAlchemyError):
        return isinstance(exc, ValueError)  # e.g. an encoding error before the driver
    return not isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout)


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC. SQLite hands timestamps back naive (they were written in UTC);
    an aware time in another zone (a span's start from the app) is converted, not relabelled —
    SQLite would store its wall time and lose the offset.

        >>> from datetime import timedelta, timezone
        >>> as_utc(datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))).hour
        10
    """
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


class Store:
    """Repository over one engine. Create once per process and pass it down."""

    def __init__(self, url: str, *, echo: bool = False, migrate: bool = True) -> None:
        """`migrate=False` is for readers: they never create or alter tables, and refuse
        (SchemaError) a database that is missing or behind instead of migrating it."""
        self.url = url
        if not migrate:
            refuse_missing_database(url)
        self.engine = make_engine(url, echo=echo)
        if migrate:
            upgrade(self.engine)  # Alembic migrations; adopts a database made before them
        else:
            try:
                check_current(self.engine)
            except SchemaError:
                self.engine.dispose()
                raise

    def close(self) -> None:
        self.engine.dispose()

    # --- traces ---------------------------------------------------------------------------

    def save_traces(self, traces: Iterable[Trace]) -> IngestResult:
        """Insert or replace traces by trace_id (re-ingesting a trace updates it)."""
        inserted = replaced = 0
        with Session(self.engine) as session:
            for trace in traces:
                row = TraceRecord(
                    trace_id=trace.trace_id,
                    payload=clean(trace.model_dump(mode="json")),
                    prompt_version=trace.prompt_version,
                    model=trace.model,
                    feature=trace.feature,
                    tenant=trace.tenant,
                    is_error=trace.is_error,
                    feedback=trace.feedback,
                    cost_usd=trace.cost_usd,
                    latency_ms=trace.latency_ms,
                )
                existing = session.get(TraceRecord, trace.trace_id)
                if existing is None:
                    session.add(row)
                    inserted += 1
                else:
                    for name in (
                        "payload",
                        "prompt_version",
                        "model",
                        "feature",
                        "tenant",
                        "is_error",
                        "feedback",
                        "cost_usd",
                        "latency_ms",
                    ):
                        setattr(existing, name, getattr(row, name))
                    existing.ingested_at = utcnow()
                    replaced += 1
            session.commit()
        return IngestResult(inserted=inserted, replaced=replaced)

    def get_trace(self, trace_id: str, *, conn: Connection | None = None) -> Trace | None:
        """`conn`: read on the caller's connection (one pool checkout for a job's reads)."""
        # Core, one prepared statement: the ORM session cost ~0.5 ms per job for one column.
        if conn is None:
            with self.engine.connect() as own:
                return self.get_trace(trace_id, conn=own)
        payload = conn.execute(_TRACE_PAYLOAD, {"trace_id": trace_id}).scalar()
        return None if payload is None else Trace.model_validate(payload)

    def trace_payloads(self, trace_ids: Sequence[str], *, conn: Connection) -> dict[str, Any]:
        """The stored payloads (not yet validated) of those of `trace_ids` that exist."""
        rows = conn.execute(_TRACE_PAYLOADS, {"trace_ids": sorted(set(trace_ids))})
        return {trace_id: payload for trace_id, payload in rows}

    def recent_models(self, limit: int = 1000) -> list[str]:
        """The distinct generator models of the `limit` most recently ingested traces (one
        bounded query on the ingested_at index: cheap at worker start whatever the size)."""
        recent = (
            sa_select(col(TraceRecord.model))
            .order_by(col(TraceRecord.ingested_at).desc())
            .limit(limit)
            .subquery()
        )
        query = sa_select(func.distinct(recent.c.model)).where(recent.c.model.is_not(None))
        with self.engine.connect() as conn:
            return sorted(str(m) for (m,) in conn.execute(query))

    def count_traces(self) -> int:
        with Session(self.engine) as session:
            return session.exec(select(func.count()).select_from(TraceRecord)).one()

    # --- eval records ---------------------------------------------------------------------

    @functools.cached_property
    def _upsert(self) -> Any:
        # Built once: only the parameters change from record to record (building and
        # cache-keying a statement with inline values cost ~1 ms of CPU per record).
        table = table_of(EvalRecord)
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["trace_id", "span_id", "rubric", "rubric_version"],
            set_={name: stmt.excluded[name] for name in _MUTABLE},
            where=table.c.status != "ok",
        )
        # RETURNING, not rowcount: drivers disagree on rowcount for a skipped upsert. The
        # identity comes back too: a multi-row upsert returns rows only for those it wrote.
        return stmt.returning(
            table.c.id, table.c.trace_id, table.c.span_id, table.c.rubric, table.c.rubric_version
        )

    def upsert_record(self, record: EvalRecord) -> bool:
        """Write the record unless a final ("ok") one exists for its identity.

        Returns True when a row was inserted or a non-final row was replaced. Safe under
        concurrent workers: the unique constraint decides, not a read-then-write.
        """
        return self.upsert_records([record])[0]

    def upsert_records(
        self, records: Sequence[EvalRecord], *, conn: Connection | None = None
    ) -> list[bool]:
        """`upsert_record` for many records (a job's, or a group commit's) in one transaction
        and, for records with a span, two statements in all (a delete of replaced span-less
        errors and one multi-row upsert) rather than two per record; inside the caller's
        transaction when `conn` is given. The result is per record, in order."""
        if conn is None:
            with self.engine.begin() as own:
                return self.upsert_records(records, conn=own)
        written = [False] * len(records)
        # Rows as stored (clean() drops NULs and lone surrogates): identities are compared
        # as the database will see them.
        rows = {i: _row(r) for i, r in enumerate(records) if r.span_id}
        # One statement may not touch a row twice (PostgreSQL refuses it): the n-th record of
        # an identity goes in the n-th round, so a later duplicate sees the earlier one, as
        # if written one by one. Within a round rows go in identity order, so two processes'
        # group commits lock shared rows in the same order (no deadlock between them).
        for chunk in _rounds(rows):
            batch = [rows[i] for i in chunk]
            conn.execute(
                _DROP_SPANLESS_ERRORS,
                {
                    "trace_ids": sorted({r["trace_id"] for r in batch}),
                    "keys": [(r["trace_id"], r["rubric"], r["rubric_version"]) for r in batch],
                },
            )
            ids = {
                (row.trace_id, row.span_id, row.rubric, row.rubric_version): row.id
                for row in conn.execute(self._upsert, batch)
            }
            for i, values in zip(chunk, batch, strict=True):
                stored_id = ids.get(_identity(values))
                if stored_id is not None:
                    # A replaced non-final row keeps its id: the caller exports the stored one.
                    records[i].id = stored_id
                    written[i] = True
        # Span-less records (errors written before the trace was known) after the rest: one
        # that a record with a span of the same evaluation already covers is not written.
        for i, record in enumerate(records):
            if record.span_id:
                continue
            key = {
                "trace_id": record.trace_id,
                "rubric": record.rubric,
                "rubric_version": record.rubric_version,
            }
            if conn.execute(_HAS_SPAN_RECORD, key).first() is not None:
                continue  # the trace was evaluated with its span already
            row = conn.execute(self._upsert, _row(record)).first()
            if row is not None:
                record.id = row.id
                written[i] = True
        return written

    def records(
        self,
        *,
        trace_id: str | None = None,
        rubric: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> Sequence[EvalRecord]:
        query = select(EvalRecord).order_by(col(EvalRecord.created_at).desc(), EvalRecord.rubric)
        if trace_id is not None:
            query = query.where(EvalRecord.trace_id == trace_id)
        if rubric is not None:
            query = query.where(EvalRecord.rubric == rubric)
        if status is not None:
            query = query.where(EvalRecord.status == status)
        with Session(self.engine) as session:
            rows = session.exec(query.limit(limit)).all()
            for row in rows:
                row.created_at = as_utc(row.created_at)
            return rows

    def error_trace_ids(
        self,
        *,
        rubric: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[str]:
        """Traces with an error record matching rubric, `details.error_kind` and time range."""
        query = select(EvalRecord).where(EvalRecord.status == "error")
        if rubric is not None:
            query = query.where(EvalRecord.rubric == rubric)
        if since is not None:
            query = query.where(EvalRecord.created_at >= since)
        if until is not None:
            query = query.where(EvalRecord.created_at < until)
        with Session(self.engine) as session:
            rows = session.exec(query).all()
            return sorted(
                {r.trace_id for r in rows if kind is None or r.details.get("error_kind") == kind}
            )

    def status_counts(self) -> dict[str, int]:
        query = select(EvalRecord.status, func.count()).group_by(EvalRecord.status)
        with Session(self.engine) as session:
            return {status: n for status, n in session.exec(query).all()}

    def records_page(
        self,
        *,
        trace_id: str | None = None,
        rubric: str | None = None,
        status: str | None = None,
        limit: int | None = 50,
        after: tuple[datetime, str] | None = None,
    ) -> tuple[list[EvalRecord], int]:
        """Newest first, by (created_at, id) so a page boundary is stable; `after` is the
        last (created_at, id) of the previous page. Returns the page and the total matching
        the filters (all pages), so a reader can say what it did not show."""
        created, rid = col(EvalRecord.created_at), col(EvalRecord.id)
        filters = [
            cond
            for value, cond in (
                (trace_id, EvalRecord.trace_id == trace_id),
                (rubric, EvalRecord.rubric == rubric),
                (status, EvalRecord.status == status),
            )
            if value is not None
        ]
        query = select(EvalRecord).where(*filters).order_by(created.desc(), rid.desc())
        if after is not None:
            at, last = after[0], uuid.UUID(after[1])
            query = query.where((created < at) | ((created == at) & (rid < last)))
        if limit is not None:
            query = query.limit(limit)
        with Session(self.engine) as session:
            total = session.exec(select(func.count()).select_from(EvalRecord).where(*filters)).one()
            rows = list(session.exec(query).all())
        for row in rows:
            row.created_at = as_utc(row.created_at)
        return rows, int(total)

    def rubric_names(self) -> list[str]:
        """Rubrics that have records (for "no such rubric" messages)."""
        with Session(self.engine) as session:
            return sorted(session.exec(select(EvalRecord.rubric).distinct()).all())
