"""Turn a stored Trace into the EvalCase a scorer sees (pure)."""

from __future__ import annotations

import json
from typing import Any

from evaluator.errors import CaseBuildError
from evaluator.traces.model import Span, Trace
from judges.types import Context, EvalCase, ToolCall

_GENERATION_PARAMS = {
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.max_tokens": "max_tokens",
}


def message_text(message: Any) -> str:
    """Text of one message in either the semconv `parts` form or the plain `content` form."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = message.get("parts")
    if isinstance(parts, list):
        texts = [
            p.get("content", "")
            for p in parts
            if isinstance(p, dict) and p.get("type", "text") == "text"
        ]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def _messages(span: Span, key: str) -> list[dict[str, Any]]:
    value = span.attributes.get(key)
    return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []


def _question(span: Span, trace: Trace) -> str:
    for message in reversed(_messages(span, "gen_ai.input.messages")):
        if message.get("role") == "user":
            return message_text(message)
    for retrieval in trace.retrieval_spans():
        query = retrieval.attributes.get("gen_ai.retrieval.query.text")
        if isinstance(query, str):
            return query
    return ""


def _contexts(trace: Trace) -> tuple[Context, ...]:
    contexts: list[Context] = []
    for span in trace.retrieval_spans():
        documents = span.attributes.get("gen_ai.retrieval.documents")
        if not isinstance(documents, list):
            continue
        for index, doc in enumerate(documents):
            if isinstance(doc, str):
                doc = {"content": doc}
            if not isinstance(doc, dict):
                continue
            text = doc.get("content", doc.get("text"))
            if isinstance(text, str) and text.strip():
                doc_id = str(doc.get("id", f"{span.span_id}#{index}"))
                contexts.append(Context(id=doc_id, text=text))
    return tuple(contexts)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _seconds(span: Span, attr: str) -> float | None:
    moment = getattr(span, attr)
    return moment.timestamp() if moment is not None else None


def tool_calls(trace: Trace) -> tuple[ToolCall, ...]:
    """The trace's `execute_tool` spans as calls, in start order (span order without times)."""
    spans = [s for s in trace.spans if s.operation == "execute_tool"]
    spans.sort(key=lambda s: s.start_time.timestamp() if s.start_time else float("-inf"))
    return tuple(
        ToolCall(
            name=_as_text(s.attributes.get("gen_ai.tool.name")) or s.name,
            arguments=_as_text(s.attributes.get("gen_ai.tool.call.arguments")),
            result=_as_text(s.attributes.get("gen_ai.tool.call.result")),
            error=s.status == "error" or "error.type" in s.attributes,
            start_s=_seconds(s, "start_time"),
            end_s=_seconds(s, "end_time"),
        )
        for s in spans
    )


def _tool_definitions(trace: Trace) -> tuple[dict[str, Any], ...]:
    for span in trace.spans:
        defs = span.attributes.get("gen_ai.tool.definitions")
        if isinstance(defs, str):
            try:
                defs = json.loads(defs)
            except ValueError:
                continue
        if isinstance(defs, list):
            return tuple(d for d in defs if isinstance(d, dict))
    return ()


def build_case(trace: Trace) -> EvalCase:
    """The case for the trace's generation span, or CaseBuildError saying what is missing."""
    span = trace.generation_span()
    if span is None:
        raise CaseBuildError(
            "no generation span: expected a span with gen_ai.operation.name 'chat' "
            "(or text_completion/generate_content) and gen_ai.output.messages"
        )
    outputs = _messages(span, "gen_ai.output.messages")
    answer = "\n".join(
        message_text(m) for m in outputs if m.get("role", "assistant") == "assistant"
    )
    samples = span.attributes.get("evaluator.samples")
    generation = {
        name: span.attributes[key]
        for key, name in _GENERATION_PARAMS.items()
        if key in span.attributes
    }
    labels = {
        key: value
        for key, value in {
            "prompt_version": trace.prompt_version,
            "model": trace.model,
            "feature": trace.feature,
            "tenant": trace.tenant,
        }.items()
        if value is not None
    }
    return EvalCase(
        trace_id=trace.trace_id,
        span_id=span.span_id,
        question=_question(span, trace),
        answer=answer,
        contexts=_contexts(trace),
        messages=tuple(_messages(span, "gen_ai.input.messages")),
        model=trace.model,
        generation=generation,
        samples=tuple(s for s in samples if isinstance(s, str))
        if isinstance(samples, list)
        else (),
        labels=labels,
        tool_calls=tool_calls(trace),
        tool_definitions=_tool_definitions(trace),
        answered_at_s=_seconds(span, "end_time"),
    )
