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

    assembler = SpanAssembler(store, redis.Redis.from_url(url), key_prefix="evaluator")
    status, body, ctype = handle_otlp_traces(body, ctype, encoding, assembler=assembler)
    assembler.complete()      # from a sweeper thread (`start_sweeper`) or a cron job
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import and_, case, delete, func, or_
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from evaluator.intake.enqueue import intake_key
from evaluator.intake.sampling import trace_signals
from evaluator.intake.wire import encode
from evaluator.sources.otlp.decode import JSON_TYPE, OtlpConfig, OtlpError, OtlpSpan, decode_request
from evaluator.sources.otlp.genai import normalize_genai
from evaluator.store.models import PendingSpan
from evaluator.store.store import Store
from evaluator.traces.model import Trace, TraceFormatError, parse_trace

log = logging.getLogger("evaluator.sources.otlp.decode")
_STATUS = {0: "unset", 1: "ok", 2: "error"}
PROTOBUF_RESPONSE_TYPE = "application/x-protobuf"


# --- mapping (pure) ------------------------------------------------------------------------


def _iso(ns: int) -> str | None:
    if ns <= 0:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def span_labels(span: OtlpSpan, config: OtlpConfig) -> dict[str, Any]:
    """Trace-level labels this span carries (its resource first, then its own attributes)."""
    labels: dict[str, Any] = {}
    wanted = {config.prompt_version_attribute: "prompt.version"}
    wanted |= {k: k for k in config.label_attributes}
    for source in (span.resource, span.attributes):
        for attr, label in wanted.items():
            value = source.get(attr)
            if value is not None and not isinstance(value, list | dict):
                labels[label] = value
    cost = span.attributes.get("gen_ai.usage.cost")  # OpenLIT's per-call cost
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        labels["gen_ai.usage.cost"] = float(cost)
    return labels


def span_document(span: OtlpSpan) -> dict[str, Any]:
    """One span in the trace format, with its GenAI attributes normalised."""
    attributes = normalize_genai(span.attributes, span.events)
    if span.status_message and span.status_code == 2:
        attributes.setdefault("error.message", span.status_message)
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "status": _STATUS.get(span.status_code, "unset"),
        "start_time": _iso(span.start_ns),
        "end_time": _iso(span.end_ns),
        "attributes": attributes,
    }


def trace_document(
    trace_id: str, entries: list[tuple[dict[str, Any], dict[str, Any]]]
) -> dict[str, Any]:
    """Join (span document, labels) pairs of one trace into a trace document.

    Spans are ordered by start time (the evaluated span is the last model call); the root
    span's labels override its children's; OpenLIT-style per-call costs add up to
    `cost_usd` unless the app set `cost_usd` itself.
    """
    ordered = sorted(entries, key=lambda e: (e[0].get("start_time") or "", e[0]["span_id"]))
    attributes: dict[str, Any] = {}
    cost = 0.0
    for _doc, labels in sorted(ordered, key=lambda e: e[0].get("parent_span_id") is None):
        cost += labels.get("gen_ai.usage.cost", 0.0)
        attributes.update({k: v for k, v in labels.items() if k != "gen_ai.usage.cost"})
    if cost and "cost_usd" not in attributes:
        attributes["cost_usd"] = round(cost, 8)
    return {"trace_id": trace_id, "attributes": attributes, "spans": [e[0] for e in ordered]}


def merge_into(stored: Trace | None, document: dict[str, Any]) -> dict[str, Any]:
    """Late spans join the stored trace: union by span_id (newer wins), labels overlaid."""
    if stored is None:
        return document
    old = stored.model_dump(mode="json")
    new_ids = {s["span_id"] for s in document["spans"]}
    spans = [s for s in old["spans"] if s["span_id"] not in new_ids] + document["spans"]
    spans.sort(key=lambda s: (s.get("start_time") or "", s["span_id"]))
    return {**document, "attributes": old["attributes"] | document["attributes"], "spans": spans}


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
    ) -> None:
        self.store = store
        self.redis = redis_client
        self.config = config or OtlpConfig()
        self.grace_s = grace_s
        self.orphan_s = orphan_s
        self._intake_key = intake_key(key_prefix)
        PendingSpan.__table__.create(store.engine, checkfirst=True)  # type: ignore[attr-defined]

    def add(self, spans: list[OtlpSpan], *, now: float | None = None) -> int:
        """Buffer spans (a re-sent span replaces its earlier copy); returns the count."""
        if not spans:
            return 0
        received = time.time() if now is None else now
        rows = [
            {
                "trace_id": s.trace_id,
                "span_id": s.span_id,
                "is_root": s.is_root,
                "received_s": received,
                "payload": {"span": span_document(s), "labels": span_labels(s, self.config)},
            }
            for s in spans
        ]
        table = PendingSpan.__table__  # type: ignore[attr-defined]
        insert = pg_insert if self.store.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["trace_id", "span_id"],
            set_={c: stmt.excluded[c] for c in ("is_root", "received_s", "payload")},
        )
        with self.store.engine.begin() as conn:
            conn.execute(stmt, rows)
        return len(rows)

    def pending_traces(self) -> int:
        table = PendingSpan.__table__  # type: ignore[attr-defined]
        with self.store.engine.connect() as conn:
            query = sa_select(func.count(func.distinct(table.c.trace_id)))
            return int(conn.execute(query).scalar_one())

    def _due(self, now: float, limit: int) -> list[str]:
        t = PendingSpan.__table__  # type: ignore[attr-defined]
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
        t = PendingSpan.__table__  # type: ignore[attr-defined]
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
        for trace_id, entries in grouped.items():
            stored = self.store.get_trace(trace_id)
            try:
                trace = parse_trace(merge_into(stored, trace_document(trace_id, entries)))
            except TraceFormatError as exc:  # e.g. over the span limit: drop, say why
                log.warning("otlp: trace %s dropped: %s", trace_id, exc)
                continue
            traces.append(trace)
            if stored is None:
                new.append(trace)
        if new and self.redis is not None:
            # Before saving: a failed push leaves the rows for the next sweep. A job that
            # runs before the save below is retried by the worker (trace not found yet).
            self.redis.rpush(self._intake_key, *(encode(x.trace_id, trace_signals(x)) for x in new))
        if traces:
            self.store.save_traces(traces)
        with self.store.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.id.in_([r[0] for r in rows])))
        return [x.trace_id for x in traces]


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


# --- the HTTP handler ---------------------------------------------------------------------------


def _rpc_status(code: int, message: str) -> bytes:
    """google.rpc.Status {code = 1, message = 2} in protobuf wire format (two fields)."""
    text = message.encode()
    out = bytearray([0x08]) + _varint(code) + bytearray([0x12]) + _varint(len(text))
    return bytes(out + text)


def _varint(n: int) -> bytearray:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return out


def handle_otlp_traces(
    body: bytes,
    content_type: str,
    content_encoding: str | None,
    *,
    assembler: SpanAssembler,
) -> tuple[int, bytes, str]:
    """POST /v1/traces: (HTTP status, response body, response content type).

    Success is 200 with an empty ExportTraceServiceResponse in the request's encoding;
    errors carry a google.rpc.Status whose message names what is wrong (400 bad body,
    413 too large, 415 unsupported type/encoding, 503 database unavailable: retry).
    """
    is_json = content_type.split(";", 1)[0].strip().lower() == JSON_TYPE
    reply_type = JSON_TYPE if is_json else PROTOBUF_RESPONSE_TYPE

    def error(status: int, message: str) -> tuple[int, bytes, str]:
        code = 14 if status == 503 else 3  # UNAVAILABLE (retryable) / INVALID_ARGUMENT
        if is_json:
            return status, json.dumps({"code": code, "message": message}).encode(), reply_type
        return status, _rpc_status(code, message), reply_type

    try:
        spans = decode_request(
            body, content_type, content_encoding, max_bytes=assembler.config.max_body_bytes
        )
    except OtlpError as exc:
        return error(exc.status, str(exc))
    try:
        assembler.add(spans)
    except SQLAlchemyError as exc:
        log.exception("otlp: buffering %d spans failed", len(spans))
        return error(503, f"span buffer unavailable: {type(exc).__name__}")
    return 200, (b"{}" if is_json else b""), reply_type
