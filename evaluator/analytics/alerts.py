"""Regression alerts: policy per rubric, the alert record's life cycle and its wording.

An alert is one row of `alerts` (AlertRecord). At most one is open per group and kind
(`drop`: the group's recent window fell against its own rolling baseline; `version`: a
new prompt version or model scores worse than the one it replaced). A unique partial
index on open alerts makes "open" race-free across workers; a cool-down keeps a flapping
group from paging again right after it resolved. Policies are parsed in
`evaluator.config.policy`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from evaluator.config.policy import CheckConfig, parse_policy
from evaluator.store.models import AlertRecord
from evaluator.store.store import Store, as_utc

if TYPE_CHECKING:
    from evaluator.config.settings import AlertsSettings
    from judges.rubric import Rubric


def policy_for(rubric: Rubric, alerts: AlertsSettings) -> CheckConfig:
    """The defaults of [alerts.policy] overridden by the rubric's own [regression] table."""
    try:
        return parse_policy({**alerts.policy, **rubric.regression}, alerts.group_by)
    except ValueError as exc:
        raise ValueError(f"rubric {rubric.name!r}: key 'regression': {exc}") from None


def regression_problems(rubrics: Sequence[Rubric], alerts: AlertsSettings) -> list[str]:
    """One message per rubric whose [regression] table is invalid (checked at start-up)."""
    problems = []
    for rubric in rubrics:
        try:
            policy_for(rubric, alerts)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def group_key(kind: str, rubric: str, labels: Mapping[str, str | None]) -> str:
    parts = [kind, rubric, *(f"{k}={'' if v is None else v}" for k, v in sorted(labels.items()))]
    return "|".join(parts)


# --- wording --------------------------------------------------------------------------------


def _fmt_side(s: Mapping[str, Any]) -> str:
    return (
        f"{s['mean']:.3f} [{s['mean_ci_low']:.3f}, {s['mean_ci_high']:.3f}] (n={s['n']})"
        if s.get("n")
        else "no scores"
    )


def describe(
    kind: str,
    rubric: str,
    labels: Mapping[str, str | None],
    summary: Mapping[str, Any],
    changed_text: str,
    worst: Sequence[Mapping[str, Any]],
) -> str:
    """One line that says what dropped, by how much, how sure, and where to look next."""
    where = " ".join(f"{k}={v}" for k, v in labels.items())
    what = "new version worse than the one it replaced" if kind == "version" else "score dropped"
    b, c = summary["baseline"], summary["current"]
    text = (
        f"{rubric} [{where}]: {what}: mean {_fmt_side(b)} -> {_fmt_side(c)}, "
        f"drop {summary['mean_drop']:.3f}"
    )
    if b.get("pass_rate") is not None and c.get("pass_rate") is not None:
        text += f", pass rate {b['pass_rate']:.1%} -> {c['pass_rate']:.1%}"
    text += f"; p={summary['p_value']:.2g} ({summary['test']})"
    window_n = summary.get("window_n")
    if window_n is not None and window_n != c.get("n"):
        # The sequential test stops at the score where it became sure; say so, or "n=20"
        # beside 150 stored records reads as data loss.
        text += (
            f"; {window_n} scores in the window, the test decided after the first "
            f"{c.get('n', 0)} of them"
        )
    if changed_text:
        text += f"; changed: {changed_text}"
    if worst:
        text += "; worst traces: " + ", ".join(str(w["trace_id"]) for w in worst)
    return text


def export_command(alert_id: object) -> str:
    """The command that turns an alert's traces into a regression dataset."""
    return f"evaluator dataset export alert-{str(alert_id)[:8]}.jsonl --alert {alert_id}"


def alert_to_json(alert: AlertRecord) -> dict[str, Any]:
    """The stable JSON of one alert (CLI --json, /api/alerts, webhook body)."""

    def iso(value: datetime | None) -> str | None:
        return None if value is None else as_utc(value).isoformat()

    return {
        "id": str(alert.id),
        "kind": alert.kind,
        "status": alert.status,
        "rubric": alert.rubric,
        "labels": alert.labels,
        "group_key": alert.group_key,
        "test": alert.test,
        "p_value": alert.p_value,
        "e_value": alert.e_value,
        "baseline_mean": alert.baseline_mean,
        "current_mean": alert.current_mean,
        "baseline_n": alert.baseline_n,
        "current_n": alert.current_n,
        "summary": alert.summary,
        "changed": alert.changed,
        "worst_traces": alert.worst_traces,
        "message": alert.message,
        "export_command": export_command(alert.id),
        "alert_class": alert.summary.get("alert_class", "page"),
        "resolution": alert.resolution,
        "deliveries": alert.deliveries,
        "opened_at": iso(alert.opened_at),
        "updated_at": iso(alert.updated_at),
        "resolved_at": iso(alert.resolved_at),
    }


# --- records ----------------------------------------------------------------------------------


def try_open(store: Store, alert: AlertRecord) -> bool:
    """Insert an open alert; False when another one is already open for its group and kind."""
    with Session(store.engine) as session:
        session.add(alert)
        try:
            session.commit()
        except IntegrityError:  # the partial unique index: someone else opened it first
            session.rollback()
            return False
        session.refresh(alert)
    return True


def open_alerts(store: Store, rubric: str | None = None) -> list[AlertRecord]:
    query = select(AlertRecord).where(AlertRecord.status == "open")
    if rubric is not None:
        query = query.where(AlertRecord.rubric == rubric)
    with Session(store.engine) as session:
        return list(session.exec(query).all())


def in_cool_down(store: Store, key: str, now: datetime, cool_down: timedelta) -> bool:
    """True when an alert for `key` opened or resolved less than `cool_down` ago."""
    since = now - cool_down
    query = select(AlertRecord.id).where(
        AlertRecord.group_key == key,
        (col(AlertRecord.opened_at) >= since) | (col(AlertRecord.resolved_at) >= since),
    )
    with Session(store.engine) as session:
        return session.exec(query.limit(1)).first() is not None


def save(store: Store, alert: AlertRecord) -> None:
    with Session(store.engine) as session:
        session.merge(alert)
        session.commit()


def open_alert_of(store: Store, rubric: str, key: str) -> AlertRecord | None:
    """The open alert of `rubric` for group `key`, if any (the partial unique index keeps
    it to one)."""
    return next((a for a in open_alerts(store, rubric) if a.group_key == key), None)


def resolve(store: Store, alert: AlertRecord, resolution: str, now: datetime) -> AlertRecord:
    """Mark an open alert resolved at `now`, saying why, and save it."""
    alert.status, alert.resolved_at, alert.updated_at = "resolved", now, now
    alert.resolution = resolution
    save(store, alert)
    return alert


def open_or_resolve(
    store: Store,
    rubric: str,
    key: str,
    now: datetime,
    cool_down: timedelta,
    *,
    resolution: Callable[[AlertRecord], str | None],
    build: Callable[[], AlertRecord] | None,
) -> tuple[str, AlertRecord | None]:
    """One check's effect on group `key`'s alert: an open one resolves when `resolution`
    returns why (else it stays open); with none open, `build` (None: no alarm) opens one
    unless the group is in its cool-down.

    Returns ("opened" | "resolved" | "suppressed" | "already_open" | "none", alert).
    """
    current = open_alert_of(store, rubric, key)
    if current is not None:
        why = resolution(current)
        if why is None:
            return "already_open", current
        return "resolved", resolve(store, current, why, now)
    if build is None:
        return "none", None
    if in_cool_down(store, key, now, cool_down):
        return "suppressed", None
    alert = build()
    return ("opened", alert) if try_open(store, alert) else ("already_open", None)


def list_alerts(
    store: Store,
    *,
    open_only: bool = False,
    rubric: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[AlertRecord]:
    """Newest first."""
    query = select(AlertRecord).order_by(col(AlertRecord.opened_at).desc())
    if open_only:
        query = query.where(AlertRecord.status == "open")
    if rubric is not None:
        query = query.where(AlertRecord.rubric == rubric)
    if since is not None:
        query = query.where(
            (col(AlertRecord.opened_at) >= since)
            | (AlertRecord.status == "open")
            | (col(AlertRecord.resolved_at) >= since)
        )
    with Session(store.engine) as session:
        return list(session.exec(query.limit(limit)).all())


def alerts_table(alerts: Sequence[AlertRecord]) -> str:
    if not alerts:
        return "no alerts"
    header = f"{'status':<9}{'kind':<9}{'opened (UTC)':<18}{'rubric':<18}{'p':>8}  group / message"
    lines = [header, "-" * len(header)]
    for a in alerts:
        where = " ".join(f"{k}={v}" for k, v in a.labels.items())
        lines.append(
            f"{a.status:<9}{a.kind:<9}{as_utc(a.opened_at):%Y-%m-%d %H:%M} "
            f"{a.rubric[:17]:<18}{a.p_value:>8.2g}  {where}"
        )
        lines.append(f"{'':<9}{a.message}")
        if a.status == "open":
            lines.append(f"{'':<9}dataset: {export_command(a.id)}")
        if a.status == "resolved" and a.resolution:
            lines.append(f"{'':<9}resolved: {a.resolution}")
    return "\n".join(lines)
