"""Labelled JSONL: the one format for labelled traces (calibrate, anchor sets, feedback
import, dataset export). See docs/labelled-jsonl.md.

One JSON object per line:

    {"trace": {...trace document...}, "label": "fail", "human_score": 0.2,
     "rubric": "faithfulness", "span_id": "c1", "note": "...", "id": "fb-17"}

`label` says whether the answer *passes* the rubric: "pass" / "fail" (also "faithful",
"supported", "good", true, 1 / "hallucinated", "unsupported", "bad", false, 0).
`human_score` is a graded judgement in [0, 1] (higher = better). At least one of the two is
needed. Two other shapes are read too: RAGTruth-style records (`source` + `responses` with
span `labels`; QA, summary and data-to-text sources alike; FRANK has the same shape) and
bare traces carrying the boolean `ragtruth.hallucinated` / `label.hallucinated`.

    >>> span = {"span_id": "c", "attributes": {}}
    >>> item = parse_item({"trace": {"trace_id": "t", "spans": [span]}, "label": "hallucinated"})
    >>> item.passed, item.human_score
    (False, None)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.errors import InputError
from evaluator.sources.ragtruth import record_to_traces
from evaluator.traces.model import Trace, parse_trace

PASS = frozenset(
    {"pass", "passed", "faithful", "supported", "good", "ok", "yes", "correct", "true", "1"}
)
FAIL = frozenset(
    {"fail", "failed", "hallucinated", "unsupported", "bad", "no", "incorrect", "false", "0"}
)
LEGACY_KEYS = ("ragtruth.hallucinated", "label.hallucinated")
# `comment` is note's other name (OTLP spans used it)
_FIELDS = {
    "trace",
    "label",
    "human_score",
    "rubric",
    "span_id",
    "note",
    "comment",
    "id",
    "source",
    "scores",
    "selected_by",
    "label_source",
}


@dataclass(frozen=True)
class LabelledItem:
    trace: Trace
    passed: bool | None  # the human label: does the answer pass the rubric?
    human_score: float | None = None
    rubric: str | None = None
    span_id: str | None = None
    note: str = ""
    id: str | None = None
    source: str = ""


def parse_label(value: Any) -> bool:
    """True = passes. Raises ValueError naming the accepted spellings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in PASS:
        return True
    if text in FAIL:
        return False
    raise ValueError(
        f"label {value!r} is not one of pass/fail (or {', '.join(sorted(PASS))} / "
        f"{', '.join(sorted(FAIL))})"
    )


def _score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"human_score must be a finite number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"human_score must lie in [0, 1], got {value}")
    return float(value)


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    return value


def parse_item(doc: Any) -> LabelledItem:
    """One labelled-JSONL object (or a legacy labelled trace) → LabelledItem."""
    if not isinstance(doc, dict):
        raise ValueError(f"a line must be a JSON object, got {type(doc).__name__}")
    if "trace" not in doc:  # a bare trace with a legacy boolean label attribute
        trace = parse_trace(doc)
        legacy = next((trace.attributes[k] for k in LEGACY_KEYS if k in trace.attributes), None)
        if not isinstance(legacy, bool):
            raise ValueError(f"no 'trace' and no boolean {' or '.join(LEGACY_KEYS)}")
        return LabelledItem(trace=trace, passed=not legacy, source="legacy")
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; allowed: {', '.join(sorted(_FIELDS))}")
    trace = parse_trace(doc["trace"])
    passed = parse_label(doc["label"]) if doc.get("label") is not None else None
    score = _score(doc["human_score"]) if doc.get("human_score") is not None else None
    if passed is None and score is None:
        raise ValueError("needs a 'label' or a 'human_score'")
    return LabelledItem(
        trace=trace,
        passed=passed,
        human_score=score,
        rubric=_optional_str(doc, "rubric"),
        span_id=_optional_str(doc, "span_id"),
        note=_optional_str(doc, "note") or _optional_str(doc, "comment") or "",
        id=_optional_str(doc, "id"),
        source=_optional_str(doc, "source") or "",
    )


def items_of(doc: Any) -> list[LabelledItem]:
    """A line's items: a RAGTruth-style record yields one per response."""
    if isinstance(doc, dict) and "responses" in doc and "source" in doc:
        return [parse_item(t) for t in record_to_traces(doc)]
    return [parse_item(doc)]


def read_labelled(path: Path, limit: int | None = None) -> Iterator[LabelledItem]:
    """Items of a labelled JSONL file; a bad line raises InputError with its number."""
    count = 0
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items = items_of(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{number}: {exc}") from None
            for item in items:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
