"""method = "combined": three RAG rubrics of one case from ONE respx-mocked judge call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from judges.llm.client import JudgeClient
from judges.memo import SharedCalls
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.types import Clients, Context, EvalCase, Score, Status
from tests.conftest import JUDGE_URL, chat_completion

CASE = EvalCase(
    trace_id="t1",
    span_id="s1",
    question="What does the Pro plan cost per month?",
    answer="The Pro plan costs $20 per user per month. It includes 1 TB of storage.",
    contexts=(
        Context("kb-1", "The Pro plan costs $20 per user per month, billed annually."),
        Context("kb-2", "Our office dog is called Biscuit."),
    ),
)
REPLY = {
    "documents": [
        {"id": 1, "reason": "states the price", "relevant": True},
        {"id": 2, "reason": "about a dog", "relevant": False},
    ],
    "answer_relevance": {"reason": "Gives the price.", "verdict": "direct"},
    "claims": [
        {"claim": "Pro costs $20/user/month.", "context_ids": [1], "verdict": "supported"},
        {"claim": "Pro includes 1 TB.", "context_ids": [], "verdict": "not_found"},
    ],
    "no_factual_claims": False,
}
SCORERS = ("faithfulness", "answer_relevance", "context_relevance")


def rubric(scorer: str) -> Rubric:
    return Rubric(name=f"{scorer}-c", version="1", scorer=scorer, method="combined")  # type: ignore[arg-type]


def reply(body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.Response(200, json=chat_completion(content, **kwargs))


async def score_all(case: EvalCase, clients: Clients, *, concurrent: bool = True) -> list[Score]:
    rubrics = [rubric(s) for s in SCORERS]
    if concurrent:  # as evaluator.worker.pipeline runs them
        return list(await asyncio.gather(*(run_scorer(case, r, clients) for r in rubrics)))
    return [await run_scorer(case, r, clients) for r in rubrics]


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    judge = JudgeClient(base_url=JUDGE_URL, model="judge-model", max_retries=0)
    yield Clients(judge=judge)
    await judge.aclose()


@pytest.fixture
def api() -> respx.MockRouter:
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        yield router


@pytest.mark.parametrize("concurrent", [True, False])
async def test_three_rubrics_one_request_three_scores(
    clients: Clients, api: respx.MockRouter, concurrent: bool
) -> None:
    route = api.post("/chat/completions").mock(
        return_value=reply(REPLY, prompt_tokens=900, completion_tokens=80)
    )
    faith, answer, contexts = await score_all(CASE, clients, concurrent=concurrent)
    assert route.call_count == 1
    assert (faith.status, faith.value, faith.passed) == (Status.OK, 0.5, False)
    assert faith.details["counts"] == {"supported": 1, "contradicted": 0, "not_found": 1}
    assert (answer.value, answer.label, answer.explanation) == (1.0, "direct", "Gives the price.")
    assert contexts.value == 0.5
    assert [d["id"] for d in contexts.details["documents"]] == ["kb-1", "kb-2"]
    assert {s.method for s in (faith, answer, contexts)} == {"combined"}
    # The call's cost is counted once, on the rubric that started it.
    assert faith.details["combined"] == {"call": "issued", "usage_on": "faithfulness-c"}
    assert answer.details["combined"] == {"call": "shared", "usage_on": "faithfulness-c"}
    assert sum(s.usage.calls for s in (faith, answer, contexts)) == 1
    assert sum(s.usage.input_tokens for s in (faith, answer, contexts)) == 900
    # The documents are sent once, in one user message after a fixed system message.
    messages = json.loads(route.calls[0].request.content)["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].count("Biscuit") == 1
    assert "Biscuit" not in messages[0]["content"]
    assert len(clients.shared) == 0  # every part took its result: nothing kept


async def test_judge_failure_gives_three_errors_with_the_cause(
    clients: Clients, api: respx.MockRouter
) -> None:
    route = api.post("/chat/completions").mock(
        return_value=httpx.Response(400, json={"error": {"message": "context too long"}})
    )
    scores = await score_all(CASE, clients)
    assert route.call_count == 1
    for s in scores:
        assert s.status is Status.ERROR and s.value is None and s.passed is None
        assert "HTTP 400" in s.explanation and "context too long" in s.explanation
        assert s.method == "combined"


async def test_malformed_reply_is_reasked_once(clients: Clients, api: respx.MockRouter) -> None:
    short = {**REPLY, "documents": REPLY["documents"][:1]}  # one verdict for two documents
    route = api.post("/chat/completions").mock(
        side_effect=[reply("not json at all"), reply(short), reply(REPLY)]
    )
    scores = await score_all(CASE, clients)
    assert route.call_count == 2  # the call and its one re-ask, shared by all three
    assert all(s.status is Status.ERROR for s in scores)
    assert all("after one re-ask" in s.explanation for s in scores)
    assert scores[0].usage.calls == 2 and scores[1].usage.calls == 0

    route.side_effect = [reply("{"), reply(REPLY)]
    other = EvalCase(**{**_fields(CASE), "trace_id": "t2"})
    scores = await score_all(other, clients)
    assert route.call_count == 4
    assert [s.status for s in scores] == [Status.OK] * 3
    assert scores[0].usage.calls == 2  # the re-ask is paid for, once
    reask = json.loads(route.calls[3].request.content)["messages"]
    assert reask[-1]["role"] == "user" and "could not be used" in reask[-1]["content"]


async def test_memo_does_not_leak_across_cases(clients: Clients, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions").mock(return_value=reply(REPLY))
    # Same ids, other content (a re-ingested trace): asked again, not served the old reply.
    changed = EvalCase(**{**_fields(CASE), "answer": "Pro is free."})
    await score_all(CASE, clients)
    await score_all(changed, clients)
    other = EvalCase(**{**_fields(CASE), "trace_id": "t3"})
    await score_all(other, clients)
    assert route.call_count == 3
    assert "Pro is free." in json.loads(route.calls[1].request.content)["messages"][1]["content"]
    assert len(clients.shared) == 0


async def test_partial_rubric_sets_are_bounded() -> None:
    memo = SharedCalls(max_entries=4)
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        return calls

    parts = frozenset({"a", "b"})
    for i in range(10):  # only part "a" ever asks: entries wait for "b" that never comes
        await memo.get(i, part="a", parts=parts, issuer="r", call=call)
    assert len(memo) <= 4 and calls == 10
    shared = await memo.get(9, part="b", parts=parts, issuer="r2", call=call)
    assert (shared.value, shared.issued, shared.issuer) == (10, False, "r")
    assert 9 not in memo._entries


async def test_deferred_call_is_forgotten_so_a_retry_asks_again() -> None:
    memo = SharedCalls()

    async def fails() -> int:
        raise RuntimeError("boom")

    parts = frozenset({"a", "b"})
    with pytest.raises(RuntimeError):
        await memo.get("k", part="a", parts=parts, issuer="r", call=fails)
    assert len(memo) == 0


def _fields(case: EvalCase) -> dict[str, Any]:
    return {f: getattr(case, f) for f in case.__slots__}  # type: ignore[attr-defined]
