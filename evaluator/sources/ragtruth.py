"""Convert RAGTruth records (vectara/FaithJudge packaging) into traces (pure).

One record = one source with several labelled responses; each response becomes one trace: a
retrieval span with the source as documents and a chat span with the response. The source is
a question with passages (QA), an article as a plain string (summaries; FRANK has the same
shape), or a structured record without a question (data-to-text: the record's JSON is the
document, so field checks see fields and values).
The human label travels along as `ragtruth.hallucinated` for calibration and benchmarks.
RAGTruth data: MIT licence, Copyright (c) 2023 Particle Media.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

_PASSAGE = re.compile(r"passage\s*(\d+)\s*:", re.IGNORECASE)
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def split_passages(passages: str) -> list[str]:
    """'passage 1: a passage 2: b' → ['a', 'b']; text without markers is one passage."""
    marks = list(_PASSAGE.finditer(passages))
    if not marks:
        return [passages.strip()] if passages.strip() else []
    texts = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(passages)
        text = passages[mark.end() : end].strip()
        if text:
            texts.append(text)
    return texts


def _task(source: Any, source_id: str) -> tuple[str, str, list[dict[str, Any]]]:
    """(feature, question, documents) for a QA, summary or data-to-text source."""
    if isinstance(source, str):
        doc = [{"id": f"{source_id}-doc", "content": source}]
        return "summary", "Summarize the following text.", doc
    if not isinstance(source, dict):
        raise ValueError(f"source must be a string or an object, got {type(source).__name__}")
    if isinstance(source.get("question"), str) and isinstance(source.get("passages"), str):
        docs = [
            {"id": f"{source_id}-p{i}", "content": text}
            for i, text in enumerate(split_passages(source["passages"]), 1)
        ]
        return "qa", source["question"], docs
    record = json.dumps(source, ensure_ascii=False, sort_keys=True)
    doc = [{"id": f"{source_id}-record", "content": record}]
    return "data2text", "Write an overview of this record from its fields.", doc


def record_to_traces(record: dict[str, Any], *, prompt_version: str = "v1") -> list[dict[str, Any]]:
    source_id = str(record["source_id"])
    feature, question, documents = _task(record["source"], source_id)
    system_prompt = "Answer the question using only these passages.\n\n" + "\n\n".join(
        f"passage {i}: {d['content']}" for i, d in enumerate(documents, 1)
    )
    traces = []
    for index, response in enumerate(record["responses"]):
        offset = int(source_id) if source_id.isdigit() else sum(map(ord, source_id))
        start = _EPOCH + timedelta(minutes=offset % 100_000, seconds=index)
        model = response["model"]
        traces.append(
            {
                "trace_id": f"ragtruth-{source_id}-{index}",
                "attributes": {
                    "prompt.version": prompt_version,
                    "feature": f"ragtruth-{feature}",
                    "tenant": "demo",
                    "session.id": f"ragtruth-{source_id}",
                    "ragtruth.hallucinated": bool(response["labels"]),
                    "ragtruth.labels": response["labels"],
                },
                "spans": [
                    {
                        "span_id": f"{source_id}-{index}-retrieve",
                        "name": "retrieve passages",
                        "start_time": start.isoformat(),
                        "end_time": (start + timedelta(milliseconds=120)).isoformat(),
                        "status": "ok",
                        "attributes": {
                            "gen_ai.operation.name": "retrieval",
                            "gen_ai.retrieval.query.text": question,
                            "gen_ai.retrieval.documents": documents,
                        },
                    },
                    {
                        "span_id": f"{source_id}-{index}-chat",
                        "parent_span_id": None,
                        "name": f"chat {model}",
                        "start_time": (start + timedelta(milliseconds=130)).isoformat(),
                        "end_time": (start + timedelta(milliseconds=1400)).isoformat(),
                        "status": "ok",
                        "attributes": {
                            "gen_ai.operation.name": "chat",
                            "gen_ai.request.model": model,
                            "gen_ai.response.model": model,
                            "gen_ai.request.temperature": 0.7,
                            "gen_ai.input.messages": [
                                {
                                    "role": "system",
                                    "parts": [{"type": "text", "content": system_prompt}],
                                },
                                {"role": "user", "parts": [{"type": "text", "content": question}]},
                            ],
                            "gen_ai.output.messages": [
                                {
                                    "role": "assistant",
                                    "parts": [{"type": "text", "content": response["response"]}],
                                    "finish_reason": "stop",
                                }
                            ],
                        },
                    },
                ],
            }
        )
    return traces
