"""The SQL reads behind an alert's attribution (evaluator.analytics.attribution).

For an alerting group: its per-stratum statistics in the baseline and the window (strata =
the traffic labels the group does not fix), read on the regression check's clock with the
same 1/p weights, and the rubric's anchor runs of the group's evaluator epoch — the last run
before the window and the latest run inside it. Everything else is the pure function's.
`revise_open` attributes an open alert again when an anchor run lands after it opened.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from evaluator.analytics.alerts import open_alerts, policy_for, save
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
from evaluator.analytics.regression import window_bounds
from evaluator.config.policy import RegressionPolicy
from evaluator.store.models import EvalRecord, record_weight
from evaluator.store.store import Store, as_utc
from evaluator.store.trust_models import AnchorRun

if TYPE_CHECKING:
    from evaluator.config.settings import AlertsSettings
    from judges.rubric import Rubric

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
    """The anchors' shift from the last run before `since` to the latest in [since, now]
    (`now`: the alert's opening, or a later anchor run's start when revised)."""
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
    anchors_until: datetime | None = None,
) -> Attribution:
    """Attribute a `kind` ("drop" | "version") alert of group `key`; `windows` is (baseline
    start, window start, now). A version is compared with the group it replaced, over the
    baseline period before the new group's first record; anchor runs count up to
    `anchors_until` (default: now). Never raises: an alert must open
    even if its attribution cannot be computed (the error is logged and named)."""
    try:
        return _attribution(
            session, clock, rubric, labels, key, kind, windows, policy, anchors_until or windows[2]
        )
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
    anchors_until: datetime,
) -> Attribution:
    base_lo, win_lo, now = windows
    base_key = key
    if kind == "version":
        base_key = predecessor(session, clock, rubric, labels, key, win_lo) or key
        base_lo = win_lo - policy.baseline
    base = strata_in(session, clock, rubric, labels, base_key, base_lo, win_lo)
    cur = strata_in(session, clock, rubric, labels, key, win_lo, now)
    epoch = dict(zip(labels, key, strict=True)).get("epoch")
    shift, note = _judge(session, rubric, epoch, win_lo, anchors_until)
    return attribute(
        base, cur, shift, policy, stratum_labels=strata_labels(labels), judge_note=note
    )


def revise_open(store: Store, rubric: Rubric, alerts: AlertsSettings, now: datetime) -> int:
    """After an anchor run at `now`: attribute again each open drop/version alert of
    `rubric` whose attribution could not check the judge (no anchor run inside its window
    when it opened; anchors run weekly by default), over the same windows with the anchor
    runs up to `now`. The first attribution is kept as `attribution_at_open`, the message's
    sentence is replaced. Returns how many alerts were revised; never raises."""
    try:
        policy = policy_for(rubric, alerts).policy
    except ValueError:
        return 0
    revised = 0
    for alert in open_alerts(store, rubric.name):
        first = (alert.summary or {}).get("attribution") or {}
        if alert.kind not in ("drop", "version") or (first.get("judge") or {}).get("checked", True):
            continue
        try:
            opened = as_utc(alert.opened_at)
            base_lo, win_lo = window_bounds(opened, policy)
            if alert.kind == "version":
                win_lo = datetime.fromisoformat(alert.changed["first_seen"])
            labels, key = tuple(alert.labels), tuple(alert.labels.values())
            with Session(store.engine) as session:
                clock = Clock.of(session, alerts.max_lag_delta)
                new = attribution_for(
                    session,
                    clock,
                    rubric.name,
                    labels,
                    key,
                    alert.kind,
                    (base_lo, win_lo, opened),
                    policy,
                    now,
                )
        except Exception:  # one odd alert must not stop the anchor job
            log.exception("revising the attribution of alert %s failed", alert.id)
            continue
        if "error" in new.evidence or new.evidence.get("judge", {}).get("checked") is False:
            continue
        old = first.get("sentence", "")
        revised_json = {**new.to_json(), "revised_at": now.isoformat()}
        alert.summary = {**alert.summary, "attribution_at_open": first, "attribution": revised_json}
        base = (
            alert.message[: -len(old) - 2] if old and alert.message.endswith(old) else alert.message
        )
        alert.message = (
            f"{base}; {new.sentence} (revised after anchor run {now:%Y-%m-%d %H:%M} UTC)"
        )
        alert.updated_at = now
        save(store, alert)
        revised += 1
    return revised
