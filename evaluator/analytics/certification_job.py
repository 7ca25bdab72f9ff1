"""The certification cron job: per cascade rubric, read the calibration draw's records, write
new certifications at their checkpoints, withdraw drifting ones, and raise an alert for each
withdrawal (kind "cert_withdrawn", delivered like every alert: log, webhooks, OpenTelemetry).

What it decides, and with which guarantee, is evaluator.analytics.certification_plan (pure);
this module is the I/O around it. Records read: a rubric's ok and error records whose
`details.cascade.calibration` is true (the cascade writes it, judges.scorers.faithfulness);
an ok record's verdict is its `passed` (the judge's verdict against the rubric's
pass_threshold); an error record (the judge call failed: no verdict) is a label counted
against the cheap stage — failing, and a miss at every threshold at or below its cheap score
(certification_plan.Label.errored) — never dropped: dropping would bias the miss rate low
when the judge errs more on the answers it would fail. Skipped records are not labels.
The key of a record is (rubric, details.cascade.stage, epoch, prompt_version or '',
details.cascade.stratum). Saved judge calls: a certification's records with
`details.cascade.decided_by = "local_certified"` naming it.

Runs every CRON_MINUTES in the worker (evaluator.worker.app), claimed per period in Redis
so one worker of a deployment runs it; it recomputes everything from SQL each time, so a run
missed or repeated changes nothing (rows are written per checkpoint, once).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Engine

from evaluator.analytics.alert_delivery import deliver_alerts
from evaluator.analytics.alerts import (
    group_key,
    open_alert_of,
    resolve,
    try_open,
)
from evaluator.analytics.certification_plan import NO_SCORE, KeyPlan, Label, Withdrawal, plan_key
from evaluator.analytics.judge_drift import KIND as JUDGE_DRIFT
from evaluator.config.rubrics import RubricSet
from evaluator.outputs.webhooks import AlertSinks, build_sinks
from evaluator.store import certifications as certs
from evaluator.store.certifications import CertificationRecord, Key
from evaluator.store.models import AlertRecord, EvalRecord, table_of, utcnow
from evaluator.store.store import Store, as_utc
from judges.rubric import Rubric

log = logging.getLogger("evaluator.analytics.certification")

KIND = "cert_withdrawn"  # alerts.kind is 16 characters at most
CRON_MINUTES = 5
DEFAULT_ALPHA, DEFAULT_DELTA = 0.05, 0.1
_R = table_of(EvalRecord)


def _cascade(name: str) -> Any:
    """details.cascade.<name> in SQL (a JSON path: SQLite and PostgreSQL)."""
    return _R.c.details[("cascade", name)]


def cascade_rubrics(rubrics: RubricSet) -> list[Rubric]:
    return [r for r in rubrics.rubrics if r.resolved_method == "cascade"]


def guarantee_of(rubric: Rubric) -> tuple[float, float]:
    """The rubric's (alpha, delta) (options of the cascade; defaults 0.05 / 0.1)."""
    opts = rubric.options
    return float(opts.get("alpha", DEFAULT_ALPHA)), float(opts.get("delta", DEFAULT_DELTA))


# --- reads ----------------------------------------------------------------------------------


def _score(cascade: dict[str, Any]) -> float:
    value = cascade.get("cheap_score", cascade.get("local_value"))
    return NO_SCORE if value is None else float(value)


def read_labels(engine: Engine, rubric: str) -> dict[Key, list[Label]]:
    """The calibration draw's judged records of `rubric` per key, in arrival order."""
    query = (
        select(
            _R.c.created_at,
            _R.c.epoch,
            _R.c.prompt_version,
            _R.c.passed,
            _R.c.status,
            _R.c.trace_id,
            _R.c.details,
        )
        .where(
            _R.c.rubric == rubric,
            or_(and_(_R.c.status == "ok", _R.c.passed.is_not(None)), _R.c.status == "error"),
            _cascade("calibration").as_boolean().is_(True),
        )
        .order_by(_R.c.created_at, _R.c.trace_id)
    )
    out: dict[Key, list[Label]] = defaultdict(list)
    with engine.connect() as conn:
        for at, epoch, pv, passed, status, trace_id, details in conn.execute(query):
            c = (details or {}).get("cascade") or {}
            key = (
                rubric,
                str(c.get("stage") or ""),
                str(epoch),
                pv or "",
                str(c.get("stratum") or "unknown"),
            )
            cluster = str(c.get("cluster") or f"trace:{trace_id}")
            errored = status == "error"
            out[key].append(Label(as_utc(at), cluster, _score(c), errored or not passed, errored))
    return dict(out)


def saved_calls(engine: Engine, rubric: str) -> dict[str, int]:
    """Records of `rubric` each certification decided without the judge."""
    cert_id = _cascade("certification").as_string()
    query = (
        select(cert_id, func.count())
        .where(_R.c.rubric == rubric, _cascade("decided_by").as_string() == "local_certified")
        .group_by(cert_id)
    )
    with engine.connect() as conn:
        return {str(c): int(n) for c, n in conn.execute(query) if c}


@dataclass(frozen=True, slots=True)
class DriftState:
    """The rubric's judge-drift alerts: an open one's message, when the latest resolved, and
    when the latest opened (an alert opened and resolved between two runs shows only here)."""

    open: str | None = None
    resolved_at: datetime | None = None
    opened_at: datetime | None = None


def judge_drift_state(store: Store, rubric: str) -> DriftState:
    a = table_of(AlertRecord)
    query = select(a.c.status, a.c.message, a.c.resolved_at, a.c.opened_at).where(
        a.c.rubric == rubric, a.c.kind == JUDGE_DRIFT
    )
    with store.engine.connect() as conn:
        drift = conn.execute(query).all()
    current = next((m for status, m, _, _ in drift if status == "open"), None)
    resolved = [as_utc(at) for _, _, at, _ in drift if at is not None]
    opened = [as_utc(at) for _, _, _, at in drift if at is not None]
    return DriftState(
        current[:300] if current else None,
        max(resolved) if resolved else None,
        max(opened) if opened else None,
    )


# --- decisions and writes -------------------------------------------------------------------


@dataclass
class JobReport:
    written: list[CertificationRecord] = field(default_factory=list)
    withdrawn: list[Withdrawal] = field(default_factory=list)
    events: list[tuple[str, AlertRecord]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "written": [r.id for r in self.written],
            "certified": [r.id for r in self.written if r.threshold is not None],
            "withdrawn": [w.row.id for w in self.withdrawn],
            "alerts": len(self.events),
            "errors": self.errors,
        }


def _alert_labels(key: Key) -> dict[str, str | None]:
    _, stage, epoch, prompt_version, stratum = key
    return {
        "stratum": stratum,
        "prompt_version": prompt_version or None,
        "stage": stage,
        "judge_epoch": epoch,
    }


def withdrawal_alert(w: Withdrawal, now: datetime) -> AlertRecord:
    row = w.row
    labels = _alert_labels(row.key)
    message = (
        f"{row.rubric} [stratum={row.stratum}]: certification {row.id} WITHDRAWN "
        f"(threshold {row.threshold}, alpha {row.alpha}, delta {row.delta}): {w.reason}. "
        "The judge decides this stratum again until a new certification is computed."
    )
    return AlertRecord(
        group_key=group_key(KIND, row.rubric, labels),
        kind=KIND,
        rubric=row.rubric,
        labels=labels,
        test=w.test,
        p_value=row.delta / 2 if w.test.endswith("monitor") else 1.0,
        current_mean=(w.failed / w.audited) if w.audited else 0.0,
        baseline_mean=w.ceiling or 0.0,
        current_n=w.audited,
        baseline_n=row.labels,
        summary={
            "certification": row.id,
            "threshold": row.threshold,
            "audited": w.audited,
            "failed": w.failed,
            "ceiling": w.ceiling,
            "reason": w.reason,
        },
        changed={"text": w.reason},
        message=message,
        opened_at=now,
        updated_at=now,
    )


def _apply(store: Store, key: Key, plan: KeyPlan, now: datetime, report: JobReport) -> None:
    if plan.withdraw is not None:
        w = plan.withdraw
        if certs.withdraw(store.engine, w.row.id, w.reason, now):
            report.withdrawn.append(w)
            alert = withdrawal_alert(w, now)
            if try_open(store, alert):
                report.events.append(("alert.opened", alert))
    if plan.write is not None and certs.write_once(store.engine, plan.write):
        row = plan.write
        report.written.append(row)
        if row.threshold is not None:  # re-certified: a withdrawal alert of the key resolves
            open_alert = open_alert_of(store, key[0], group_key(KIND, key[0], _alert_labels(key)))
            if open_alert is not None:
                why = f"re-certified: {row.id} (threshold {row.threshold})"
                report.events.append(("alert.resolved", resolve(store, open_alert, why, now)))


def decide(store: Store, rubrics: Iterable[Rubric], now: datetime) -> JobReport:
    """One run over the cascade rubrics (synchronous: SQL)."""
    report = JobReport()
    for rubric in rubrics:
        try:
            alpha, delta = guarantee_of(rubric)
            labels = read_labels(store.engine, rubric.name)
            rows: dict[Key, list[CertificationRecord]] = defaultdict(list)
            for r in certs.list_certifications(store.engine, rubric.name):
                rows[r.key].append(r)
            drift = judge_drift_state(store, rubric.name)
            for key in sorted(set(labels) | set(rows)):
                plan = plan_key(
                    key,
                    labels.get(key, []),
                    rows.get(key, []),
                    alpha=alpha,
                    delta=delta,
                    now=now,
                    drift_open=drift.open,
                    drift_resolved_at=drift.resolved_at,
                    drift_opened_at=drift.opened_at,
                )
                _apply(store, key, plan, now, report)
            certs.set_saved_calls(store.engine, saved_calls(store.engine, rubric.name))
        except Exception as exc:  # one rubric's failure must not stop the others
            log.exception("certification job failed for rubric %s", rubric.name)
            report.errors.append(f"{rubric.name}: {type(exc).__name__}: {exc}")
    return report


async def run_certification(
    store: Store,
    rubrics: Sequence[Rubric],
    sinks: AlertSinks,
    now: datetime | None = None,
    otel: Any = None,
) -> JobReport:
    """Decide in a thread, then deliver the alerts and record their deliveries."""
    now = now or utcnow()
    report = await asyncio.to_thread(decide, store, rubrics, now)
    await deliver_alerts(store, sinks, report.events, otel)
    return report


async def certification_job(ctx: dict[str, Any]) -> dict[str, Any]:
    """arq cron body: one worker per period (a Redis claim beside arq's unique job id)."""
    runtime = ctx["runtime"]
    settings = runtime.settings
    rubrics = cascade_rubrics(runtime.rubrics)
    if not rubrics:
        return {"skipped": "no cascade rubric"}
    now = utcnow()
    period = now.replace(minute=now.minute - now.minute % CRON_MINUTES, second=0, microsecond=0)
    claim = f"{settings.redis.key_prefix}:certification:{period.astimezone(UTC):%Y%m%dT%H%M}"
    if not await ctx["redis"].set(claim, "1", nx=True, ex=CRON_MINUTES * 120):
        return {"skipped": "already run for this period"}
    sinks = build_sinks(settings.alerts, os.environ)
    try:
        report = await run_certification(runtime.store, rubrics, sinks, now, otel=runtime.otel)
    finally:
        await sinks.aclose()
    return report.to_dict()
