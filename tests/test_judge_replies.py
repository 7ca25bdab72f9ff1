"""What a real endpoint sends back: replies cut at the token limit, prose or fenced JSON
under a schema, a 400 for the response format, malformed replies. The judge HTTP API is
mocked with respx; every request body the client sends is checked."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from pydantic import BaseModel

from judges.errors import (
    JudgeError,
    JudgeOutputError,
    JudgeTruncatedError,
    error_kind,
    judge_failure,
)
from judges.llm.budget import reply_budget
from judges.llm.client import JudgeClient
from judges.provenance import VerdictIdentity, attributing

from .conftest import JUDGE_URL, chat_completion

MESSAGES = [{"role": "user", "content": "grade this"}]


class Verdict(BaseModel):
    reasoning: str
    score: int


GOOD = json.dumps({"reasoning": "fine", "score": 4})
CUT = '{"reasoning": "The answer restates the question and then goes on to'


def reply(content: str | None, finish: str = "stop") -> httpx.Response:
    return httpx.Response(200, json=chat_completion(content, finish_reason=finish))


def judge(**kw: object) -> JudgeClient:
    return JudgeClient(base_url=JUDGE_URL, model="m", max_retries=0, **kw)  # type: ignore[arg-type]


def sent(route: respx.Route, i: int) -> dict:
    return json.loads(route.calls[i].request.content)


@respx.mock(base_url=JUDGE_URL)
async def test_a_cut_reply_is_retried_once_with_twice_the_budget_and_a_brevity_note(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        side_effect=[reply(CUT, "length"), reply(GOOD)]
    )
    client = judge()
    with attributing(VerdictIdentity()) as calls:
        result = await client.complete(MESSAGES, Verdict)
    first, second = sent(route, 0), sent(route, 1)
    assert first["max_tokens"] == reply_budget(Verdict.model_json_schema(), 1024)
    assert second["max_tokens"] == 2 * first["max_tokens"]  # never the same request again
    assert "cut off" in second["messages"][-1]["content"]
    assert result.parsed.score == 4 and result.usage.calls == 2
    assert calls.reply_details() == {"judge_format": "json_schema", "judge_truncated_retries": 1}
    await client.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_a_reply_cut_twice_is_its_own_error_kind_with_the_raw_reply_kept(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(return_value=reply(CUT, "length"))
    client = judge()
    with (
        attributing(VerdictIdentity(), max_output_tokens=100),
        pytest.raises(JudgeTruncatedError) as caught,
    ):
        await client.complete(MESSAGES, Verdict)
    assert route.call_count == 2  # one retry, not more
    assert [sent(route, i)["max_tokens"] for i in (0, 1)] == [100, 200]  # the rubric's budget
    assert isinstance(caught.value, JudgeOutputError)  # callers catching the parent still do
    score = judge_failure(caught.value, method="judge", judge_model="m")
    assert error_kind(caught.value) == "judge_truncated"
    assert score.details["error_kind"] == "judge_truncated"
    assert score.details["raw_output"] == CUT and score.details["reply_budget"] == 200
    assert score.usage.calls == 2
    await client.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_a_malformed_reply_is_reasked_once_and_both_causes_are_kept(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        side_effect=[reply('{"reasoning": "x"}'), reply('{"score": "high"}')]
    )
    client = judge()
    with pytest.raises(JudgeOutputError) as caught:
        await client.complete(MESSAGES, Verdict)
    assert not isinstance(caught.value, JudgeTruncatedError)
    assert route.call_count == 2
    message = str(caught.value)
    assert "score: Field required" in message and "; then " in message
    assert "could not be used" in sent(route, 1)["messages"][-1]["content"]
    assert error_kind(caught.value) == "judge_output"
    assert caught.value.raw_output == '{"score": "high"}'
    await client.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_a_fenced_reply_is_read_and_the_extraction_recorded(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.post("/chat/completions").mock(
        return_value=reply(f"Here is my verdict:\n```json\n{GOOD}\n```\nThanks.")
    )
    client = judge()
    with attributing(VerdictIdentity()) as calls:
        result = await client.complete(MESSAGES, Verdict)
    assert result.parsed.score == 4
    assert calls.reply_details() == {"judge_format": "json_schema", "judge_reply_extracted": 1}
    await client.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_an_endpoint_that_ignores_the_schema_is_asked_in_json_object_mode_from_then_on(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        side_effect=[reply("The answer is good, I would give it a four."), reply(GOOD), reply(GOOD)]
    )
    client = judge()
    with attributing(VerdictIdentity()) as calls:
        result = await client.complete(MESSAGES, Verdict)
    assert result.parsed.score == 4
    retry = sent(route, 1)
    schema = Verdict.model_json_schema()
    assert retry["response_format"] == {"type": "json_object", "schema": schema}
    assert '"score"' in retry["messages"][-1]["content"]  # the schema is in the prompt too
    assert calls.reply_details() == {"judge_format": "json_object_schema"}
    await client.complete([{"role": "user", "content": "another"}], Verdict)
    assert sent(route, 2)["response_format"]["type"] == "json_object"  # remembered
    assert client.format == "json_object_schema" and client.response_format == "json_schema"
    await client.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_a_400_for_the_response_format_falls_back_to_the_schema_in_the_prompt(
    respx_mock: respx.MockRouter,
) -> None:
    # llama-cpp-python's server answers 422 to json_schema (a FastAPI validation error).
    unprocessable = httpx.Response(
        422, json={"detail": [{"loc": ["body", "response_format", "type"], "msg": "bad"}]}
    )
    refused = httpx.Response(400, json={"error": {"message": "response_format not supported"}})
    route = respx_mock.post("/chat/completions").mock(
        side_effect=[unprocessable, refused, refused, reply(GOOD)]
    )
    client = judge()
    with attributing(VerdictIdentity()) as calls:
        result = await client.complete(MESSAGES, Verdict)
    assert result.parsed.score == 4
    assert sent(route, 1)["response_format"]["schema"] == Verdict.model_json_schema()
    assert sent(route, 2)["response_format"] == {"type": "json_object"}
    assert "response_format" not in sent(route, 3)  # "prompt": the schema in the prompt only
    assert "JSON schema" in sent(route, 3)["messages"][-1]["content"]
    # appended to the user's message: some chat templates drop or refuse a late system one
    assert [m["role"] for m in sent(route, 3)["messages"]] == ["user"]
    route.side_effect = [reply(GOOD)]
    await client.complete([{"role": "user", "content": "another"}], Verdict)
    assert route.call_count == 5 and "response_format" not in sent(route, 4)  # remembered
    assert calls.reply_details() == {"judge_format": "prompt"}
    await client.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_other_4xx_are_not_retried_and_5xx_are(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(400, json={"error": {"message": "context length exceeded"}})
    )
    client = judge()
    with pytest.raises(JudgeError, match="HTTP 400"):
        await client.complete(MESSAGES, Verdict)
    assert route.call_count == 1
    route.side_effect = [httpx.Response(502, text="bad gateway"), reply(GOOD)]
    retried = JudgeClient(base_url=JUDGE_URL, model="m", max_retries=1)
    assert (await retried.complete(MESSAGES, Verdict)).parsed.score == 4
    assert route.call_count == 3
    await client.aclose()
    await retried.aclose()


def test_reply_budgets_follow_the_schema_within_the_ceiling() -> None:
    from judges.scorers.faithfulness_prompts import FaithfulnessReply
    from judges.scorers.relevance import AnswerRelevanceReply

    short = reply_budget(AnswerRelevanceReply.model_json_schema(), 1024)
    long = reply_budget(FaithfulnessReply.model_json_schema(), 1024)
    assert 64 <= short < 256  # one sentence and a verdict
    assert long == 1024  # a list of claims: up to the ceiling
    assert reply_budget(FaithfulnessReply.model_json_schema(), 512) == 512
    assert reply_budget(AnswerRelevanceReply.model_json_schema(), 1024, override=40) == 40


def test_a_batch_reply_cut_at_its_budget_is_a_truncation_too() -> None:
    from judges.llm.batch import BatchResult, reply_of

    body = chat_completion(CUT, finish_reason="length", completion_tokens=150)
    with pytest.raises(JudgeTruncatedError) as caught:
        reply_of(BatchResult("c1", body), Verdict, model="m", price=lambda *_: 0.0)
    assert error_kind(caught.value) == "judge_truncated"
    assert caught.value.raw_output == CUT and caught.value.max_tokens == 150


def test_llama_cpp_pythons_500_for_json_schema_is_a_format_refusal() -> None:
    from judges.llm.formats import refuses_format

    # The body llama-cpp-python's server sends for response_format json_schema (measured).
    body = (
        "{\"error\":{\"message\":\"1 validation error:\\n  {'type': 'literal_error', 'loc': "
        "('body', 'response_format', 'type'), 'msg': \\\"Input should be 'text' or "
        '\'json_object\'\\"}","type":"internal_server_error"}}'
    )
    assert refuses_format(500, body)
    assert not refuses_format(500, '{"error": {"message": "CUDA out of memory"}}')
    assert not refuses_format(400, '{"error": {"message": "context length exceeded"}}')
