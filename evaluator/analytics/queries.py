"""SQL reads behind the regression check: group aggregates, scores in write order, the worst
traces of a group, and what changed between a group and the one it replaced.

One clock for every window (`Clock`): a record counts at its trace's time clamped into
[written − max_lag, written] (`alerts.max_lag`, default 1 h). The trace time puts a burst
where it happened, so a new group dated by its earliest record's clock holds every one of
its records from the first; the clamp bounds how far a client's clock (or a trace sent
again long after) can move a record: a trace older than max_lag counts at its write time
minus max_lag. A group is dated, filtered and compared on that one clock; the e-processes
fold its records in write order (the order in which the check could have seen them).

Kept apart from the decisions in `evaluator.analytics.check_job` so that those stay readable and
these can be tuned (indexes, dialects) on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, DateTime, case, func, literal, type_coerce
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from evalcore.intervals import GroupStats
from evalcore.weights import WeightedStats
from evaluator.store.models import EvalRecord, record_weight
from evaluator.store.store import as_utc

Key = tuple[str | None, ...]
VERSION_LABELS = ("prompt_version", "model")
MAX_STREAM = 20_000  # scores folded per group per run; enough evidence long before this


def _cols(labels: Sequence[str]) -> list[Any]:
    return [getattr(EvalRecord, name) for name in labels]


def match_labels(labels: Sequence[str], key: Key) -> list[ColumnElement[bool]]:
    return [c.is_(None) if v is None else c == v for c, v in zip(_cols(labels), key, strict=True)]


DEFAULT_MAX_LAG = timedelta(hours=1)


@dataclass(frozen=True)
class Clock:
    """When a record counts for the regression check: `at`, its trace time clamped into
    [created_at − max_lag, created_at] (rows without a trace time: created_at).

    Guarantee: every record counts at exactly one instant t with written − max_lag ≤ t ≤
    written, so a window [lo, hi) holds only records written in [lo, hi + max_lag), and a
    client clock off by a year moves a record by at most max_lag. `max_lag` is whole seconds.
    """

    at: ColumnElement[datetime]
    max_lag: timedelta

    @classmethod
    def of(cls, session: Session, max_lag: timedelta = DEFAULT_MAX_LAG) -> Clock:
        return cls.for_dialect(session.connection().dialect.name, max_lag)

    @classmethod
    def for_dialect(cls, dialect: str, max_lag: timedelta = DEFAULT_MAX_LAG) -> Clock:
        written = col(EvalRecord.created_at)
        happened = func.coalesce(col(EvalRecord.trace_at), written)
        seconds = int(max_lag.total_seconds())
        if dialect == "postgresql":
            floor = written - literal(timedelta(seconds=seconds))
            at = func.least(func.greatest(happened, floor), written)
        else:
            # SQLite keeps these columns as 'YYYY-MM-DD HH:MM:SS.ffffff' text, which sorts as
            # time: shift the whole seconds, keep the fraction (the text from position 20).
            shifted = func.strftime("%Y-%m-%d %H:%M:%S", written, f"-{seconds} seconds")
            floor = shifted.op("||")(func.substr(written, 20))
            at = func.min(func.max(happened, floor), written)  # scalar min/max of two values
        return cls(type_coerce(at, DateTime(timezone=True)), timedelta(seconds=seconds))

    def within(self, lo: datetime, hi: datetime) -> list[ColumnElement[bool]]:
        """Records counted in [lo, hi); the bounds on created_at only narrow the scan (the
        created_at index), they select nothing the clock would not."""
        written = col(EvalRecord.created_at)
        return [written >= lo, written < hi + self.max_lag, self.at >= lo, self.at < hi]


def _ok(clock: Clock, rubric: str, lo: datetime, hi: datetime) -> list[ColumnElement[bool]]:
    """Ok records of `rubric` counted in [lo, hi) on the window clock."""
    return [
        col(EvalRecord.rubric) == rubric,
        col(EvalRecord.status) == "ok",
        col(EvalRecord.score).is_not(None),
        *clock.within(lo, hi),
    ]


def aggregates(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    lo: datetime,
    hi: datetime,
    where: Sequence[ColumnElement[bool]] = (),
) -> dict[Key, GroupStats]:
    """Sufficient statistics per group over [lo, hi), straight from SQL, weighted by 1/p:
    the plain sums when every weight is 1, else `WeightedStats.effective` (Hájek mean and
    pass rate, ⌊ESS⌋ for n)."""
    score = col(EvalRecord.score)
    passed = col(EvalRecord.passed)
    w = record_weight()
    query = (
        sa_select(
            *_cols(labels),
            func.count(score),
            func.sum(score),
            func.sum(score * score),
            func.sum(case((passed.is_(True), 1), else_=0)),
            func.count(passed),
            func.sum(w),
            func.sum(w * score),
            func.sum(w * score * score),
            func.sum(w * w),
            func.sum(case((passed.is_(True), w), else_=0.0)),
        )
        .where(*_ok(clock, rubric, lo, hi), *where)
        .group_by(*_cols(labels))
    )
    out: dict[Key, GroupStats] = {}
    for row in session.connection().execute(query).all():
        *key, n, total, total_sq, passes, known, ws, wt, wq, w2, wp = row
        plain = GroupStats(
            int(n),
            float(total or 0),
            float(total_sq or 0),
            int(passes or 0) if known == n else None,
        )
        weighted = WeightedStats(
            int(n), float(ws or 0), float(wt or 0), float(wq or 0), float(w2 or 0), float(wp or 0)
        )
        out[tuple(key)] = weighted.effective(plain)
    return out


def scores_in_order(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    lo: datetime,
    hi: datetime,
) -> list[tuple[float, float | None]]:
    """(score, inclusion probability) of the records counted in [lo, hi), in write order:
    the e-process folds them as the check could have seen them (a late record never lands
    before scores an earlier run already folded)."""
    query = sa_select(col(EvalRecord.score), col(EvalRecord.inclusion_probability)).where(
        *_ok(clock, rubric, lo, hi), *match_labels(labels, key)
    )
    query = query.order_by(col(EvalRecord.created_at), col(EvalRecord.id)).limit(MAX_STREAM)
    rows = session.connection().execute(query).all()
    return [(float(s), p) for s, p in rows if s is not None]


def worst_traces(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    lo: datetime,
    hi: datetime,
    k: int = 5,
) -> list[dict[str, Any]]:
    query = select(
        EvalRecord.trace_id, EvalRecord.span_id, EvalRecord.score, EvalRecord.created_at
    ).where(*_ok(clock, rubric, lo, hi), *match_labels(labels, key))
    query = query.order_by(col(EvalRecord.score), col(EvalRecord.created_at).desc()).limit(k)
    return [
        {"trace_id": t, "span_id": s, "score": sc, "created_at": as_utc(at).isoformat()}
        for t, s, sc, at in session.exec(query).all()
    ]


def first_seen(
    session: Session, clock: Clock, rubric: str, labels: Sequence[str], key: Key, since: datetime
) -> datetime | None:
    """When the group's first record counts on the window clock (the earliest clamped trace
    time of its records, not its first write), if that is at or after `since` (a new group),
    else None. So the new group's stream, read from this instant, holds every record it has."""
    match = match_labels(labels, key)
    older = select(EvalRecord.id).where(
        EvalRecord.rubric == rubric,
        *match,
        col(EvalRecord.created_at) < since + clock.max_lag,  # narrows by index only
        clock.at < since,
    )
    if session.exec(older.limit(1)).first() is not None:
        return None
    first = sa_select(func.min(clock.at)).where(col(EvalRecord.rubric) == rubric, *match)
    value = session.connection().execute(first).scalar_one()
    return None if value is None else as_utc(value)


def predecessor(
    session: Session, clock: Clock, rubric: str, labels: Sequence[str], key: Key, before: datetime
) -> Key | None:
    """The group that served the same scope (labels other than version/model) last before
    `before`, on the window clock."""
    scope = [(n, v) for n, v in zip(labels, key, strict=True) if n not in VERSION_LABELS]
    match = match_labels([n for n, _ in scope], tuple(v for _, v in scope))
    query = (
        select(*_cols(labels))
        .where(
            EvalRecord.rubric == rubric,
            EvalRecord.status == "ok",
            *match,
            col(EvalRecord.created_at) < before + clock.max_lag,  # narrows by index only
            clock.at < before,
        )
        .order_by(clock.at.desc(), col(EvalRecord.created_at).desc())
        .limit(1)
    )
    row = session.exec(query).first()
    return None if row is None else tuple(row)


def _label_sets(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    lo: datetime,
    hi: datetime,
) -> dict[str, set[str | None]]:
    names = [n for n in (*VERSION_LABELS, "rubric_version") if n not in labels]
    out: dict[str, set[str | None]] = {n: set() for n in names}
    if names:
        query = (
            select(*[getattr(EvalRecord, n) for n in names])
            .where(*_ok(clock, rubric, lo, hi), *match_labels(labels, key))
            .distinct()
        )
        for row in session.exec(query).all():
            for n, v in zip(names, row, strict=True):
                out[n].add(v)
    return out


def what_changed(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    base: tuple[datetime, datetime],
    cur: tuple[datetime, datetime],
) -> dict[str, Any]:
    """Labels outside the group (model, prompt or rubric version) that differ between the
    baseline and the window: the first thing to look at after an in-place drop."""
    before = _label_sets(session, clock, rubric, labels, key, *base)
    after = _label_sets(session, clock, rubric, labels, key, *cur)
    diffs = {
        n: {"from": sorted(map(str, before[n])), "to": sorted(map(str, after[n]))}
        for n in before
        if after[n] - before[n]
    }
    text = "; ".join(
        f"{n} {', '.join(d['from'])} -> {', '.join(d['to'])}" for n, d in diffs.items()
    )
    return {"labels": diffs, "text": text or "no version change inside the group"}


# --- detection --------------------------------------------------------------------------------
