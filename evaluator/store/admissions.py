"""The judge budget's durable side: admitted evaluations, offers waiting for their window,
and closed windows, in SQL.

Redis holds the budget's counters (evaluator.budget.admission): fast, shared, but gone when a
Redis without persistence restarts. SQL holds what they count:

- `budget_admissions`: one row per admitted evaluation (UTC day, kind, trace, rubric),
  written in the transaction that records the evaluation's intent (intake, a window's
  close, backfill, retry) or, for a cascade's escalation, before its judge call. A repeat
  of the same evaluation on the same day (a retried job, a batch processed again) is the
  same row: free. The counters are rebuilt from these rows after Redis loses them, and
  `admit` checks the day caps against them before the transaction commits, so the rows of
  a day never exceed its caps, whatever Redis said (OverCap rolls the transaction back).
- `budget_offers`: drawn evaluations of traces waiting for their cap window to close (the
  cap refuses by random key, not arrival order: evaluator.budget.allocation.window_quotas).
- `budget_windows`: one row per closed window; a window is closed once, by one worker.

Writers of offers and the closer of a window are serialised (PostgreSQL: an advisory lock,
shared by offer writers, exclusive for the closer; SQLite: the database's single writer), so
an offer is never written to a window already closed: it goes to the next open one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, Table, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import JSON, Field, SQLModel

from evaluator.store.models import table_of, utcnow
from evaluator.store.sanitize import clean, clean_text

DAY_S = 86_400
SHARED = "*"  # the scope of the settings' [budget]: every rubric's evaluations together
# pg_advisory_xact_lock key of the budget's window lock (any constant; "budgetwn").
_WINDOW_LOCK = 0x6275646765747776


class BudgetAdmission(SQLModel, table=True):
    __tablename__ = "budget_admissions"
    __table_args__ = (Index("ix_budget_admissions_day", "day", "rubric"),)

    id: str = Field(primary_key=True, max_length=700)  # day, kind, trace, rubric
    day: int  # UTC day number (epoch seconds // 86400)
    rubric: str = Field(max_length=128)
    trace_id: str = Field(max_length=256)
    kind: str = Field(max_length=16)  # rate | tail | esc | bf-… | retry
    admitted_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class BudgetOffer(SQLModel, table=True):
    __tablename__ = "budget_offers"

    id: str = Field(primary_key=True, max_length=300)  # kind:trace_id:window offered
    window: int = Field(index=True)
    trace_id: str = Field(max_length=256)
    kind: str = Field(max_length=16)
    signals: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # {rubric: [stratum, drawn p, escalates (0/1)]}
    draws: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class BudgetWindow(SQLModel, table=True):
    __tablename__ = "budget_windows"

    window: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    offered: int = 0  # drawn evaluations offered to the cap
    admitted: int = 0
    closed_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class OverCap(RuntimeError):
    """The day's admitted evaluations in SQL would exceed a cap: Redis's counters were behind
    (lost with a restart and not yet rebuilt). The transaction is rolled back."""


@dataclass(frozen=True, slots=True)
class Admission:
    day: int
    kind: str
    trace_id: str
    rubric: str

    @property
    def id(self) -> str:
        return "\x1f".join((str(self.day), self.kind, self.trace_id, self.rubric))


@dataclass(frozen=True, slots=True)
class Offer:
    trace_id: str
    kind: str
    signals: dict[str, Any]
    draws: dict[str, tuple[str, float, bool]]  # rubric -> (stratum, drawn p, escalates)


_ADMISSIONS = table_of(BudgetAdmission)
_OFFERS = table_of(BudgetOffer)
_WINDOWS = table_of(BudgetWindow)


def _insert(conn: Connection) -> Callable[[Table], PgInsert | SqliteInsert]:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def day_of(now_s: float) -> int:
    return int(now_s // DAY_S)


def admit(conn: Connection, admissions: Sequence[Admission], day_caps: Mapping[str, int]) -> None:
    """Write the admission rows in the caller's transaction (the intent's), then check every
    day cap (`day_caps`: scope -> evaluations per UTC day, 0 = none; SHARED = all rubrics)
    against the rows of that day. Raises OverCap (the caller rolls back) when one is over.

    Exact across workers: on PostgreSQL the check holds an exclusive advisory lock until the
    transaction ends; on SQLite the insert holds the single write lock. A repeated
    evaluation (same day, kind, trace, rubric) is not a new row and costs nothing."""
    if not admissions:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _WINDOW_LOCK + 1})
    now = utcnow()
    rows = {
        a.id: {
            "id": clean_text(a.id),
            "day": a.day,
            "rubric": a.rubric,
            "trace_id": clean_text(a.trace_id),
            "kind": a.kind,
            "admitted_at": now,
        }
        for a in admissions
    }
    conn.execute(_insert(conn)(_ADMISSIONS).on_conflict_do_nothing(), list(rows.values()))
    for day in {a.day for a in admissions}:
        if not any(day_caps.values()):
            break
        used = counts(conn, day)
        for scope, cap in day_caps.items():
            if cap > 0 and used.get(scope, 0) > cap:
                raise OverCap(f"day {day}: {used.get(scope, 0)} evaluations of {scope!r} > {cap}")


def counts(
    target: Engine | Connection, day: int, *, since: datetime | None = None
) -> dict[str, int]:
    """Admitted evaluations of a UTC day per rubric, and all together under SHARED
    (`since`: only those admitted from then on, e.g. this minute)."""
    query = (
        select(_ADMISSIONS.c.rubric, func.count())
        .where(_ADMISSIONS.c.day == day)
        .group_by(_ADMISSIONS.c.rubric)
    )
    if since is not None:
        query = query.where(_ADMISSIONS.c.admitted_at >= since)
    if isinstance(target, Engine):
        with target.connect() as conn:
            by_rubric = {str(r): int(n) for r, n in conn.execute(query)}
    else:
        by_rubric = {str(r): int(n) for r, n in target.execute(query)}
    return {SHARED: sum(by_rubric.values()), **by_rubric}


def admitted_ids(engine: Engine, day: int) -> list[tuple[str, str, str]]:
    """(kind, trace, rubric) of the day's admitted evaluations (the Redis ledger's fields)."""
    query = select(_ADMISSIONS.c.kind, _ADMISSIONS.c.trace_id, _ADMISSIONS.c.rubric).where(
        _ADMISSIONS.c.day == day
    )
    with engine.connect() as conn:
        return [(str(k), str(t), str(r)) for k, t, r in conn.execute(query)]


def offer(conn: Connection, offers: Sequence[Offer], window: int) -> int:
    """Write offers for `window` in the caller's transaction, or for the next open window
    when that one is closed already (a drain that began before its end). Returns the window."""
    if not offers:
        return window
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _WINDOW_LOCK})
    now = utcnow()
    rows = {
        f"{o.kind}:{o.trace_id}:{window}": {
            "id": clean_text(f"{o.kind}:{o.trace_id}:{window}"),
            "window": window,
            "trace_id": clean_text(o.trace_id),
            "kind": o.kind,
            "signals": clean(o.signals),
            "draws": {r: list(d) for r, d in o.draws.items()},
            "created_at": now,
        }
        for o in offers
    }
    conn.execute(_insert(conn)(_OFFERS).on_conflict_do_nothing(), list(rows.values()))
    # Read after the write: on SQLite the write lock is held now, so no close slips between.
    closed = conn.execute(select(func.max(_WINDOWS.c.window))).scalar()
    if closed is not None and int(closed) >= window:
        window = int(closed) + 1
        conn.execute(update(_OFFERS).where(_OFFERS.c.id.in_(list(rows))).values(window=window))
    return window


def due_windows(engine: Engine, current: int) -> list[int]:
    """Windows before `current` that still hold offers (their close is due)."""
    query = (
        select(_OFFERS.c.window)
        .where(_OFFERS.c.window < current)
        .distinct()
        .order_by(_OFFERS.c.window)
    )
    with engine.connect() as conn:
        return [int(w) for (w,) in conn.execute(query)]


def claim_window(conn: Connection, window: int) -> list[BudgetOffer] | None:
    """Claim `window` for closing in the caller's transaction: its offers, or None when
    another worker closed it. Holds the window lock until the transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _WINDOW_LOCK})
    claimed = conn.execute(
        _insert(conn)(_WINDOWS)
        .values(window=window, offered=0, admitted=0, closed_at=utcnow())
        .on_conflict_do_nothing()
    )
    if claimed.rowcount == 0:
        return None
    rows = conn.execute(select(_OFFERS).where(_OFFERS.c.window == window)).mappings()
    return [BudgetOffer(**dict(r)) for r in rows]


def finish_window(conn: Connection, window: int, *, offered: int, admitted: int) -> None:
    """The window's offers are decided: drop them and keep the counts."""
    conn.execute(delete(_OFFERS).where(_OFFERS.c.window == window))
    conn.execute(
        update(_WINDOWS)
        .where(_WINDOWS.c.window == window)
        .values(offered=offered, admitted=admitted)
    )


def pending_offers(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(_OFFERS)).scalar_one())


def window_totals(engine: Engine, windows: Iterable[int] | None = None) -> tuple[int, int]:
    """(offered, admitted) over closed windows (all, or those given)."""
    query = select(
        func.coalesce(func.sum(_WINDOWS.c.offered), 0),
        func.coalesce(func.sum(_WINDOWS.c.admitted), 0),
    )
    if windows is not None:
        query = query.where(_WINDOWS.c.window.in_(list(windows)))
    with engine.connect() as conn:
        offered, admitted = conn.execute(query).one()
    return int(offered), int(admitted)


def start_of_minute(now_s: float) -> datetime:
    return datetime.fromtimestamp(now_s - now_s % 60, UTC)


def record_intents(
    engine: Engine, intents: Sequence[Any], rows: Sequence[Admission], day_caps: Mapping[str, int]
) -> None:
    """Intents (evaluator.store.outbox.Intent) and their admission rows in one transaction
    (backfill): the day caps checked before it commits (OverCap rolls both back)."""
    from evaluator.store import outbox

    with engine.begin() as conn:
        outbox.insert_intents(conn, intents)
        admit(conn, rows, day_caps)
