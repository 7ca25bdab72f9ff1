"""What a trace or span must satisfy before anything stores it (pure: no I/O).

Every entry point (`evaluator ingest`, `ingest_traces`, the OTLP receiver, the OTLP
completion sweep, Langfuse) runs the same checks, so one hostile item is refused with its
field and reason and the items beside it are stored. The checks exist because the
databases refuse such values, and a refusal inside a batch insert used to fail the batch:

- NaN and ±Infinity anywhere: JSON has no such numbers; PostgreSQL's `json` rejects them.
- NUL (U+0000): PostgreSQL text cannot hold it. Lone surrogates (U+D800..U+DFFF unpaired):
  not encodable as UTF-8, so neither SQLite nor PostgreSQL can store them. Both are
  *refused*, not sanitised, on every database alike: silently changing an app's text
  would make a stored trace differ from the one the app sent, and a judge score would
  then be about text nobody wrote.
- Nesting deeper than `MAX_DEPTH` (64): real GenAI payloads nest < 15 levels; deeper
  documents exhaust recursion in serialisers and in PostgreSQL's JSON parser.
- Labels and IDs longer than their column (`MAX_LABEL_CHARS`, see
  evaluator/store/models.py: VARCHAR(256)); tests pin the two together.

    >>> json_problem({"a": [1.0, float("nan")]}, "attributes")
    Problem(field='attributes.a.1', reason='NaN is not a JSON number', cause='nan_inf')
    >>> json_problem({"ok": "text"}) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64
MAX_LABEL_CHARS = 256  # traces.prompt_version/model/feature/tenant, trace_id, span_id
LABELS = ("prompt.version", "feature", "tenant")  # the trace attributes stored as columns
MODEL_ATTRIBUTES = ("gen_ai.response.model", "gen_ai.request.model")
MAX_UNIX_NANOS = 2**64 - 1  # OTLP fixed64; anything outside is not a time
# Why an item was refused; a small closed set so it can label a metric.
_PLAIN = frozenset({int, bool, type(None)})
CAUSES = ("nan_inf", "nul", "surrogate", "depth", "oversize", "timestamp", "format", "refused")


@dataclass(frozen=True, slots=True)
class Problem:
    field: str
    reason: str
    cause: str = "format"

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


def text_problem(value: str) -> tuple[str, str] | None:
    """(reason, cause) when a string cannot be stored as it is, else None."""
    if "\x00" in value:
        return "contains a NUL character (U+0000)", "nul"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"contains a lone surrogate at index {exc.start}", "surrogate"
    return None


def _path(node: tuple[Any, ...] | None) -> str:
    parts: list[str] = []
    while node is not None:
        node, key = node
        parts.append(str(key))
    return ".".join(reversed(parts))


def json_problem(value: Any, where: str = "") -> Problem | None:
    """The first value in a decoded JSON tree that cannot be stored, or None.

    Iterative (a hostile document must not exhaust the stack); the path is built only
    for the problem found, from parent links.
    """
    root = None if not where else (None, where)
    stack: list[tuple[Any, int, tuple[Any, ...] | None]] = [(value, 1, root)]
    while stack:
        item, depth, path = stack.pop()
        kind = type(item)
        if kind in _PLAIN:  # the common leaves, by exact type: isinstance on ABCs is slow
            continue
        if kind is str or isinstance(item, str):
            found = text_problem(item)
            if found:
                return Problem(_path(path) or "(value)", found[0], found[1])
        elif kind is float or isinstance(item, float):
            if not math.isfinite(item):
                what = "NaN" if math.isnan(item) else "Infinity"
                return Problem(_path(path) or "(value)", f"{what} is not a JSON number", "nan_inf")
        elif kind is dict or kind is list or isinstance(item, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                return Problem(
                    _path(path) or "(value)", f"nested deeper than {MAX_DEPTH} levels", "depth"
                )
            if isinstance(item, Mapping):
                for key, child in item.items():
                    found = text_problem(key) if isinstance(key, str) else None
                    if found:
                        return Problem(f"{_path(path)}[key]", found[0], found[1])
                    stack.append((child, depth + 1, (path, key)))
            else:
                stack.extend((child, depth + 1, (path, i)) for i, child in enumerate(item))
    return None


def label_problem(name: str, value: Any) -> Problem | None:
    """A label stored in a VARCHAR column: within `MAX_LABEL_CHARS` once made a string."""
    if value is None:
        return None
    text = str(value)
    if len(text) > MAX_LABEL_CHARS:
        return Problem(name, f"{len(text)} characters; the limit is {MAX_LABEL_CHARS}", "oversize")
    return None


def labels_problem(attributes: Mapping[str, Any], where: str = "attributes") -> Problem | None:
    for name in LABELS:
        found = label_problem(f"{where}.{name}", attributes.get(name))
        if found:
            return found
    return None


def models_problem(attributes: Mapping[str, Any], where: str) -> Problem | None:
    for name in MODEL_ATTRIBUTES:
        found = label_problem(f"{where}.{name}", attributes.get(name))
        if found:
            return found
    return None


def trace_document_problem(document: Mapping[str, Any]) -> Problem | None:
    """Checks on a decoded trace document before the schema is applied."""
    found = json_problem(document)
    if found:
        return found
    attributes = document.get("attributes")
    if isinstance(attributes, Mapping):
        found = labels_problem(attributes)
        if found:
            return found
    spans = document.get("spans")
    if isinstance(spans, list):
        for i, span in enumerate(spans):
            attrs = span.get("attributes") if isinstance(span, Mapping) else None
            if isinstance(attrs, Mapping):
                found = models_problem(attrs, f"spans.{i}.attributes")
                if found:
                    return found
    return None


def span_times_problem(start_ns: int, end_ns: int, where: str = "span") -> Problem | None:
    """OTLP times are unsigned nanoseconds since the epoch, and a span ends after it starts."""
    for name, ns in (("start_time_unix_nano", start_ns), ("end_time_unix_nano", end_ns)):
        if not 0 <= ns <= MAX_UNIX_NANOS:
            return Problem(f"{where}.{name}", f"{ns} is not a time", "timestamp")
    if start_ns and end_ns and end_ns < start_ns:
        return Problem(
            f"{where}.end_time_unix_nano",
            f"ends {start_ns - end_ns} ns before it starts",
            "timestamp",
        )
    return None
