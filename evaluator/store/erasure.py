"""Erasure: delete everything stored about given traces, or about a whole tenant.

What is found and deleted, in one transaction per call:
* traces (the payload: prompts, answers, documents), by id or by their `tenant` column;
* eval records (scores, explanations, details quoting the trace), by trace id or tenant;
* evaluation intents (outbox rows) and spans still waiting for their trace (OTLP);
* human feedback about the trace (labels, scores, notes);
* judge requests parked for the Batch API (their bodies quote the trace); a batch file
  already uploaded lives at the provider until its batch ends (delete it there if needed);
* mentions of the trace ids in alerts' `worst_traces` lists (the alert itself stays).

What holds no trace id and so needs nothing: the hourly rollups (counts and sums per label
group). What cannot be found by trace: judge replies cached in Redis, keyed by a hash of
the prompt; they expire after judge.cache_ttl_s (docs/scaling.md, "Erasure").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, inspect, select, update
from sqlalchemy.engine import Connection, Engine

from evaluator.store.batches import BatchRequest
from evaluator.store.models import AlertRecord, EvalRecord, PendingSpan, TraceRecord, table_of
from evaluator.store.outbox import EvalIntent
from evaluator.store.trust_models import FeedbackRecord

_TRACES, _RECORDS = table_of(TraceRecord), table_of(EvalRecord)
_INTENTS, _SPANS, _ALERTS = table_of(EvalIntent), table_of(PendingSpan), table_of(AlertRecord)
_FEEDBACK, _BATCHED = table_of(FeedbackRecord), table_of(BatchRequest)
_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


@dataclass
class ErasureReport:
    deleted: dict[str, int] = field(default_factory=dict)
    alerts_scrubbed: int = 0

    def add(self, table: str, n: int) -> None:
        self.deleted[table] = self.deleted.get(table, 0) + n


def tenant_trace_ids(engine: Engine, tenant: str) -> list[str]:
    """Trace ids of a tenant: from stored traces and from records (a trace may be gone)."""
    with engine.connect() as conn:
        ids = set(conn.scalars(select(_TRACES.c.trace_id).where(_TRACES.c.tenant == tenant)))
        ids |= set(conn.scalars(select(_RECORDS.c.trace_id).where(_RECORDS.c.tenant == tenant)))
    return sorted(ids)


def _scrub_alerts(conn: Connection, ids: set[str]) -> int:
    scrubbed = 0
    for alert_id, worst in conn.execute(select(_ALERTS.c.id, _ALERTS.c.worst_traces)).all():
        kept = [w for w in worst or [] if str(w.get("trace_id")) not in ids]
        if len(kept) != len(worst or []):
            conn.execute(update(_ALERTS).where(_ALERTS.c.id == alert_id).values(worst_traces=kept))
            scrubbed += 1
    return scrubbed


def erase_traces(engine: Engine, trace_ids: Sequence[str]) -> ErasureReport:
    report = ErasureReport()
    ids = sorted(set(trace_ids))
    has_spans = inspect(engine).has_table(_SPANS.name)
    has_feedback = inspect(engine).has_table(_FEEDBACK.name)
    has_batched = inspect(engine).has_table(_BATCHED.name)
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
            for table, name in targets:
                stmt = delete(table).where(table.c.trace_id.in_(bindparam("ids", expanding=True)))
                report.add(name, conn.execute(stmt, {"ids": chunk}).rowcount)
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
