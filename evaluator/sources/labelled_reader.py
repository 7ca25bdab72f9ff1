"""A small reader for labelled JSONL (anchor sets and feedback import).

A stop-gap until evaluator.sources.labelled lands (written elsewhere, same format):

    {"trace": <trace document>, "label": "hallucinated" | "faithful" | 0 | 1,
     "human_score": 0.8, "rubric": "faithfulness", "note": "..."}

`label` 1 / "faithful" means the answer passes; the positive class of agreement metrics is
the failing one ("hallucinated"). Also accepted, for anchors built from existing data: a
RAGTruth QA record (one question, several labelled answers) and a bare trace carrying a
boolean `ragtruth.hallucinated` / `label.hallucinated` attribute.

    >>> parse_label("hallucinated"), parse_label(1), parse_label("faithful")
    (True, False, False)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.sources.ragtruth import record_to_traces

_FAIL = frozenset({"hallucinated", "fail", "failed", "bad", "no", "false"})
_PASS = frozenset({"faithful", "pass", "passed", "good", "ok", "yes", "true"})
LABEL_ATTRIBUTES = ("ragtruth.hallucinated", "label.hallucinated")


@dataclass(frozen=True, slots=True)
class LabelledLine:
    trace: dict[str, Any]
    positive: bool  # True = fails (hallucinated)
    human_score: float | None = None
    rubric: str | None = None
    note: str = ""
    line: int = 0


def parse_label(value: Any) -> bool:
    """True when the label says the answer fails; ValueError for anything unreadable."""
    if isinstance(value, bool):
        return not value  # a boolean label reads as "passes"
    if isinstance(value, int | float) and value in (0, 1):
        return value == 0
    if isinstance(value, str) and value.strip().lower() in _FAIL | _PASS:
        return value.strip().lower() in _FAIL
    raise ValueError(f"label {value!r} is not 'hallucinated', 'faithful', 0 or 1")


def _human_score(doc: dict[str, Any]) -> float | None:
    score = doc.get("human_score")
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise ValueError(f"human_score {score!r} is not a number in [0, 1]")
    return float(score)


def lines_of(doc: dict[str, Any], number: int) -> list[LabelledLine]:
    """The labelled items one JSON line holds (several for a RAGTruth record)."""
    if "trace" in doc:
        if not isinstance(doc["trace"], dict):
            raise ValueError("'trace' must be a trace document (an object)")
        rubric = doc.get("rubric")
        return [
            LabelledLine(
                trace=doc["trace"],
                positive=parse_label(doc.get("label")),
                human_score=_human_score(doc),
                rubric=str(rubric) if rubric is not None else None,
                note=str(doc.get("note") or ""),
                line=number,
            )
        ]
    traces = record_to_traces(doc) if "responses" in doc else [doc]
    out = []
    for trace in traces:
        attrs = trace.get("attributes") or {}
        label = next((attrs[k] for k in LABEL_ATTRIBUTES if k in attrs), None)
        if not isinstance(label, bool):
            raise ValueError(f"no 'trace'+'label' and no boolean {' or '.join(LABEL_ATTRIBUTES)}")
        out.append(LabelledLine(trace=trace, positive=label, line=number))
    return out


def read_labelled(path: Path) -> Iterator[LabelledLine]:
    """Every labelled item of `path`; a bad line raises ValueError naming file and line."""
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError("a line must be a JSON object")
                yield from lines_of(doc, number)
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
