"""The trace format: JSON that follows the OpenTelemetry GenAI semantic conventions.

A trace is a list of spans. The spans the service reads are marked by `gen_ai.operation.name`:

- ``chat`` (or ``text_completion`` / ``generate_content``): a model call. Read from it:
  ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (semconv message objects with
  ``parts``, or the plain ``{"role", "content"}`` form), ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
  ``gen_ai.request.temperature`` / ``top_p`` / ``max_tokens``, and optionally
  ``evaluator.samples`` (extra answers to the same messages, for self-consistency).
- ``retrieval``: ``gen_ai.retrieval.documents`` = ``[{"id": str, "content": str}, ...]`` and
  ``gen_ai.retrieval.query.text``.
- ``execute_tool`` and ``invoke_agent`` are stored and kept in order; other names are kept too
  (unknown operations are data, not errors).

Trace-level ``attributes`` carry the app's labels: ``prompt.version``, ``feature``, ``tenant``,
``session.id``; ``feedback`` is the user's rating (negative = bad).
See README.md, "The trace format".
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evaluator.errors import TraceFormatError
from evaluator.traces.validate import MAX_LABEL_CHARS, trace_document_problem

MAX_TRACE_BYTES = 8 * 1024 * 1024
MAX_SPANS = 5_000
MAX_ID_LENGTH = MAX_LABEL_CHARS
GENERATION_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})


class Span(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    span_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    parent_span_id: str | None = Field(None, max_length=MAX_ID_LENGTH)
    name: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    status: Literal["ok", "error", "unset"] = "unset"
    attributes: dict[str, Any] = Field(default_factory=dict)

    @property
    def operation(self) -> str:
        op = self.attributes.get("gen_ai.operation.name", "")
        return op if isinstance(op, str) else ""

    @property
    def duration_ms(self) -> float | None:
        if self.start_time and self.end_time:
            return (self.end_time - self.start_time).total_seconds() * 1000
        return None


class Trace(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    trace_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    attributes: dict[str, Any] = Field(default_factory=dict)
    spans: list[Span] = Field(min_length=1, max_length=MAX_SPANS)

    @field_validator("trace_id")
    @classmethod
    def _printable_id(cls, v: str) -> str:
        if not v.isprintable() or v != v.strip():
            raise ValueError("must be printable with no surrounding whitespace")
        return v

    # --- labels -------------------------------------------------------------------------

    def label(self, key: str) -> str | None:
        value = self.attributes.get(key)
        return None if value is None else str(value)

    @property
    def prompt_version(self) -> str | None:
        return self.label("prompt.version")

    @property
    def feature(self) -> str | None:
        return self.label("feature")

    @property
    def tenant(self) -> str | None:
        return self.label("tenant")

    @property
    def model(self) -> str | None:
        span = self.generation_span()
        if span is None:
            return None
        attrs = span.attributes
        value = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
        return None if value is None else str(value)

    # --- facts for tail sampling --------------------------------------------------------

    @property
    def is_error(self) -> bool:
        return self.attributes.get("status") == "error" or any(
            s.status == "error" for s in self.spans
        )

    @property
    def latency_ms(self) -> float | None:
        starts = [s.start_time for s in self.spans if s.start_time]
        ends = [s.end_time for s in self.spans if s.end_time]
        if not starts or not ends:
            return None
        return (max(ends) - min(starts)).total_seconds() * 1000

    @property
    def feedback(self) -> float | None:
        value = self.attributes.get("feedback")
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    @property
    def cost_usd(self) -> float | None:
        value = self.attributes.get("cost_usd")
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    # --- spans ---------------------------------------------------------------------------

    def generation_span(self) -> Span | None:
        """The span whose answer is evaluated: the last model call that produced output."""
        for span in reversed(self.spans):
            if span.operation in GENERATION_OPERATIONS and span.attributes.get(
                "gen_ai.output.messages"
            ):
                return span
        return None

    def retrieval_spans(self) -> list[Span]:
        return [s for s in self.spans if s.operation == "retrieval"]


def parse_trace(document: Any) -> Trace:
    """Validate a decoded JSON object as a Trace, or raise TraceFormatError naming the field."""
    if not isinstance(document, dict):
        raise TraceFormatError(f"a trace must be a JSON object, got {type(document).__name__}")
    problem = trace_document_problem(document)  # before pydantic: depth, NaN, NUL, widths
    if problem is not None:
        raise TraceFormatError(str(problem), cause=problem.cause)
    try:
        trace = Trace.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(trace)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise TraceFormatError(f"{where}: {first['msg']}{more}") from None
    ids = [s.span_id for s in trace.spans]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise TraceFormatError(f"spans: span_id {dup!r} appears more than once")
    return trace


def parse_trace_json(line: str | bytes) -> Trace:
    """Parse one JSON text (a JSONL line) into a Trace."""
    if len(line) > MAX_TRACE_BYTES:
        raise TraceFormatError(f"trace is {len(line)} bytes; the limit is {MAX_TRACE_BYTES}")
    try:
        document = json.loads(line)
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise TraceFormatError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise TraceFormatError("JSON nested too deeply", cause="depth") from None
    return parse_trace(document)
