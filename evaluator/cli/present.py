"""Presentation of eval records: the stable JSON shape and a terminal table (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
)


def record_to_json(record: EvalRecord) -> dict[str, Any]:
    out = {name: getattr(record, name) for name in JSON_FIELDS}
    out["id"] = str(record.id)
    out["created_at"] = record.created_at.isoformat()
    return out


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def records_table(records: Sequence[EvalRecord]) -> str:
    header = (
        f"{'trace':<24} {'rubric':<18} {'status':<8} {'score':>5} {'pass':<5} {'method':<9} "
        "explanation"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        score = "-" if r.score is None else f"{r.score:.2f}"
        passed = "-" if r.passed is None else ("yes" if r.passed else "no")
        lines.append(
            f"{_cell(r.trace_id, 24):<24} {_cell(r.rubric, 18):<18} {r.status:<8} {score:>5} "
            f"{passed:<5} {_cell(r.method, 9):<9} {_cell(r.explanation.replace(chr(10), ' '), 60)}"
        )
    return "\n".join(lines)
