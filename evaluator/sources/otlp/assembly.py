"""Assemble OTLP spans into traces: buffer per trace in SQL, hand complete ones to sampling.

Spans of one trace arrive in several export requests, from several services, in any order.
Each span is mapped on receipt (`span_document`) and buffered in `otlp_pending_spans`. A
trace is complete when its root span has arrived and no span has come for `grace_s` (late
children), or, for traces whose root never reaches us (it lives in another service), when
nothing has come for `orphan_s`. `SpanAssembler.complete()` then merges the buffered spans
with any stored version of the trace, enqueues the new ones on the intake list (the same
path `enqueue_trace` uses, with the trace's error/cost/latency as tail signals), saves them
and deletes the buffered rows — in that order, so a crash repeats work but loses nothing
(saving is idempotent, job IDs dedupe). Spans arriving after their trace was flushed merge
into the stored trace without a second enqueue.

Isolation: each span is checked on receipt (`screen_spans`, evaluator.traces.validate) and a
refused one never reaches the buffer; each completed trace is checked again as a whole
(`parse_trace`). A refused trace is quarantined (counted, its cause kept: see
evaluator.sources.quarantine) and its rows deleted, so it cannot block the sweep. A trace is
pushed to intake at most once per `PUSH_MARK_S` (a Redis marker set with the push, in one
script), so a save that keeps failing never refills the intake list.

    assembler = SpanAssembler(store, redis.Redis.from_url(url), key_prefix="evaluator")
    status, body, ctype = handle_otlp_traces(body, ctype, encoding, assembler=assembler)
    assembler.complete()      # from a sweeper thread (`start_sweeper`) or a cron job
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from sqlalchemy import and_, case, delete, func, or_
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from evaluator.errors import TraceFormatError
from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import encode
from evaluator.sampling import trace_labels, trace_signals
from evaluator.sources.feedback import write_feedback
from evaluator.sources.feedback_tail import FeedbackIntake, feed_tail_rules, is_negative
from evaluator.sources.otlp.decode import OtlpConfig, OtlpSpan
from evaluator.sources.otlp.mapping import (
    merge_into,
    screen_spans,
    trace_document,
)
from evaluator.sources.quarantine import Refusal, record_refusals
from evaluator.store.models import PendingSpan, table_of
from evaluator.store.store import Store, is_input_fault
from evaluator.traces.model import Trace, parse_trace

log = logging.getLogger("evaluator.sources.otlp.decode")
PUSH_MARK_S = 3600
# Push each trace whose marker is new; KEYS = markers, ARGV = [ttl, intake key, entries...].
_PUSH_ONCE = """
local pushed = 0
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('RPUSH', ARGV[2], ARGV[i + 2])
    pushed = pushed + 1
  end
end
return pushed
"""


# --- the buffer (SQL) and the hand-off (Redis) ------------------------------------------------


class SpanAssembler:
    """Buffers spans per trace in SQL; `complete()` ingests and enqueues finished traces.

    Safe with several receivers and sweepers on one database: completion is at-least-once
    and converges (a second sweeper re-saves the same merged trace; job IDs dedupe).
    """

    def __init__(
        self,
        store: Store,
        redis_client: redis.Redis | None,
        *,
        key_prefix: str = "evaluator",
        config: OtlpConfig | None = None,
        grace_s: float = 5.0,
        orphan_s: float = 120.0,
        on_negative_feedback: bool = True,
    ) -> None:
        self.store = store
        self.redis = redis_client
        self.config = config or OtlpConfig()
        self.grace_s = grace_s
        self.orphan_s = orphan_s
        self.key_prefix = self._prefix = key_prefix
        self._intake_key = intake_key(key_prefix)
        # Late negative feedback on a stored trace enqueues it (evaluator.sources.feedback_tail).
        self.feedback_intake = (
            None
            if redis_client is None
            else FeedbackIntake(redis_client, key_prefix, on_negative_feedback)
        )
        table_of(PendingSpan).create(store.engine, checkfirst=True)

    def add(self, spans: list[OtlpSpan], *, now: float | None = None) -> list[Refusal]:
        """Buffer the spans that pass `screen_spans` (a re-sent span replaces its earlier
        copy) and store the feedback they carry; returns the refused ones. Raises
        SQLAlchemyError when the database is away (the exporter retries; both writes are
        idempotent)."""
        screened = screen_spans(spans, self.config)
        accepted, refused = screened.accepted, screened.refused
        if not accepted:
            return refused
        received = time.time() if now is None else now
        rows = [
            {
                "trace_id": s.trace_id,
                "span_id": s.span_id,
                "is_root": s.is_root,
                "received_s": received,
                "payload": payload,
            }
            for s, payload in accepted
        ]
        table = table_of(PendingSpan)
        insert = pg_insert if self.store.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["trace_id", "span_id"],
            set_={c: stmt.excluded[c] for c in ("is_root", "received_s", "payload")},
        )
        try:
            with self.store.engine.begin() as conn:
                conn.execute(stmt, rows)
        except Exception as exc:
            if not is_input_fault(exc):
                raise
            for row in rows:  # the database refused a value the checks let through: isolate
                try:
                    with self.store.engine.begin() as conn:
                        conn.execute(stmt, [row])
                except Exception as one:
                    if not is_input_fault(one):
                        raise
                    item = f"span {row['trace_id']}/{row['span_id']}"
                    refused.append(Refusal(item, "refused", str(one).splitlines()[0][:300]))
        self._store_feedback(screened.feedback, refused)
        return refused

    def _store_feedback(self, rows: list[dict[str, Any]], refused: list[Refusal]) -> None:
        """Feedback rows through the one writer POST /api/feedback and import use."""
        done = {r.item for r in refused}
        negative: list[str] = []
        for row in rows:
            item = f"span {row['trace_id']}/{row['span_id']}"
            if item in done:  # its span was refused by the database: so is its feedback
                continue
            try:
                write_feedback(self.store, row)
                if is_negative(row):  # re-sent too: the trace's signal dedupes
                    negative.append(row["trace_id"])
            except Exception as exc:
                if not is_input_fault(exc):
                    raise
                refused.append(Refusal(item, "refused", str(exc).splitlines()[0][:300]))
        if negative:
            feed_tail_rules(self.store, negative, self.feedback_intake)

    def pending_traces(self) -> int:
        table = table_of(PendingSpan)
        with self.store.engine.connect() as conn:
            query = sa_select(func.count(func.distinct(table.c.trace_id)))
            return int(conn.execute(query).scalar_one())

    def _due(self, now: float, limit: int) -> list[str]:
        t = table_of(PendingSpan)
        root_at = func.max(case((t.c.is_root, t.c.received_s), else_=None))
        last_at = func.max(t.c.received_s)
        query = (
            sa_select(t.c.trace_id)
            .group_by(t.c.trace_id)
            .having(
                or_(
                    and_(root_at.is_not(None), last_at <= now - self.grace_s),
                    last_at <= now - self.orphan_s,
                )
            )
            .limit(limit)
        )
        with self.store.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def complete(self, *, now: float | None = None, limit: int = 500) -> list[str]:
        """Ingest the traces that are complete at `now`; returns their IDs.

        Raises when Redis or SQL fails; the buffered rows then stay for the next call.
        """
        t = table_of(PendingSpan)
        trace_ids = self._due(time.time() if now is None else now, limit)
        if not trace_ids:
            return []
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa_select(t.c.id, t.c.trace_id, t.c.payload).where(t.c.trace_id.in_(trace_ids))
            ).all()
        grouped: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        for _id, trace_id, payload in rows:
            grouped.setdefault(trace_id, []).append((payload["span"], payload["labels"]))
        traces: list[Trace] = []
        new: list[Trace] = []
        refused: list[Refusal] = []
        for trace_id, entries in grouped.items():
            stored = self.store.get_trace(trace_id)
            try:
                trace = parse_trace(merge_into(stored, trace_document(trace_id, entries)))
            except TraceFormatError as exc:  # e.g. over the span limit: quarantine, say why
                refused.append(Refusal(f"trace {trace_id}", exc.cause, str(exc)))
                continue
            traces.append(trace)
            if stored is None:
                new.append(trace)
        if new and self.redis is not None:
            # Before saving: a failed push leaves the rows for the next sweep. A job that
            # runs before the save below is retried by the worker (trace not found yet).
            # The marker makes a repeated sweep (the save failing) push nothing twice.
            self.redis.eval(
                _PUSH_ONCE,
                len(new),
                *(f"{self._prefix}:otlp:pushed:{x.trace_id}" for x in new),
                str(PUSH_MARK_S),
                self._intake_key,
                *(encode(x.trace_id, trace_signals(x), trace_labels(x)) for x in new),
            )
        saved = self._save(traces, refused)
        with self.store.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.id.in_([r[0] for r in rows])))
        record_refusals(self.redis, self._prefix, "otlp", refused)
        return saved

    def _save(self, traces: list[Trace], refused: list[Refusal]) -> list[str]:
        """Save the traces; one the database refuses is quarantined, the rest are saved."""
        try:
            self.store.save_traces(traces)
            return [x.trace_id for x in traces]
        except Exception as exc:
            if not is_input_fault(exc):
                raise  # the database is away: rows stay for the next sweep
        saved = []
        for trace in traces:
            try:
                self.store.save_traces([trace])
                saved.append(trace.trace_id)
            except Exception as exc:
                if not is_input_fault(exc):
                    raise
                reason = f"refused by the database: {str(exc).splitlines()[0][:300]}"
                refused.append(Refusal(f"trace {trace.trace_id}", "refused", reason))
        return saved


def start_sweeper(
    assembler: SpanAssembler, interval_s: float = 1.0
) -> tuple[threading.Thread, threading.Event]:
    """Run `complete()` every `interval_s` in a daemon thread; set the event to stop it."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval_s):
            try:
                while len(assembler.complete()) >= 500:  # a backlog: keep going
                    pass
            except Exception:
                log.exception("otlp: completing traces failed; retrying")

    thread = threading.Thread(target=run, name="evaluator-otlp-sweeper", daemon=True)
    thread.start()
    return thread, stop
