"""Presentation of eval records: the stable JSON shape and a terminal table (pure)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from evaluator.errors import InputError
from evaluator.store.models import EvalRecord

# The --json shape is a contract with scripts: add keys, never rename or remove them.
JSON_FIELDS = (
    "trace_id",
    "span_id",
    "rubric",
    "rubric_version",
    "scorer",
    "method",
    "status",
    "score",
    "label",
    "passed",
    "explanation",
    "details",
    "judge_model",
    "judge_calls",
    "judge_input_tokens",
    "judge_output_tokens",
    "judge_cost_usd",
    "latency_ms",
    "prompt_version",
    "model",
    "feature",
    "tenant",
    "epoch",
    "provenance",
    # The weight trends give the record (1/p, Horvitz-Thompson): shown so they can be checked.
    "inclusion_probability",
)


def record_to_json(record: EvalRecord) -> dict[str, Any]:
    out = {name: getattr(record, name) for name in JSON_FIELDS}
    out["id"] = str(record.id)
    out["created_at"] = record.created_at.isoformat()
    # When the trace happened: trends bucket by it, not by created_at.
    out["trace_at"] = record.trace_at.isoformat() if record.trace_at is not None else None
    return out


def _cell(value: Any, width: int | None) -> str:
    text = "-" if value is None else str(value)
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


# IDs are never shortened (a cut 32-hex trace ID cannot be pasted back); only up to this
# width does the column grow, past it --wide is needed for the longest ones.
_ID_WIDTH = 64


def records_table(records: Sequence[EvalRecord], *, wide: bool = False) -> str:
    tw = max([5, *(len(r.trace_id) for r in records)])
    tw = tw if wide else min(tw, _ID_WIDTH)
    rw = max([6, *(len(r.rubric) for r in records)])
    header = (
        f"{'trace':<{tw}} {'rubric':<{rw}} {'status':<8} {'score':>5} {'pass':<5} "
        f"{'method':<9} explanation"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        score = "-" if r.score is None else f"{r.score:.2f}"
        passed = "-" if r.passed is None else ("yes" if r.passed else "no")
        why = _cell(r.explanation.replace("\n", " "), None if wide else 60)
        lines.append(
            f"{_cell(r.trace_id, None if wide else _ID_WIDTH):<{tw}} {r.rubric:<{rw}} "
            f"{r.status:<8} {score:>5} {passed:<5} {_cell(r.method, None if wide else 9):<9} {why}"
        )
    return "\n".join(lines)


def encode_cursor(record: EvalRecord) -> str:
    """An opaque cursor for the page after `record` (its created_at and id)."""
    raw = f"{record.created_at.isoformat()}|{record.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, rid = raw.split("|")
        return datetime.fromisoformat(at), str(uuid.UUID(rid))
    except ValueError:
        raise InputError(
            f"--after {cursor!r} is not a cursor; pass the one a previous page printed"
        ) from None
