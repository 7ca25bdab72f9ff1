"""The intake wire format, shared by the app-side enqueuer and the worker's drain (pure).

An entry of the intake list is the bare trace ID, or the ID, a unit separator (0x1F) and a
compact JSON object of signals (error, cost, latency, feedback: "e", "c", "l", "f") for the
tail rules and stratum labels (feature, tenant, prompt version: "ft", "tn", "pv") for a
budgeted allocation. Readers ignore keys they do not know, so old and new entries mix freely.

Anything else in the list (bytes that are not UTF-8, an ID that fails `check_trace_id`,
signals that are not a JSON object) is refused by `decode_entry` with a WireError, and the
drain quarantines it: bytes are never repaired into an ID (a U+FFFD in place of a bad byte
would name a trace nobody sent).
"""

from __future__ import annotations

import json

from evaluator.errors import WireError
from evaluator.sampling import Labels, Signals

SEPARATOR = "\x1f"
MAX_ID_LENGTH = 256


def check_trace_id(trace_id: object) -> str | None:
    """Why `trace_id` cannot be enqueued, or None when it is fine."""
    if not isinstance(trace_id, str):
        return f"trace_id must be a str, got {type(trace_id).__name__}"
    if not trace_id or len(trace_id) > MAX_ID_LENGTH:
        return f"trace_id must be 1..{MAX_ID_LENGTH} characters, got {len(trace_id)}"
    if not trace_id.isprintable() or trace_id != trace_id.strip():
        return "trace_id must be printable with no surrounding whitespace"
    return None


def encode(trace_id: str, signals: Signals | None = None, labels: Labels | None = None) -> str:
    wire: dict[str, object] = dict(signals.to_wire()) if signals is not None else {}
    if labels:
        wire.update(labels.to_wire())
    if not wire:
        return trace_id
    return trace_id + SEPARATOR + json.dumps(wire, separators=(",", ":"))


def bare_id(entry: bytes) -> str | None:
    """The trace ID when the entry is a bare, valid one (the drain's hot path), else None."""
    try:
        trace_id = entry.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return trace_id if check_trace_id(trace_id) is None else None


def _text(entry: bytes | str) -> str:
    if isinstance(entry, str):
        return entry
    try:
        return entry.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"entry is not UTF-8 (byte {exc.start}: {exc.reason})") from None


def decode(entry: bytes | str) -> tuple[str, Signals | None]:
    trace_id, signals, _ = decode_entry(entry)
    return trace_id, signals


def decode_entry(entry: bytes | str) -> tuple[str, Signals | None, Labels | None]:
    """The trace ID, its signals (None when the entry is the bare ID) and labels (None: none)."""
    trace_id, sep, tail = _text(entry).partition(SEPARATOR)
    problem = check_trace_id(trace_id)
    if problem:
        raise WireError(problem)
    if not sep:
        return trace_id, None, None
    try:
        data = json.loads(tail)
    except json.JSONDecodeError as exc:
        raise WireError(f"signals of {trace_id!r} are not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise WireError(f"signals of {trace_id!r} must be a JSON object")
    labels = Labels.from_wire(data)
    return trace_id, Signals.from_wire(data), labels or None
