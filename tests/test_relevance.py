"""Answer and context relevance against a respx-mocked OpenAI-compatible judge."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from judges.llm.client import JudgeClient
from judges.prompts import DATA_RULES
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.scorers.relevance import lexical_overlap
from judges.types import Clients, Context, EvalCase, Status
from tests.conftest import JUDGE_URL, chat_completion

CONTEXTS = (
    Context("kb-1", "The Pro plan costs $20 per user per month, billed annually."),
    Context("kb-2", "Our office dog is called Biscuit and loves tennis balls."),
    Context("kb-3", "Pro includes unlimited projects and 100 GB of storage."),
)
CASE = EvalCase(
    trace_id="t1",
    span_id="s1",
    question="What does the Pro plan cost per month?",
    answer="It depends on many factors; please contact sales for details.",
    contexts=CONTEXTS,
)


def rubric(scorer: str, method: str | None = None, **options: Any) -> Rubric:
    return Rubric(
        name=scorer,
        version="1",
        scorer=scorer,
        method=method,  # type: ignore[arg-type]
        pass_threshold=0.5,
        options=options,
    )


def reply(body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.Response(200, json=chat_completion(content, **kwargs))


def sent(route: respx.Route, index: int = 0) -> dict[str, Any]:
    return json.loads(route.calls[index].request.content)


@pytest.fixture
async def judge() -> AsyncIterator[JudgeClient]:
    client = JudgeClient(base_url=JUDGE_URL, model="judge-model", max_retries=0)
    yield client
    await client.aclose()


@pytest.fixture
def api() -> respx.MockRouter:
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        yield router


# --- answer relevance ------------------------------------------------------------------


async def test_evasive_answer_scores_zero_in_one_call(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    route = api.post("/chat/completions").mock(
        return_value=reply(
            {"reason": "Deflects to sales instead of giving the price.", "verdict": "evasive"}
        )
    )
    result = await run_scorer(CASE, rubric("answer_relevance"), Clients(judge=judge))
    assert route.call_count == 1
    assert result.status is Status.OK
    assert (result.value, result.label, result.passed) == (0.0, "evasive", False)
    assert result.explanation.startswith("Deflects")
    body = sent(route)
    assert body["response_format"]["json_schema"]["name"] == "AnswerRelevanceReply"
    enum = body["response_format"]["json_schema"]["schema"]["properties"]["verdict"]["enum"]
    assert set(enum) == {"direct", "partial", "evasive", "off_topic"}
    assert DATA_RULES in body["messages"][0]["content"]
    user = body["messages"][1]["content"]
    assert '<data kind="question"' in user and '<data kind="answer"' in user
    assert 'kind="context"' not in user  # relevance of the answer does not need documents


@pytest.mark.parametrize(
    ("verdict", "value"), [("direct", 1.0), ("partial", 0.5), ("off_topic", 0.0)]
)
async def test_verdicts_map_to_values(
    judge: JudgeClient, api: respx.MockRouter, verdict: str, value: float
) -> None:
    api.post("/chat/completions").mock(return_value=reply({"reason": "r", "verdict": verdict}))
    result = await run_scorer(CASE, rubric("answer_relevance"), Clients(judge=judge))
    assert result.value == value and result.label == verdict


async def test_unknown_verdict_is_reasked_then_an_error(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    bad = json.dumps({"reason": "fine", "verdict": "yes"})
    route = api.post("/chat/completions").mock(return_value=reply(bad))
    result = await run_scorer(CASE, rubric("answer_relevance"), Clients(judge=judge))
    assert route.call_count == 2
    assert result.status is Status.ERROR and result.value is None
    assert result.details["raw_output"] == bad and result.usage.calls == 2


async def test_answer_local_delegates_to_local_grounding() -> None:
    pytest.importorskip("judges.scorers.local")
    result = await run_scorer(CASE, rubric("answer_relevance", "local"), Clients())
    assert result.status in (Status.OK, Status.SKIPPED)


# --- context relevance -----------------------------------------------------------------


async def test_context_precision_from_one_call_for_all_documents(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    route = api.post("/chat/completions").mock(
        return_value=reply(
            {
                "documents": [
                    {"id": 2, "reason": "about a dog", "relevant": False},  # order does not matter
                    {"id": 1, "reason": "gives the price", "relevant": True},
                    {"id": 3, "reason": "features, not price", "relevant": False},
                ]
            }
        )
    )
    result = await run_scorer(CASE, rubric("context_relevance"), Clients(judge=judge))
    assert route.call_count == 1
    assert result.status is Status.OK and result.value == pytest.approx(1 / 3)
    assert result.passed is False
    assert [d["id"] for d in result.details["documents"]] == ["kb-1", "kb-2", "kb-3"]
    assert [d["relevant"] for d in result.details["documents"]] == [True, False, False]
    body = sent(route)
    schema = body["response_format"]["json_schema"]["schema"]["properties"]["documents"]
    assert schema["minItems"] == schema["maxItems"] == 3
    user = body["messages"][1]["content"]
    for i, ctx in enumerate(CONTEXTS, 1):
        assert f'id="{i}">\n{ctx.text}\n</data nonce=' in user


async def test_missing_document_verdict_is_reasked(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    partial = {
        "documents": [
            {"id": 1, "relevant": True},
            {"id": 1, "relevant": True},
            {"id": 3, "relevant": True},
        ]
    }
    full = {"documents": [{"id": i, "relevant": True} for i in (1, 2, 3)]}
    route = api.post("/chat/completions").mock(side_effect=[reply(partial), reply(full)])
    result = await run_scorer(CASE, rubric("context_relevance"), Clients(judge=judge))
    assert route.call_count == 2
    assert "exactly one entry" in sent(route, 1)["messages"][-1]["content"]
    assert result.value == 1.0


async def test_context_local_lexical_without_embedder() -> None:
    result = await run_scorer(CASE, rubric("context_relevance", "local"), Clients())
    assert result.status is Status.OK and result.method == "local"
    assert result.details["basis"] == "lexical"
    relevant = [d["relevant"] for d in result.details["documents"]]
    assert relevant[0] is True and relevant[1] is False


async def test_context_local_with_embeddings() -> None:
    pytest.importorskip("sentence_transformers", reason="needs the optional extra [embeddings]")
    from judges.llm.embedder import Embedder

    result = await run_scorer(
        CASE, rubric("context_relevance", "local"), Clients(embedder=Embedder())
    )
    assert result.details["basis"] == "embeddings"
    sims = [d["similarity"] for d in result.details["documents"]]
    assert sims[0] > sims[1]  # the price document is closer to the question than the dog
    assert result.details["documents"][0]["relevant"] is True


def test_lexical_overlap() -> None:
    assert lexical_overlap("Pro plan cost", "The Pro plan costs $20") == 1.0
    assert lexical_overlap("the of and", "anything") == 0.0
