"""Human feedback carried on OTLP spans → feedback rows (pure: builds rows, writes nothing).

An app that already exports spans can send a user's verdict the same way, on the span it
rates (or on a small span of its own in the same trace). Attributes, under our namespace:

    evaluator.feedback.value    "up" | "down" | bool | number in [0, 1] (1 = good)
    evaluator.feedback.label    a verdict: pass/fail, faithful/hallucinated, ...
    evaluator.feedback.note     free text: a note or correction (<= 10,000 characters);
                                `evaluator.feedback.comment` is accepted as its other name
    evaluator.feedback.source   who said it (default "otlp")
    evaluator.feedback.rubric   the rubric the verdict is about (optional)
    evaluator.feedback.kind     thumbs | score | label | correction (optional)
    evaluator.feedback.id       the client's id: a re-sent span writes once (optional)

The plain `feedback` attribute (the tail-rule signal, negative = bad) on a span also
becomes a thumbs row: below 0 down, above 0 up; 0 says nothing. The rows are built by
`evaluator.sources.feedback.feedback_row` — the same rules as POST /api/feedback and
`evaluator feedback import` — and a span whose feedback is refused is refused whole, with
the attribute and reason in the receiver's partial_success.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from evaluator.sources.feedback import FeedbackValueError, feedback_row
from evaluator.sources.otlp.decode import OtlpSpan
from evaluator.traces.validate import Problem

PREFIX = "evaluator.feedback."
# attribute suffix → feedback_row keyword
FIELDS = {
    "value": "value",
    "label": "label",
    "note": "note",
    "comment": "comment",  # note's other name: feedback_row takes either (both must agree)
    "source": "source",
    "rubric": "rubric",
    "kind": "kind",
    "id": "id",
}
LEGACY_SIGNAL = "feedback"


def _legacy(value: Any) -> dict[str, Any]:
    """The tail-rule signal as a thumbs item; {} when it says nothing or is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
        return {}
    return {"value": "up" if value > 0 else "down", "kind": "thumbs"}


def span_feedback(span: OtlpSpan) -> dict[str, Any] | Problem | None:
    """The feedback row this span carries, the Problem that refuses the span, or None."""
    attrs = span.attributes
    item = {key: attrs[PREFIX + name] for name, key in FIELDS.items() if PREFIX + name in attrs}
    if not item:
        item = _legacy(attrs.get(LEGACY_SIGNAL))
        if not item:
            return None
    item.setdefault("source", "otlp")
    when = datetime.fromtimestamp(span.end_ns / 1e9, UTC) if span.end_ns > 0 else None
    try:
        return feedback_row(trace_id=span.trace_id, span_id=span.span_id, created_at=when, **item)
    except (ValueError, TypeError) as exc:
        cause = exc.cause if isinstance(exc, FeedbackValueError) else "format"
        return Problem(PREFIX.rstrip("."), str(exc), cause)
