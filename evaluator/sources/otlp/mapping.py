"""OTLP spans → trace documents, and the checks a span passes before it is buffered (pure).

`span_payload` maps one span (its GenAI attributes normalised, its trace-level labels);
`screen_spans` refuses, span by span, what evaluator.traces.validate refuses in a trace
(NaN/Inf, NUL, lone surrogates, deep nesting, oversize labels) plus impossible times and
feedback attributes the feedback rules refuse;
`trace_document` / `merge_into` join buffered spans into one trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evaluator.sources.otlp.decode import OtlpConfig, OtlpSpan
from evaluator.sources.otlp.feedback import span_feedback
from evaluator.sources.otlp.genai import normalize_genai
from evaluator.sources.quarantine import Refusal
from evaluator.traces.model import Trace
from evaluator.traces.validate import (
    MAX_UNIX_NANOS,
    Problem,
    json_problem,
    labels_problem,
    models_problem,
    span_times_problem,
)

_STATUS = {0: "unset", 1: "ok", 2: "error"}


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


def span_payload(span: OtlpSpan, config: OtlpConfig) -> dict[str, Any]:
    """What the buffer keeps for one span: its trace-format document and its labels."""
    return {"span": span_document(span), "labels": span_labels(span, config)}


def span_problem(span: OtlpSpan, payload: dict[str, Any]) -> Problem | None:
    """Why a span cannot be buffered or stored, or None (the checks of parse_trace)."""
    return (
        span_times_problem(span.start_ns, span.end_ns)
        or json_problem(payload["span"], "span")
        or json_problem(payload["labels"], "labels")
        or labels_problem(payload["labels"], "labels")
        or models_problem(payload["span"]["attributes"], "span.attributes")
    )


@dataclass
class Screened:
    """`screen_spans`' verdict: spans to buffer, feedback rows they carry, refusals."""

    accepted: list[tuple[OtlpSpan, dict[str, Any]]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


def screen_spans(spans: list[OtlpSpan], config: OtlpConfig) -> Screened:
    """Split spans into (span, payload) pairs to buffer, the feedback rows they carry
    (evaluator.sources.otlp.feedback) and refusals naming span and field."""
    out = Screened()
    accepted, refused = out.accepted, out.refused
    for span in spans:
        item = f"span {span.trace_id}/{span.span_id}"
        if not (0 <= span.start_ns <= MAX_UNIX_NANOS and 0 <= span.end_ns <= MAX_UNIX_NANOS):
            problem = span_times_problem(span.start_ns, span.end_ns)  # before mapping times
            refused.append(Refusal(item, "timestamp", str(problem)))
            continue
        payload = span_payload(span, config)
        problem = span_problem(span, payload)
        feedback = span_feedback(span) if problem is None else None
        if isinstance(feedback, Problem):
            problem, feedback = feedback, None
        if problem is not None:
            refused.append(Refusal(item, problem.cause, str(problem)))
            continue
        accepted.append((span, payload))
        if feedback is not None:
            out.feedback.append(feedback)
    return out


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
