"""Self-consistency (SelfCheckGPT idea) with a respx-mocked judge and generator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from judges.llm.client import JudgeClient
from judges.llm.generator import Generator, chat_messages
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.scorers.self_consistency import judge_support
from judges.types import Clients, EvalCase, Status
from tests.conftest import JUDGE_URL, chat_completion

GENERATOR_URL = "http://generator.test/v1"
ANSWER = "Marie Curie won two Nobel Prizes. She was born in Warsaw in 1867. She liked jazz."
SAMPLES = (
    "Marie Curie received two Nobel Prizes, in physics and chemistry. She was born in Warsaw.",
    "Curie, born in Warsaw in 1867, won the Nobel Prize twice.",
    "Marie Curie won Nobel Prizes in 1903 and 1911. She was born in 1867 in Warsaw, Poland.",
)
CASE = EvalCase(
    trace_id="t1",
    span_id="s1",
    question="Who was Marie Curie?",
    answer=ANSWER,
    messages=({"role": "user", "parts": [{"type": "text", "content": "Who was Marie Curie?"}]},),
    model="app-model",
    generation={"temperature": 0.0, "max_tokens": 200, "seed": 7},
)


def _state(case: EvalCase) -> dict[str, Any]:
    return {f: getattr(case, f) for f in case.__dataclass_fields__}


def rubric(method: str, samples: int = 3) -> Rubric:
    return Rubric(
        name="selfcheck",
        version="1",
        scorer="self_consistency",
        method=method,
        pass_threshold=0.7,
        options={"samples": samples},
    )


def judge_reply(supported: list[bool]) -> httpx.Response:
    body = {"verdicts": [{"id": i, "supported": s} for i, s in enumerate(supported, 1)]}
    return httpx.Response(200, json=chat_completion(json.dumps(body)))


def samples_reply(texts: list[str]) -> httpx.Response:
    body = chat_completion(texts[0], prompt_tokens=50, completion_tokens=40)
    body["choices"] = [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
        for i, t in enumerate(texts)
    ]
    return httpx.Response(200, json=body)


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    judge = JudgeClient(base_url=JUDGE_URL, model="judge-model", max_retries=0)
    generator = Generator(base_url=GENERATOR_URL, max_retries=0, temperature=1.0)
    yield Clients(judge=judge, generator=generator)
    await judge.aclose()
    await generator.aclose()


@pytest.fixture
def judge_api() -> respx.MockRouter:
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def generator_api() -> respx.MockRouter:
    with respx.mock(base_url=GENERATOR_URL, assert_all_called=False) as router:
        yield router


async def test_judge_method_makes_one_call_per_sample_using_trace_samples(
    clients: Clients, judge_api: respx.MockRouter, generator_api: respx.MockRouter
) -> None:
    gen = generator_api.post("/chat/completions")
    route = judge_api.post("/chat/completions").mock(
        side_effect=[
            judge_reply([True, True, False]),
            judge_reply([True, True, False]),
            judge_reply([True, False, False]),
        ]
    )
    case = EvalCase(**{**_state(CASE), "samples": SAMPLES})
    result = await run_scorer(case, rubric("judge"), clients)

    assert route.call_count == 3 and gen.call_count == 0
    assert result.status is Status.OK and result.method == "judge"
    support = [s["support"] for s in result.details["sentences"]]
    assert support == pytest.approx([1.0, 2 / 3, 0.0], abs=1e-3)
    assert result.value == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert result.details["unsupported"] == ["She was born in Warsaw in 1867.", "She liked jazz."]
    assert result.details["samples_source"] == "trace"
    assert result.usage.calls == 3
    # Each call checks ALL sentences against exactly one fenced sample.
    for call in route.calls:
        body = json.loads(call.request.content)
        user = body["messages"][1]["content"]
        assert user.count('<data kind="sample"') == 1
        assert "1. Marie Curie won two Nobel Prizes." in user and "3. She liked jazz." in user
        schema = body["response_format"]["json_schema"]["schema"]["properties"]["verdicts"]
        assert schema["minItems"] == schema["maxItems"] == 3
    samples_seen = {json.loads(c.request.content)["messages"][1]["content"] for c in route.calls}
    assert all(any(s in u for u in samples_seen) for s in SAMPLES)


async def test_draws_samples_in_one_request_when_the_trace_has_none(
    clients: Clients, judge_api: respx.MockRouter, generator_api: respx.MockRouter
) -> None:
    gen = generator_api.post("/chat/completions").mock(return_value=samples_reply(list(SAMPLES)))
    judge = judge_api.post("/chat/completions").mock(return_value=judge_reply([True, True, False]))
    result = await run_scorer(CASE, rubric("judge"), clients)

    assert gen.call_count == 1 and judge.call_count == 3
    body = json.loads(gen.calls[0].request.content)
    assert body["n"] == 3 and body["model"] == "app-model"
    assert body["temperature"] == 1.0  # not the app's 0.0: samples need spread
    assert body["max_tokens"] == 200 and "seed" not in body
    assert body["messages"] == [{"role": "user", "content": "Who was Marie Curie?"}]
    assert result.details["samples_source"] == "generator"
    assert result.details["samples"] == list(SAMPLES)
    # Usage adds the generator's tokens to the judge's.
    assert result.usage.calls == 4
    assert result.usage.input_tokens == 50 + 3 * 120


async def test_server_ignoring_n_gets_the_rest_as_single_requests(
    clients: Clients, judge_api: respx.MockRouter, generator_api: respx.MockRouter
) -> None:
    gen = generator_api.post("/chat/completions").mock(
        side_effect=[
            samples_reply([SAMPLES[0]]),
            samples_reply([SAMPLES[1]]),
            samples_reply([SAMPLES[2]]),
        ]
    )
    judge_api.post("/chat/completions").mock(return_value=judge_reply([True, True, True]))
    case = EvalCase(**{**_state(CASE), "samples": (SAMPLES[0],)})
    result = await run_scorer(case, rubric("judge", samples=4), clients)
    # 1 sample from the trace, 3 to draw: one n=3 request that yields 1, then 2 singles.
    assert gen.call_count == 3
    assert json.loads(gen.calls[0].request.content)["n"] == 3
    assert "n" not in json.loads(gen.calls[1].request.content)
    assert result.details["n_samples"] == 4
    assert result.details["samples_source"] == "trace+generator"
    assert result.value == 1.0


async def test_server_rejecting_n_falls_back_to_single_requests() -> None:
    generator = Generator(base_url=GENERATOR_URL, max_retries=0)
    with respx.mock(base_url=GENERATOR_URL) as api:
        route = api.post("/chat/completions").mock(
            side_effect=[
                httpx.Response(400, json={"error": {"message": "n must be 1"}}),
                samples_reply(["a"]),
                samples_reply(["b"]),
            ]
        )
        texts, usage = await generator.sample(CASE.messages, "app-model", 2)
    await generator.aclose()
    assert route.call_count == 3 and sorted(texts) == ["a", "b"] and usage.calls == 2


async def test_malformed_judge_reply_is_an_error_with_raw_output_and_all_usage(
    clients: Clients, judge_api: respx.MockRouter
) -> None:
    route = judge_api.post("/chat/completions").mock(
        side_effect=[
            judge_reply([True, True, True]),
            httpx.Response(
                200, json=chat_completion('{"verdicts": [{"id": 1, "supported": true}]}')
            ),
            httpx.Response(200, json=chat_completion("no")),
            judge_reply([True, True, True]),
        ]
    )
    case = EvalCase(**{**_state(CASE), "samples": SAMPLES})
    result = await run_scorer(case, rubric("judge"), clients)
    assert route.call_count == 4  # 3 samples + one re-ask
    assert result.status is Status.ERROR and result.value is None
    assert "1 of 3 sample checks failed" in result.explanation
    assert result.details["raw_output"] == ["no"]
    assert result.usage.calls == 4


async def test_skips_without_samples_or_generator() -> None:
    result = await run_scorer(
        CASE,
        rubric("judge"),
        Clients(judge=JudgeClient(base_url=JUDGE_URL, model="m", max_retries=0)),
    )
    assert result.status is Status.SKIPPED and "no generator" in result.explanation


async def test_embeddings_without_embedder_names_the_extra() -> None:
    result = await run_scorer(CASE, rubric("embeddings"), Clients())
    assert result.status is Status.SKIPPED and "[embeddings]" in result.explanation


async def test_embeddings_method_ranks_the_invented_sentence_lowest() -> None:
    pytest.importorskip("sentence_transformers", reason="needs the optional extra [embeddings]")
    from judges.llm.embedder import Embedder

    case = EvalCase(**{**_state(CASE), "samples": SAMPLES})
    result = await run_scorer(case, rubric("embeddings"), Clients(embedder=Embedder()))
    assert result.status is Status.OK and result.usage.calls == 0
    support = {s["sentence"]: s["support"] for s in result.details["sentences"]}
    assert min(support, key=support.__getitem__) == "She liked jazz."
    assert 0.0 <= result.value <= 1.0  # type: ignore[operator]


def test_pure_parts() -> None:
    assert judge_support([[True, False], [True, True]]) == [1.0, 0.5]
    assert chat_messages(
        [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "parts": [{"type": "text", "content": "hi"}, {"type": "image", "content": "…"}],
            },
        ]
    ) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
