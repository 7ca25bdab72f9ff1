"""Erasure: delete everything stored about given traces, or about a whole tenant.

What is found and deleted, in one transaction per call:
* traces (the payload: prompts, answers, documents), by id or by their `tenant` column;
* eval records (scores, explanations, details quoting the trace), by trace id or tenant;
* evaluation intents (outbox rows) and spans still waiting for their trace (OTLP);
* human feedback about the trace (labels, scores, notes);
* judge requests parked for the Batch API (their bodies quote the trace); a batch file
  already uploaded lives at the provider until its batch ends (delete it there if needed);
* the trace's budget offers still waiting for their cap window;
* mentions of the trace ids in alerts (the alert itself stays): its `worst_traces` entries
  are dropped, and the ID is replaced by "[erased]" in its message, resolution, summary,
  changes and recorded webhook deliveries.

Kept but unlinked: the trace's judge-budget admissions (`budget_admissions`) count against
the day's cap, so deleting them would let an erasure buy judge calls over the cap; their
trace id becomes a random token ("erased-…"), the same in the row's id.

What holds no trace id and so needs nothing: the hourly rollups (counts and sums per label
group). What cannot be found by trace: judge replies cached in Redis, keyed by a hash of
the prompt; they expire after judge.cache_ttl_s (docs/scaling.md, "Erasure").
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, inspect, select, update
from sqlalchemy.engine import Connection, Engine

from evaluator.store.admissions import BudgetAdmission, BudgetOffer
from evaluator.store.batches import BatchRequest
from evaluator.store.models import AlertRecord, EvalRecord, PendingSpan, TraceRecord, table_of
from evaluator.store.outbox import EvalIntent
from evaluator.store.trust_models import FeedbackRecord

_TRACES, _RECORDS = table_of(TraceRecord), table_of(EvalRecord)
_INTENTS, _SPANS, _ALERTS = table_of(EvalIntent), table_of(PendingSpan), table_of(AlertRecord)
_FEEDBACK, _BATCHED = table_of(FeedbackRecord), table_of(BatchRequest)
_ADMITTED, _OFFERS = table_of(BudgetAdmission), table_of(BudgetOffer)
_ALERT_TEXT = ("message", "resolution")
_ALERT_JSON = ("summary", "changed", "deliveries", "labels")
ERASED = "[erased]"
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


@dataclass
class ErasureReport:
    deleted: dict[str, int] = field(default_factory=dict)
    alerts_scrubbed: int = 0
    admissions_unlinked: int = 0
    tokens: dict[str, str] = field(default_factory=dict)  # trace id -> its admissions' token

    def add(self, table: str, n: int) -> None:
        self.deleted[table] = self.deleted.get(table, 0) + n


def tenant_trace_ids(engine: Engine, tenant: str) -> list[str]:
    """Trace ids of a tenant: from stored traces and from records (a trace may be gone)."""
    with engine.connect() as conn:
        ids = set(conn.scalars(select(_TRACES.c.trace_id).where(_TRACES.c.tenant == tenant)))
        ids |= set(conn.scalars(select(_RECORDS.c.trace_id).where(_RECORDS.c.tenant == tenant)))
    return sorted(ids)


def _mention(ids: set[str]) -> re.Pattern[str]:
    """Any of the IDs standing alone (not inside a longer ID: erasing "t1" keeps "t10")."""
    alternatives = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    return re.compile(rf"(?<![\w-])(?<!\w\.)(?:{alternatives})(?![\w-]|\.\w)")


def _scrubbed(value: Any, mention: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return mention.sub(ERASED, value)
    if isinstance(value, list):
        return [_scrubbed(v, mention) for v in value]
    if isinstance(value, dict):
        return {k: _scrubbed(v, mention) for k, v in value.items()}
    return value


def _scrub_alerts(conn: Connection, ids: set[str]) -> int:
    """Drop the IDs' worst-trace entries and replace their mentions everywhere else in the
    alert (the table is small: one row per alert ever opened)."""
    if not ids:
        return 0
    mention = _mention(ids)
    columns = [_ALERTS.c[name] for name in ("worst_traces", *_ALERT_TEXT, *_ALERT_JSON)]
    scrubbed = 0
    for row in conn.execute(select(_ALERTS.c.id, *columns)).mappings().all():
        blob = json.dumps([row[c.name] for c in columns], default=str)
        if not any(i in blob for i in ids):
            continue
        worst = row["worst_traces"] or []
        values: dict[str, Any] = {
            "worst_traces": [w for w in worst if str(w.get("trace_id")) not in ids]
        }
        for name in (*_ALERT_TEXT, *_ALERT_JSON):
            values[name] = _scrubbed(row[name], mention)
        values["worst_traces"] = _scrubbed(values["worst_traces"], mention)
        conn.execute(update(_ALERTS).where(_ALERTS.c.id == row["id"]).values(**values))
        scrubbed += 1
    return scrubbed


def _unlink_admissions(conn: Connection, ids: list[str], tokens: dict[str, str]) -> int:
    """The rows keep counting against the day's cap; the trace id in them becomes a token."""
    rows = conn.execute(
        select(_ADMITTED.c.id, _ADMITTED.c.trace_id).where(
            _ADMITTED.c.trace_id.in_(bindparam("ids", expanding=True))
        ),
        {"ids": ids},
    ).all()
    for trace_id in {r.trace_id for r in rows}:
        tokens.setdefault(trace_id, f"erased-{uuid.uuid4().hex[:16]}")
    for row_id, trace_id in rows:
        sep = "\x1f"
        new_id = row_id.replace(f"{sep}{trace_id}{sep}", f"{sep}{tokens[trace_id]}{sep}")
        conn.execute(
            update(_ADMITTED)
            .where(_ADMITTED.c.id == row_id)
            .values(id=new_id, trace_id=tokens[trace_id])
        )
    return len(rows)


def erase_traces(engine: Engine, trace_ids: Sequence[str]) -> ErasureReport:
    report = ErasureReport()
    ids = sorted(set(trace_ids))
    has_spans = inspect(engine).has_table(_SPANS.name)
    has_feedback = inspect(engine).has_table(_FEEDBACK.name)
    has_batched = inspect(engine).has_table(_BATCHED.name)
    has_budget = inspect(engine).has_table(_ADMITTED.name)
    with engine.begin() as conn:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            targets = [(_TRACES, "traces"), (_RECORDS, "eval_records"), (_INTENTS, "eval_intents")]
            if has_spans:
                targets.append((_SPANS, "otlp_pending_spans"))
            if has_feedback:
                targets.append((_FEEDBACK, "feedback"))
            if has_batched:
                targets.append((_BATCHED, "batch_requests"))
            if has_budget:
                targets.append((_OFFERS, "budget_offers"))
            for table, name in targets:
                stmt = delete(table).where(table.c.trace_id.in_(bindparam("ids", expanding=True)))
                report.add(name, conn.execute(stmt, {"ids": chunk}).rowcount)
            if has_budget:
                report.admissions_unlinked += _unlink_admissions(conn, chunk, report.tokens)
        report.alerts_scrubbed = _scrub_alerts(conn, set(ids))
    return report


def erase_tenant(engine: Engine, tenant: str) -> ErasureReport:
    """Every trace and record labelled with `tenant` (and what hangs off their ids)."""
    report = erase_traces(engine, tenant_trace_ids(engine, tenant))
    with engine.begin() as conn:  # records with the tenant label whose trace id is reused
        report.add(
            "eval_records",
            conn.execute(delete(_RECORDS).where(_RECORDS.c.tenant == tenant)).rowcount,
        )
    return report
