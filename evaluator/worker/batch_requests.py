"""Batch mode's part of the evaluation job: which rubrics wait for the Batch API, and the
request rows it parks for them (evaluator.store.batches; sent by evaluator.worker.batch)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from evaluator.sampling import Reason
from evaluator.worker.runtime import Runtime
from judges.rubric import Rubric
from judges.scorers import llm_rubric
from judges.scorers.registry import precheck
from judges.types import EvalCase


def custom_id(trace_id: str, span_id: str, rubric: str, rubric_version: str) -> str:
    """The request's id in the batch file: a digest of the record's identity, so parking the
    same evaluation again yields the same id (and the unique key stores it once)."""
    key = json.dumps([trace_id, span_id, rubric, rubric_version], ensure_ascii=False)
    return "eval-" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def waits_for_batch(runtime: Runtime, case: EvalCase, rubric: Rubric) -> bool:
    """A batch-mode rubric whose case can be judged; otherwise it is scored in the job (a
    precheck skip or error, or no judge configured: recorded there with the reason)."""
    return (
        rubric.mode == "batch"
        and runtime.clients.judge is not None
        and precheck(case, rubric, runtime.clients) is None
    )


def parked_requests(
    runtime: Runtime,
    case: EvalCase,
    chosen: Sequence[tuple[Rubric, Reason]],
    probability: dict[str, float],
    trace_at: datetime | None,
) -> list[dict[str, Any]]:
    """The rows to park for these rubrics: the body `score_llm_rubric` would send online."""
    if not chosen:
        return []
    judge = runtime.clients.judge
    assert judge is not None  # checked by waits_for_batch
    return [
        {
            "custom_id": custom_id(case.trace_id, case.span_id, rubric.name, rubric.version),
            "trace_id": case.trace_id,
            "span_id": case.span_id,
            "rubric": rubric.name,
            "rubric_version": rubric.version,
            "sampled_by": reason.value,
            "labels": dict(case.labels),
            "body": llm_rubric.batch_request(case, rubric, judge),
            "inclusion_probability": probability[rubric.name],
            "trace_at": trace_at,
        }
        for rubric, reason in chosen
    ]
