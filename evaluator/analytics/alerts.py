"""Regression alerts: policy per rubric, the alert record's life cycle and its wording.

An alert is one row of `alerts` (AlertRecord). At most one is open per group and kind
(`drop`: the group's recent window fell against its own rolling baseline; `version`: a
new prompt version or model scores worse than the one it replaced). A unique partial
index on open alerts makes "open" race-free across workers; a cool-down keeps a flapping
group from paging again right after it resolved.

    >>> parse_duration("6h"), parse_duration("7d")
    (datetime.timedelta(seconds=21600), datetime.timedelta(days=7))
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from evaluator.analytics.regression import RegressionPolicy
from evaluator.store.models import AlertRecord
from evaluator.store.store import Store, as_utc

if TYPE_CHECKING:
    from evaluator.config.settings import AlertsSettings
    from judges.rubric import Rubric

LABELS = ("prompt_version", "model", "feature", "tenant")
DETECTORS = ("sequential", "window", "both")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FLOAT_KEYS = ("min_effect_mean", "min_effect_pass_rate", "alpha", "arl", "confidence")
POLICY_KEYS = ("window", "baseline", "min_samples", *_FLOAT_KEYS, "method", "detector", "group_by")


def parse_duration(text: str | int | float) -> timedelta:
    """'30m', '6h', '7d', '2w' (or a number of seconds) → timedelta."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a duration; use e.g. 30m, 6h, 7d")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class CheckConfig:
    """How one rubric is checked: the statistics policy, what pages, and the group labels."""

    policy: RegressionPolicy
    detector: str = "sequential"
    group_by: tuple[str, ...] = ("prompt_version", "model", "feature")


def parse_policy(data: Mapping[str, Any], group_by: Sequence[str] = LABELS[:3]) -> CheckConfig:
    """Validate a [regression] / [alerts.policy] table; ValueError names the key."""
    unknown = sorted(set(data) - set(POLICY_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(POLICY_KEYS)}")
    kw: dict[str, Any] = {}
    try:
        for key in ("window", "baseline"):
            if key in data:
                try:
                    kw[key] = parse_duration(data[key])
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        if "min_samples" in data:
            kw["min_samples"] = int(data["min_samples"])
        for key in _FLOAT_KEYS:
            if key in data:
                kw[key] = float(data[key])
        if "method" in data:
            kw["method"] = str(data["method"])
        policy = RegressionPolicy(**kw)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    detector = str(data.get("detector", "sequential"))
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    labels = tuple(data.get("group_by", group_by))
    bad = [x for x in labels if x not in LABELS]
    if bad:
        raise ValueError(f"group_by: unknown label {bad[0]!r}; use {', '.join(LABELS)}")
    return CheckConfig(policy, detector, labels)


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
    if changed_text:
        text += f"; changed: {changed_text}"
    if worst:
        text += "; worst traces: " + ", ".join(str(w["trace_id"]) for w in worst)
    return text


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
        if a.status == "resolved" and a.resolution:
            lines.append(f"{'':<9}resolved: {a.resolution}")
    return "\n".join(lines)
