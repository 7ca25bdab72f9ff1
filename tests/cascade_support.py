"""Test helpers for the certified cascade through the worker: the canned RAG case, its
grounded and invented answers, the cascade rubric, a judge that always replies with the
fixture's verdict, and a certification the worker's router finds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import respx

from evaluator.store import certifications as certs
from evaluator.worker.cascade_routing import key_of
from evaluator.worker.runtime import Runtime
from judges.scorers.faithfulness import stratum_of
from judges.scorers.local import score_faithfulness_local
from judges.types import Context, EvalCase
from tests.conftest import FIXTURES, JUDGE_URL, chat_completion, rag_trace

FIXTURE = json.loads((FIXTURES / "faithfulness_case.json").read_text())
DOCS = [c["text"] for c in FIXTURE["contexts"]]
# The local step passes this one confidently (no judge); it escalates the invented one.
GROUNDED = (
    "The Pro plan costs $20 per user per month, billed annually. "
    "Pro includes unlimited projects, 100 GB of storage and priority email support."
)
INVENTED = (
    "The Pro plan costs $45 per month through Stripe Billing. "
    "It ships with a dedicated Oracle database cluster in Frankfurt."
)
JUDGE = {"base_url": JUDGE_URL, "model": "judge-model", "max_retries": 0, "timeout_s": 2.0}


def cascade_rubric(audit_rate: float) -> str:
    """The faithfulness cascade rubric (every trace sampled) with this calibration draw."""
    return f"""
name = "faithfulness"
version = "1"
scorer = "faithfulness"
method = "cascade"
pass_threshold = 0.8
[sampling]
rate = 1.0
[options]
audit_rate = {audit_rate}
"""


def trace(trace_id: str, answer: str, session: str | None = None) -> dict[str, Any]:
    """The fixture's RAG trace with `answer` (in `session`); the trace id in the question, so
    no two judge prompts are alike (none is served by the reply cache)."""
    question = f"{FIXTURE['question']} ({trace_id})"
    attributes = {} if session is None else {"session.id": session}
    return rag_trace(trace_id, answer=answer, question=question, documents=DOCS, **attributes)


def grounded_case(case_id: str) -> EvalCase:
    """GROUNDED as the local scorer sees it (for the stratum it falls in)."""
    contexts = tuple(Context(str(i), d) for i, d in enumerate(DOCS))
    return EvalCase(case_id, "s", f"{FIXTURE['question']} ({case_id})", GROUNDED, contexts)


def mock_judge() -> Iterator[respx.Route]:
    """The judge's chat endpoint, always replying with the fixture's verdict (a fixture's
    body: `yield from mock_judge()`)."""
    body = json.dumps(FIXTURE["judge_reply"])
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        yield router.post("/chat/completions").mock(
            return_value=httpx.Response(200, json=chat_completion(body))
        )


def stratum_for(case: EvalCase) -> str:
    """The stratum the cascade will file `case` under (the local scorer's detected task)."""
    return stratum_of(score_faithfulness_local(case))


def certify(
    runtime: Runtime,
    stratum: str,
    threshold: float,
    *,
    rubric: str = "faithfulness",
    prompt_version: str | None = None,
) -> str:
    """Store a certification of `stratum` at `threshold` under the runtime's key (the one its
    router looks up: local method version, the rubric's epoch with this judge); its id."""
    found = runtime.rubrics.by_name(rubric)
    assert found is not None
    r, stage, epoch, pv, st = key_of(found, runtime.clients, prompt_version, stratum)
    row = certs.CertificationRecord(
        id="", rubric=r, stage=stage, judge_epoch=epoch, prompt_version=pv, stratum=st,
        alpha=0.05, delta=0.1, threshold=threshold, labels=300, clusters=300, failing=60,
        misses=0, decided_share=0.4,
    )  # fmt: skip
    return certs.write(runtime.store.engine, row).id
