"""`evaluator health`'s alert-sink check: every configured sink, its configuration faults
(which fail the check: the worker refuses to start on them), whether its host resolves now,
and its last delivery result (from the alerts' recorded deliveries).

A sink is `ok`, `degraded` (its last delivery failed, or its host does not resolve now:
alerts may not arrive, the service still runs, so health stays ok with a warning) or
`misconfigured` (it cannot ever send: health fails).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from evaluator.config.settings import Settings
from evaluator.config.urls import Resolver, system_resolver
from evaluator.outputs.webhooks import configured_targets, probe_sinks, sink_problems

RECENT_ALERTS = 200  # the alerts whose deliveries are searched for each sink's last result


def last_deliveries(settings: Settings, labels: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{sink label: its newest recorded delivery}; `labels` maps each label to its kind
    ("webhook"/"slack"), to place results recorded before they named their target."""
    from sqlmodel import Session, col, select

    from evaluator.store.models import AlertRecord
    from evaluator.store.store import Store

    store = Store(settings.database.url, migrate=False)
    try:
        query = (
            select(AlertRecord.deliveries)
            .order_by(col(AlertRecord.updated_at).desc())
            .limit(RECENT_ALERTS)
        )
        with Session(store.engine) as session:
            rows = session.exec(query).all()
    finally:
        store.close()
    kinds = list(labels.values())
    by_kind = {k: label for label, k in labels.items() if kinds.count(k) == 1}
    last: dict[str, dict[str, Any]] = {}
    for deliveries in rows:
        for d in deliveries or []:
            label = d.get("target") or by_kind.get(d.get("sink", ""))
            if label in labels and str(d.get("at", "")) > str(last.get(label, {}).get("at", "")):
                last[label] = d
    return last


def check_sinks(settings: Settings, resolver: Resolver = system_resolver) -> dict[str, Any]:
    alerts = settings.alerts
    targets = configured_targets(alerts, os.environ)
    if not targets:
        return {"ok": True, "sinks": 0}
    problems = sink_problems(alerts, os.environ)
    labels = {t.label: t.name for t in targets}
    try:
        last = last_deliveries(settings, labels)
        history = ""
    except Exception as exc:  # no database yet: the database check says why
        last, history = {}, str(exc).splitlines()[0][:200]
    unreachable = asyncio.run(probe_sinks(alerts, os.environ, resolver))
    sinks, warnings = [], []
    for t in targets:
        faults = [p for p in problems if t.label in p]
        d = last.get(t.label)
        state = "misconfigured" if faults else "ok"
        why = [unreachable[t.label]] if t.label in unreachable else []
        if d is not None and not d.get("ok"):
            why.append(f"last delivery failed: {d.get('error') or d.get('status')}")
        if why and not faults:
            state = "degraded"
            warnings.append(f"{t.label}: {'; '.join(why)}")
        entry: dict[str, Any] = {
            "sink": t.label,
            "signed": None if t.name == "slack" else t.secret is not None,
            "state": state,
            "last_delivery": None if d is None else _summary(d),
        }
        if state == "degraded":
            entry["warning"] = "; ".join(why)
        if faults:
            entry["error"] = "; ".join(p.removeprefix(f"alerts: {t.label}: ") for p in faults)
        sinks.append(entry)
    out: dict[str, Any] = {"ok": not problems, "sinks": sinks}
    if problems:
        out["error"] = "; ".join(problems)
    if warnings:
        out["warning"] = "; ".join(warnings)
    if history:
        out["history"] = f"last deliveries unknown: {history}"
    return out


def _summary(d: dict[str, Any]) -> dict[str, Any]:
    keys = ("at", "event", "ok", "status", "attempts", "error")
    return {k: d.get(k) for k in keys if d.get(k) not in (None, "")}


def sink_lines(c: dict[str, Any]) -> list[str]:
    """The table's lines for the sinks check, one per sink."""
    if not c.get("sinks"):
        return [f"ok    {'alerts':<9} no webhook sinks configured (alerts go to the log)"]
    lines = []
    for s in c["sinks"]:
        state = {"ok": "ok  ", "degraded": "WARN", "misconfigured": "FAIL"}[s["state"]]
        d = s["last_delivery"]
        if s.get("error"):
            text = s["error"]
        elif s.get("warning"):
            text = s["warning"]
        elif d is None:
            text = "no delivery yet"
        else:
            result = "ok" if d.get("ok") else f"failed ({d.get('error') or d.get('status')})"
            text = f"last delivery {d.get('at', '?')[:19]} {result}"
        lines.append(f"{state}  {'alerts':<9} {s['sink']}: {s['state']}; {text}")
    return lines
