"""Every alert's way out, written once: OpenTelemetry, the sinks (log, signed webhooks,
Slack) and the record of each delivery on the alert.

Every job that opens or resolves an alert hands its transitions here as (event, alert)
pairs: the regression check (`drop`, `version`), the certification job
(`cert_withdrawn`) and the anchor runs (`judge_drift`, `judge_floor`). A new alert kind
does the same (CONTRIBUTING.md, "an alert kind").

An event reaches the sinks once. Each delivery is recorded on the alert as
{"event", "at", sink, ok, attempts, ...}, and an event already recorded on the stored alert
is not sent again: a job that hands the same transition over twice, or a worker that
resolves an alert another worker resolved a moment earlier, sends nothing twice (the
second can still slip through when both deliver at the same instant). A re-run of a job
raises no event for an alert whose state it does not change (`open_or_resolve` returns
"already_open"), so it sends nothing either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from evaluator.analytics.alerts import alert_to_json, save
from evaluator.outputs.otel import EvaluationExporter
from evaluator.outputs.webhooks import AlertSinks
from evaluator.store.models import AlertRecord, utcnow
from evaluator.store.store import Store

OPENED, RESOLVED = "alert.opened", "alert.resolved"
# `open_or_resolve`'s outcomes that change an alert; the others send nothing.
_EVENT_OF = {"opened": OPENED, "resolved": RESOLVED}

AlertEvent = tuple[str, AlertRecord]


def transition(outcome: str, alert: AlertRecord | None) -> list[AlertEvent]:
    """The event of an `open_or_resolve` outcome: one for "opened" or "resolved", none for
    "already_open", "suppressed" or "none"."""
    event = _EVENT_OF.get(outcome)
    return [] if event is None or alert is None else [(event, alert)]


def _stored_deliveries(store: Store, alert: AlertRecord) -> list[dict[str, Any]]:
    with Session(store.engine) as session:
        stored = session.get(AlertRecord, alert.id)
        return list(stored.deliveries) if stored is not None else list(alert.deliveries)


async def deliver_alerts(
    store: Store,
    sinks: AlertSinks,
    events: Sequence[AlertEvent],
    otel: EvaluationExporter | None = None,
) -> list[AlertEvent]:
    """Send each event not yet delivered to OpenTelemetry (with `otel`; never raises) and to
    every sink, and record the sinks' results on the alert. Returns the events sent."""
    pending: list[AlertEvent] = []
    for event, alert in events:
        recorded = await asyncio.to_thread(_stored_deliveries, store, alert)
        already = any(d.get("event") == event for d in recorded)
        if already or any(e == event and a.id == alert.id for e, a in pending):
            continue
        alert.deliveries = recorded  # what other runs recorded is kept
        pending.append((event, alert))
    if otel is not None and pending:
        await otel.export_alerts([(e, alert_to_json(a)) for e, a in pending])
    for event, alert in pending:
        results = await sinks.deliver(event, alert_to_json(alert))
        alert.deliveries = [
            *alert.deliveries,
            *({"event": event, "at": utcnow().isoformat(), **r.to_dict()} for r in results),
        ]
        await asyncio.to_thread(save, store, alert)
    return pending
