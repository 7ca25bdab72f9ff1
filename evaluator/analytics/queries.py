"""SQL reads behind the regression check: group aggregates, scores in time order, the worst
traces of a group, and what changed between a group and the one it replaced.

Kept apart from the decisions in `evaluator.analytics.check_job` so that those stay readable and
these can be tuned (indexes, dialects) on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from evaluator.analytics.rollups import bucket_time
from evaluator.analytics.stats import GroupStats
from evaluator.analytics.weights import WeightedStats
from evaluator.store.models import EvalRecord, record_weight
from evaluator.store.store import as_utc

Key = tuple[str | None, ...]
VERSION_LABELS = ("prompt_version", "model")
MAX_STREAM = 20_000  # scores folded per group per run; enough evidence long before this


def _cols(labels: Sequence[str]) -> list[Any]:
    return [getattr(EvalRecord, name) for name in labels]


def match_labels(labels: Sequence[str], key: Key) -> list[ColumnElement[bool]]:
    return [c.is_(None) if v is None else c == v for c, v in zip(_cols(labels), key, strict=True)]


def _ok(rubric: str, lo: datetime, hi: datetime) -> list[ColumnElement[bool]]:
    """Ok records of `rubric` whose trace happened in [lo, hi), as trends bucket them (a
    deferred or batch record counts where its trace happened). The trace time is never after
    the write, so `created_at >= lo` narrows the scan by its index."""
    at = bucket_time()
    return [
        col(EvalRecord.rubric) == rubric,
        col(EvalRecord.status) == "ok",
        col(EvalRecord.score).is_not(None),
        col(EvalRecord.created_at) >= lo,
        at >= lo,
        at < hi,
    ]


def aggregates(
    session: Session,
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
        .where(*_ok(rubric, lo, hi), *where)
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
    session: Session, rubric: str, labels: Sequence[str], key: Key, lo: datetime, hi: datetime
) -> list[tuple[float, float | None]]:
    """(score, inclusion probability) in trace-time order, for the sequential check."""
    query = sa_select(col(EvalRecord.score), col(EvalRecord.inclusion_probability)).where(
        *_ok(rubric, lo, hi), *match_labels(labels, key)
    )
    query = query.order_by(bucket_time(), col(EvalRecord.id)).limit(MAX_STREAM)
    rows = session.connection().execute(query).all()
    return [(float(s), p) for s, p in rows if s is not None]


def worst_traces(
    session: Session,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    lo: datetime,
    hi: datetime,
    k: int = 5,
) -> list[dict[str, Any]]:
    query = select(
        EvalRecord.trace_id, EvalRecord.span_id, EvalRecord.score, EvalRecord.created_at
    ).where(*_ok(rubric, lo, hi), *match_labels(labels, key))
    query = query.order_by(col(EvalRecord.score), col(EvalRecord.created_at).desc()).limit(k)
    return [
        {"trace_id": t, "span_id": s, "score": sc, "created_at": as_utc(at).isoformat()}
        for t, s, sc, at in session.exec(query).all()
    ]


def first_seen(
    session: Session, rubric: str, labels: Sequence[str], key: Key, since: datetime
) -> datetime | None:
    """When the group first scored, if that was after `since` (a new group), else None."""
    match = match_labels(labels, key)
    older = select(EvalRecord.id).where(
        EvalRecord.rubric == rubric, *match, col(EvalRecord.created_at) < since
    )
    if session.exec(older.limit(1)).first() is not None:
        return None
    first = select(func.min(EvalRecord.created_at)).where(EvalRecord.rubric == rubric, *match)
    value = session.exec(first).one()
    return None if value is None else as_utc(value)


def predecessor(
    session: Session, rubric: str, labels: Sequence[str], key: Key, before: datetime
) -> Key | None:
    """The group that served the same scope (labels other than version/model) last before."""
    scope = [(n, v) for n, v in zip(labels, key, strict=True) if n not in VERSION_LABELS]
    match = match_labels([n for n, _ in scope], tuple(v for _, v in scope))
    query = (
        select(*_cols(labels))
        .where(
            EvalRecord.rubric == rubric,
            EvalRecord.status == "ok",
            *match,
            col(EvalRecord.created_at) < before,
        )
        .order_by(col(EvalRecord.created_at).desc())
        .limit(1)
    )
    row = session.exec(query).first()
    return None if row is None else tuple(row)


def _label_sets(
    session: Session, rubric: str, labels: Sequence[str], key: Key, lo: datetime, hi: datetime
) -> dict[str, set[str | None]]:
    names = [n for n in (*VERSION_LABELS, "rubric_version") if n not in labels]
    out: dict[str, set[str | None]] = {n: set() for n in names}
    if names:
        query = (
            select(*[getattr(EvalRecord, n) for n in names])
            .where(*_ok(rubric, lo, hi), *match_labels(labels, key))
            .distinct()
        )
        for row in session.exec(query).all():
            for n, v in zip(names, row, strict=True):
                out[n].add(v)
    return out


def what_changed(
    session: Session,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    base: tuple[datetime, datetime],
    cur: tuple[datetime, datetime],
) -> dict[str, Any]:
    """Labels outside the group (model, prompt or rubric version) that differ between the
    baseline and the window: the first thing to look at after an in-place drop."""
    before = _label_sets(session, rubric, labels, key, *base)
    after = _label_sets(session, rubric, labels, key, *cur)
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
