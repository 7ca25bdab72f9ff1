"""Human feedback as a signal: thumbs, scores, corrections and labels per trace (and span).

Four doors, one writer (`record_feedback` = `feedback_row` + `write_feedback`):

    record_feedback(store, trace_id="t1", value="down", note="wrong refund date")
    import_feedback(store, Path("labels.jsonl"))      # `evaluator feedback import FILE`
    handle_feedback(store, body)                      # POST /api/feedback -> (status, json)
    # OTLP spans with evaluator.feedback.* attributes: evaluator.sources.otlp.feedback

Negative feedback on a stored trace feeds the tail rules (evaluator.sources.feedback_tail):
pass `intake=FeedbackIntake(...)` and such a trace is enqueued to be evaluated; without it
only the trace's stored signal turns negative.

Lines / bodies are the labelled-JSONL format ({"trace", "label", "human_score", "rubric",
"note"}: the trace is stored too when it is not stored yet) or the compact form
{"trace_id", "value" | "label", "span_id"?, "rubric"?, "kind"?, "note"?, "id"?}. The free
text is `note` on every door; `comment` is accepted as its other name (OTLP spans used it).

Identity: a piece of feedback is (trace, rubric, source, the client's `id`), or, without an
`id`, a hash of its content. An identical re-import or a retried POST writes nothing and
enqueues nothing; the same identity with a changed value, label or note updates its row,
and if that turns the trace negative, the trace is enqueued once (evaluator.sources.
feedback_tail: a trace already negative is never enqueued again).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from evaluator.sources.feedback_tail import (
    FeedbackIntake,
    TailOutcome,
    feed_tail_rules,
    is_negative,
)
from evaluator.sources.labelled import parse_item, parse_label
from evaluator.store.models import table_of, utcnow
from evaluator.store.store import Store
from evaluator.store.trust_models import FeedbackRecord
from evaluator.traces.validate import text_problem

KINDS = ("thumbs", "score", "label", "correction")
MAX_ITEMS_PER_REQUEST = 1000
MAX_NOTE_CHARS = 10_000  # a comment or correction; longer is refused, not cut
_THUMBS = {"up": 1.0, "down": 0.0, "👍": 1.0, "👎": 0.0}


def _value_and_kind(value: Any, label: Any, kind: str | None) -> tuple[float | None, str]:
    if isinstance(value, bool):
        return (1.0 if value else 0.0), kind or "thumbs"
    if isinstance(value, str):
        if value.strip().lower() not in _THUMBS:
            raise ValueError(f"value {value!r} is not 'up', 'down' or a number in [0, 1]")
        return _THUMBS[value.strip().lower()], kind or "thumbs"
    if isinstance(value, int | float):
        if kind == "thumbs" and value in (-1, 1):
            return (1.0 if value > 0 else 0.0), kind
        if not 0 <= value <= 1:
            raise ValueError(f"value {value!r} is outside [0, 1] (1 = good)")
        return float(value), kind or "score"
    if value is not None:
        raise ValueError(f"value {value!r} is not a number, a boolean, 'up' or 'down'")
    if label is not None:
        return (1.0 if parse_label(label) else 0.0), kind or "label"
    return None, kind or "correction"


def _label_text(label: Any) -> str | None:
    if label is None:
        return None
    parse_label(label)  # refuses what it cannot read
    if isinstance(label, str):
        return label.strip().lower()
    return "pass" if bool(label) else "fail"


class FeedbackValueError(ValueError):
    """A field no database can store; `cause` is one of evaluator.traces.validate.CAUSES."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


def _text(value: Any, name: str, limit: int) -> str:
    """A stored text field: refused (never trimmed) when too long or not storable."""
    text = str(value)
    if len(text) > limit:
        raise FeedbackValueError(f"{name} is {len(text)} characters; at most {limit}", "oversize")
    problem = text_problem(text)
    if problem is not None:
        raise FeedbackValueError(f"{name} {problem[0]}", problem[1])
    return text


def feedback_id(trace_id: str, rubric: str | None, source: str, external_id: str) -> str:
    """The stored id of feedback the client gave an id: unique per trace, rubric and source,
    so two sources (or two import files) numbering their items 1, 2, 3 never collide."""
    blob = json.dumps([trace_id, rubric, source, external_id])
    return "x:" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def feedback_row(
    *,
    trace_id: str,
    value: Any = None,
    label: Any = None,
    kind: str | None = None,
    span_id: str = "",
    rubric: str | None = None,
    note: str = "",
    source: str = "api",
    id: str | None = None,
    created_at: datetime | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """The feedback table row for one item (pure). ValueError names what is wrong.

    Every door (POST, import, OTLP spans, the Python API) builds its rows here, so one
    set of rules decides what a piece of feedback may be. `comment` is another name for
    `note` (both given must agree). The row's `id` is its identity: the client's `id`
    scoped by trace, rubric and source ("x:" + hash), else a hash of the content ("h:").
    """
    if comment is not None:
        if note and note != comment:
            raise ValueError("note and comment are one field (the free text): give one")
        note = comment
    if not isinstance(trace_id, str) or not trace_id or len(trace_id) > 256:
        raise ValueError("trace_id must be a non-empty string of at most 256 characters")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FeedbackValueError(f"value {value!r} is not a finite number", "nan_inf")
    number, kind = _value_and_kind(value, label, kind)
    label_text = _label_text(label)
    note = _text(note or "", "note", MAX_NOTE_CHARS)
    source = _text(str(source)[:128], "source", 128)  # a long import file name is cut
    if rubric is not None:
        rubric = _text(rubric, "rubric", 128)
    if number is None and label_text is None and not note:
        raise ValueError("feedback needs a value, a label or a note")
    if id is None:
        blob = json.dumps([trace_id, span_id, rubric, kind, number, label_text, note, source])
        key = "h:" + hashlib.sha256(blob.encode()).hexdigest()[:32]
    else:
        key = feedback_id(trace_id, rubric, source, _text(str(id), "id", 256))
    return {
        "id": key,
        "trace_id": _text(trace_id, "trace_id", 256),
        "span_id": _text(span_id or "", "span_id", 256),
        "rubric": rubric,
        "kind": kind,
        "value": number,
        "label": label_text,
        "note": note,
        "source": source,
        "created_at": created_at or utcnow(),
    }


# What an update of an identity may change; trace, rubric and source are the identity.
_CONTENT = ("span_id", "kind", "value", "label", "note")
INSERTED, UPDATED, SAME = "inserted", "updated", "same"


def write_feedback(store: Store, row: dict[str, Any]) -> str:
    """Write one row from `feedback_row` by its identity (`id`): INSERTED when new, SAME when
    an identical row is stored (nothing written), UPDATED when its content changed."""
    table = table_of(FeedbackRecord)
    insert = pg_insert if store.engine.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table).values(row).on_conflict_do_nothing(index_elements=["id"])
    with store.engine.begin() as conn:
        if conn.execute(stmt.returning(table.c.id)).first() is not None:
            return INSERTED
        stored = conn.execute(
            select(*(table.c[name] for name in _CONTENT)).where(table.c.id == row["id"])
        ).first()
        if stored is not None and tuple(stored) == tuple(row[n] for n in _CONTENT):
            return SAME
        changed = {name: row[name] for name in (*_CONTENT, "created_at")}
        conn.execute(update(table).where(table.c.id == row["id"]).values(**changed))
        return UPDATED


def record_feedback(
    store: Store, *, intake: FeedbackIntake | None = None, **item: Any
) -> tuple[str, bool]:
    """Store one piece of feedback; returns (id, written: new or changed). ValueError on a
    bad item.

    Keyword arguments are those of `feedback_row` (trace_id, value, label, kind, span_id,
    rubric, note or comment, source, id, created_at). A negative row feeds the tail rules
    (`feed_tail_rules`; enqueued through `intake` when given).
    """
    row = feedback_row(**item)
    outcome = write_feedback(store, row)
    if is_negative(row):  # re-sent too: a trace already negative is not enqueued again,
        feed_tail_rules(store, [row["trace_id"]], intake)  # and a failed push is retried
    return row["id"], outcome != SAME


def _write(store: Store, report: FeedbackReport, **item: Any) -> tuple[str, str]:
    """One row written; a negative one (new, changed or re-sent) is noted for
    `FeedbackReport.feed_tail_rules`."""
    row = feedback_row(**item)
    outcome = write_feedback(store, row)
    if is_negative(row):  # re-sent too (see record_feedback)
        report.negative.append(row["trace_id"])
    return row["id"], outcome


@dataclass
class FeedbackReport:
    inserted: int = 0
    duplicates: int = 0  # identical to a stored row: nothing written
    updated: int = 0  # the same identity with a changed value, label or note
    traces: int = 0
    ids: list[str] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)  # traces of negative rows (new or re-sent)
    tail: TailOutcome = field(default_factory=TailOutcome)

    def feed_tail_rules(self, store: Store, intake: FeedbackIntake | None) -> None:
        """Once per request or file: one UPDATE and at most one RPUSH for all its rows."""
        self.tail = feed_tail_rules(store, self.negative, intake)

    def to_json(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "updated": self.updated,
            "traces": self.traces,
            "ids": self.ids,
            "errors": [{"item": n, "error": e} for n, e in self.errors],
            "tail": self.tail.to_json(),
        }


def record_item(store: Store, doc: Any, source: str, report: FeedbackReport, number: int) -> None:
    """One labelled-JSONL or compact item into `report` (its error, if any, too)."""
    try:
        if not isinstance(doc, dict):
            raise ValueError("an item must be a JSON object")
        if "trace" in doc:
            note = _note(doc)
            line = parse_item({k: v for k, v in doc.items() if k not in ("note", "comment")})
            trace = line.trace
            # The trace is stored once: re-saving it would reset the feedback signal a
            # previous import set, and the same file imported again would enqueue again.
            if store.get_trace(trace.trace_id) is None:
                report.traces += store.save_traces([trace]).inserted
            value = line.human_score
            result = _write(
                store,
                report,
                trace_id=trace.trace_id,
                label=doc.get("label"),
                value=value,
                kind="label",
                rubric=line.rubric,
                note=note,
                source=source,
                id=doc.get("id"),
            )
        else:
            allowed = {"trace_id", "value", "label", "kind", "span_id", "rubric", "note", "id"}
            unknown = set(doc) - allowed - {"source", "created_at", "comment"}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
            args = {k: doc[k] for k in allowed if k in doc}
            args["note"] = _note(doc)
            result = _write(store, report, source=str(doc.get("source") or source), **args)
    except (ValueError, TypeError) as exc:
        report.errors.append((number, str(exc)))
        return
    report.ids.append(result[0])
    if result[1] == INSERTED:
        report.inserted += 1
    elif result[1] == UPDATED:
        report.updated += 1
    else:
        report.duplicates += 1


def _note(doc: dict[str, Any]) -> str:
    """The free text of an item: `note`, or its other name `comment` (both must agree)."""
    note, comment = doc.get("note"), doc.get("comment")
    if note is not None and comment is not None and note != comment:
        raise ValueError("note and comment are one field (the free text): give one")
    text = note if note is not None else comment
    if text is not None and not isinstance(text, str):
        raise ValueError("note must be a string")
    return text or ""


def import_feedback(
    store: Store, path: Path, *, source: str | None = None, intake: FeedbackIntake | None = None
) -> FeedbackReport:
    """`evaluator feedback import FILE`; new negative rows feed the tail rules at the end."""
    report = FeedbackReport()
    src = source or f"import:{path.name}"
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as exc:
                report.errors.append((number, f"not JSON: {exc.msg}"))
                continue
            record_item(store, doc, src, report, number)
    report.feed_tail_rules(store, intake)
    return report


def handle_feedback(
    store: Store, body: bytes, intake: FeedbackIntake | None = None
) -> tuple[int, dict[str, Any]]:
    """POST /api/feedback: one item or a list of items. 200 when all were written (or were
    already there), 400 with every item's error otherwise (the valid ones are kept). New
    negative rows on stored traces feed the tail rules (`tail` in the answer)."""
    try:
        doc = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return 400, {"error": f"body is not JSON: {exc}"}
    items = doc if isinstance(doc, list) else [doc]
    if not items or len(items) > MAX_ITEMS_PER_REQUEST:
        return 400, {"error": f"send 1 to {MAX_ITEMS_PER_REQUEST} feedback items"}
    report = FeedbackReport()
    for number, item in enumerate(items):
        record_item(store, item, "api", report, number)
    report.feed_tail_rules(store, intake)
    return (400 if report.errors else 200), report.to_json()
