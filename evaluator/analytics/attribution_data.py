"""The SQL reads behind an alert's attribution (evaluator.analytics.attribution).

For an alerting group: its per-stratum statistics in the baseline and the window (strata =
the traffic labels the group does not fix), read on the regression check's clock with the
same 1/p weights, and the rubric's anchor runs of the group's evaluator epoch — the last run
before the window and the latest run inside it. Everything else is the pure function's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from evaluator.analytics.attribution import (
    Attribution,
    JudgeShift,
    Stratum,
    attribute,
    judge_shift,
    strata_labels,
    stratum_key,
)
from evaluator.analytics.queries import Clock, Key, aggregates, match_labels, predecessor
from evaluator.config.policy import RegressionPolicy
from evaluator.store.models import EvalRecord, record_weight
from evaluator.store.store import as_utc
from evaluator.store.trust_models import AnchorRun

log = logging.getLogger("evaluator.analytics.alerts")


def strata_in(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    lo: datetime,
    hi: datetime,
) -> dict[str, Stratum]:
    """One group's strata over [lo, hi): effective statistics and traffic (Σ 1/p)."""
    strata = strata_labels(labels)
    where = match_labels(labels, key)
    stats = aggregates(session, clock, rubric, [*labels, *strata], lo, hi, where)
    names = [getattr(EvalRecord, n) for n in strata]
    traffic_q = (
        sa_select(*names, func.sum(record_weight()))
        .where(
            col(EvalRecord.rubric) == rubric,
            col(EvalRecord.status) == "ok",
            col(EvalRecord.score).is_not(None),
            *clock.within(lo, hi),
            *where,
        )
        .group_by(*names)
    )
    traffic = {
        stratum_key(row[:-1]): float(row[-1] or 0.0)
        for row in session.connection().execute(traffic_q).all()
    }
    out = {}
    for k, s in stats.items():
        name = stratum_key(k[len(labels) :])
        out[name] = Stratum.of(s, traffic.get(name, float(s.n)))
    return out


def _judge(
    session: Session, rubric: str, epoch: str | None, since: datetime, now: datetime
) -> tuple[JudgeShift | None, str]:
    """The anchors' shift from the last run before `since` to the latest in [since, now]."""
    query = select(AnchorRun.id, AnchorRun.started_at).where(AnchorRun.rubric == rubric)
    if epoch is not None:
        query = query.where(AnchorRun.epoch == epoch)
    runs = sorted((as_utc(at), i) for i, at in session.exec(query).all())
    before = [i for at, i in runs if at < since]
    after = [i for at, i in runs if since <= at <= now]
    if not runs:
        return None, f"no anchor runs of epoch {epoch}"
    if not after:
        return None, f"no anchor run since {since:%Y-%m-%d %H:%M} UTC"
    if not before:
        return None, "no anchor run before the window to compare with"
    first, last = session.get(AnchorRun, before[-1]), session.get(AnchorRun, after[-1])
    if first is None or last is None:
        return None, "anchor runs vanished while reading"
    drift = last.drift or {}
    shift = judge_shift(
        first.outcomes,
        last.outcomes,
        alpha=float(drift.get("alpha", 0.01)),
        min_drop=float(drift.get("min_drop", 0.05)),
        before_run=str(first.id),
        after_run=str(last.id),
    )
    return shift, "" if shift is not None else "anchor runs without both labels"


def attribution_for(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    kind: str,
    windows: tuple[datetime, datetime, datetime],
    policy: RegressionPolicy,
) -> Attribution:
    """Attribute a `kind` ("drop" | "version") alert of group `key`; `windows` is (baseline
    start, window start, now). A version is compared with the group it replaced, over the
    baseline period before the new group's first record. Never raises: an alert must open
    even if its attribution cannot be computed (the error is logged and named)."""
    try:
        return _attribution(session, clock, rubric, labels, key, kind, windows, policy)
    except Exception as exc:  # a page must not be lost to its explanation
        log.exception("attribution of a %s alert on %s failed", kind, rubric)
        return Attribution(
            "undetermined",
            f"cause undetermined: attribution failed ({type(exc).__name__})",
            {"error": f"{type(exc).__name__}: {exc}"},
        )


def _attribution(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: Sequence[str],
    key: Key,
    kind: str,
    windows: tuple[datetime, datetime, datetime],
    policy: RegressionPolicy,
) -> Attribution:
    base_lo, win_lo, now = windows
    base_key = key
    if kind == "version":
        base_key = predecessor(session, clock, rubric, labels, key, win_lo) or key
        base_lo = win_lo - policy.baseline
    base = strata_in(session, clock, rubric, labels, base_key, base_lo, win_lo)
    cur = strata_in(session, clock, rubric, labels, key, win_lo, now)
    epoch = dict(zip(labels, key, strict=True)).get("epoch")
    shift, note = _judge(session, rubric, epoch, win_lo, now)
    return attribute(base, cur, shift, policy, stratum_labels=strata_labels(labels),
                     judge_note=note)  # fmt: skip
