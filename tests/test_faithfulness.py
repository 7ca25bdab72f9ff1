"""Faithfulness scorer against a respx-mocked OpenAI-compatible judge."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from judges.llm.client import JudgeClient
from judges.prompts import DATA_RULES
from judges.rubric import Rubric
from judges.scorers.faithfulness import faithfulness_value
from judges.scorers.registry import run_scorer
from judges.types import CascadeRoute, CertifiedThreshold, Clients, Context, EvalCase, Status
from tests.conftest import FIXTURES, JUDGE_URL, chat_completion

FIXTURE = json.loads((FIXTURES / "faithfulness_case.json").read_text())
CASE = EvalCase(
    trace_id="t1",
    span_id="s1",
    question=FIXTURE["question"],
    answer=FIXTURE["answer"],
    contexts=tuple(Context(**c) for c in FIXTURE["contexts"]),
)


def rubric(method: str | None = None, **options: Any) -> Rubric:
    return Rubric(
        name="faithfulness",
        version="1",
        scorer="faithfulness",
        method=method,
        pass_threshold=0.8,
        options=options,
    )


def reply(body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, str) or body is None else json.dumps(body)
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


async def test_default_is_one_call_with_fenced_contexts_and_schema(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    route = api.post("/chat/completions").mock(return_value=reply(FIXTURE["judge_reply"]))

    result = await run_scorer(CASE, rubric(), Clients(judge=judge))

    assert route.call_count == 1
    assert result.status is Status.OK
    assert result.value == pytest.approx(3 / 5)
    assert result.label == "fail" and result.passed is False
    assert result.method == "judge"
    assert result.usage.calls == 1 and result.usage.input_tokens == 120
    body = sent(route)
    assert body["response_format"]["json_schema"]["name"] == "FaithfulnessReply"
    assert "claims" in body["response_format"]["json_schema"]["schema"]["properties"]
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert DATA_RULES in system
    # Every document is fenced with its number; the answer and question are fenced too.
    for i, ctx in enumerate(CASE.contexts, 1):
        assert 'kind="context"' in user and f'id="{i}">\n{ctx.text}\n</data nonce=' in user
    assert user.count('<data kind="answer"') == 1 and user.count('<data kind="question"') == 1
    claims = result.details["claims"]
    assert [c["verdict"] for c in claims].count("supported") == 3
    # Document numbers are mapped back to the trace's document ids.
    assert claims[3]["context_ids"] == ["kb-security#4"]
    assert result.details["counts"] == {"supported": 3, "contradicted": 1, "not_found": 1}
    assert "SSO" in result.explanation


async def test_answer_without_claims_scores_one_with_label(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    api.post("/chat/completions").mock(
        return_value=reply({"claims": [], "no_factual_claims": True})
    )
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert result.status is Status.OK
    assert (result.value, result.label, result.passed) == (1.0, "no_claims", True)


async def test_answer_without_claims_can_be_skipped(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    api.post("/chat/completions").mock(
        return_value=reply({"claims": [], "no_factual_claims": True})
    )
    result = await run_scorer(CASE, rubric(no_claims="skip"), Clients(judge=judge))
    assert result.status is Status.SKIPPED and result.value is None
    assert result.usage.calls == 1


async def test_empty_claims_without_flag_is_reasked(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    route = api.post("/chat/completions").mock(
        side_effect=[reply({"claims": []}), reply(FIXTURE["judge_reply"])]
    )
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert route.call_count == 2
    assert result.status is Status.OK and result.value == pytest.approx(0.6)
    reask = sent(route, 1)["messages"]
    assert "no_factual_claims" in reask[-1]["content"]
    assert result.usage.calls == 2


@pytest.mark.parametrize(
    ("first", "kwargs"),
    [
        ("not json {", {}),
        (json.dumps({"claims": [{"claim": "x", "verdict": "maybe"}]}), {}),
        (None, {"refusal": "I can't help with that."}),
        ('{"claims": [{"claim": "The Pro', {"finish_reason": "length"}),
        (json.dumps({"claims": []}), {}),
    ],
    ids=["invalid-json", "schema-violation", "refusal", "truncated", "empty-claims"],
)
async def test_malformed_output_is_reasked_once_then_an_error_with_raw_output(
    judge: JudgeClient, api: respx.MockRouter, first: str | None, kwargs: dict[str, Any]
) -> None:
    route = api.post("/chat/completions").mock(return_value=reply(first, **kwargs))
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert route.call_count == 2
    assert result.status is Status.ERROR and result.value is None and result.passed is None
    assert result.details.get("raw_output") == first
    assert result.usage.calls == 2 and result.usage.input_tokens == 240


async def test_judge_server_error_is_an_error_score(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    api.post("/chat/completions").mock(return_value=httpx.Response(503, json={"error": "down"}))
    result = await run_scorer(CASE, rubric(), Clients(judge=judge))
    assert result.status is Status.ERROR and "503" in result.explanation


async def test_two_step_extracts_then_verifies_all_claims_in_one_call(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    claims = ["The Pro plan costs $20 per user per month.", "The Pro plan includes SSO."]
    checks = [
        {"context_ids": [1], "reason": "doc 1", "verdict": "supported"},
        {"context_ids": [3], "reason": "Enterprise only", "verdict": "contradicted"},
    ]
    route = api.post("/chat/completions").mock(
        side_effect=[
            reply({"claims": claims, "no_factual_claims": False}),
            reply({"checks": checks[:1]}),  # one check short: re-asked
            reply({"checks": checks}),
        ]
    )
    result = await run_scorer(CASE, rubric("two_step"), Clients(judge=judge))
    assert route.call_count == 3
    assert result.status is Status.OK and result.value == 0.5 and result.method == "two_step"
    assert result.usage.calls == 3
    extract, verify = sent(route, 0), sent(route, 1)
    assert extract["response_format"]["json_schema"]["name"] == "ClaimList"
    assert 'kind="context"' not in extract["messages"][1]["content"]
    schema = verify["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["checks"]["minItems"] == 2
    assert "1. The Pro plan costs $20" in verify["messages"][1]["content"]
    assert result.details["claims"][1] == {
        "claim": claims[1],
        "verdict": "contradicted",
        "context_ids": ["kb-security#4"],
        "reason": "Enterprise only",
    }


async def test_two_step_error_in_verify_keeps_both_steps_usage(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    api.post("/chat/completions").mock(
        side_effect=[reply({"claims": ["a"]}), reply("nope"), reply("still nope")]
    )
    result = await run_scorer(CASE, rubric("two_step"), Clients(judge=judge))
    assert result.status is Status.ERROR
    assert result.details["step"] == "verify" and result.details["raw_output"] == "still nope"
    assert result.usage.calls == 3


def test_invalid_option_is_refused_with_the_rubric() -> None:
    # Validated when the rubric is built (judges/options.py), not at every evaluation.
    with pytest.raises(
        ValidationError, match=r"options\.no_claims: must be one of 'pass' or 'skip'"
    ):
        rubric(no_claims="maybe")


def test_value_arithmetic() -> None:
    assert faithfulness_value([]) is None
    assert faithfulness_value(["supported", "not_found"]) == 0.5
    assert faithfulness_value(["contradicted"]) == 0.0


# --- local and cascade: the local scorer is real, only the judge is mocked --------------

GROUNDED = EvalCase(
    trace_id="t2",
    span_id="s2",
    question=CASE.question,
    contexts=CASE.contexts,
    answer="The Pro plan costs $20 per user per month, billed annually. "
    "Pro includes unlimited projects, 100 GB of storage and priority email support.",
)
INVENTED = EvalCase(
    trace_id="t3",
    span_id="s3",
    question=CASE.question,
    contexts=CASE.contexts,
    answer="The Pro plan costs $45 per month through Stripe Billing. "
    "It ships with a dedicated Oracle database cluster in Frankfurt.",
)


async def test_local_needs_no_judge() -> None:
    pytest.importorskip("judges.scorers.local")
    result = await run_scorer(GROUNDED, rubric("local"), Clients())
    assert result.status is Status.OK and result.value is not None


async def test_cascade_keeps_a_certified_local_pass_without_calling_the_judge(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    pytest.importorskip("judges.scorers.local")
    route = api.post("/chat/completions").mock(return_value=reply(FIXTURE["judge_reply"]))
    cert = CertifiedThreshold("cert-1", 0.5, 0.05, 0.1)

    async def certified(rubric_name: str, stratum: str) -> CascadeRoute:
        return CascadeRoute(certification=cert, audit_rate=0.1, cluster="c")

    clients = Clients(judge=judge, cascade_route=certified)
    result = await run_scorer(GROUNDED, rubric("cascade"), clients)
    assert route.call_count == 0
    assert result.method == "cascade" and result.status is Status.OK and result.passed is True
    trail = result.details["cascade"]
    assert trail["decided_by"] == "local_certified" and trail["certification"] == "cert-1"
    # Without a certification the same answer goes to the judge (cold start).
    cold = await run_scorer(GROUNDED, rubric("cascade"), Clients(judge=judge))
    assert route.call_count == 1 and cold.details["cascade"]["decided_by"] == "judge"


async def test_cascade_escalates_a_low_local_score_to_the_judge(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    pytest.importorskip("judges.scorers.local")
    route = api.post("/chat/completions").mock(return_value=reply(FIXTURE["judge_reply"]))
    result = await run_scorer(INVENTED, rubric("cascade"), Clients(judge=judge))
    assert route.call_count == 1
    assert result.method == "cascade" and result.value == pytest.approx(0.6)
    trail = result.details["cascade"]
    assert trail["decided_by"] == "judge" and "hard evidence" in trail["reason"]
    assert trail["local_value"] < 0.8


README_CASE = EvalCase(
    trace_id="t4",
    span_id="s4",
    question="What does the enterprise plan cost?",
    contexts=(Context("doc-7", "Enterprise: $50,000 per year."),),
    answer="It costs $5,000 per year.",
)


def shipped_faithfulness() -> Rubric:
    from evaluator.config.rubrics import load_rubrics
    from evaluator.config.settings import SHIPPED_RUBRICS_DIR

    rubric = load_rubrics(SHIPPED_RUBRICS_DIR).by_name("faithfulness")
    assert rubric is not None and rubric.resolved_method == "cascade"
    return rubric


async def test_shipped_rubric_fails_the_readme_example_without_a_judge() -> None:
    pytest.importorskip("judges.scorers.local")
    result = await run_scorer(README_CASE, shipped_faithfulness(), Clients())
    assert result.status is Status.OK and result.passed is False
    assert result.details["hard_evidence"] is True
    # Without a judge the local verdict is advisory, never presented as certified.
    assert result.details["cascade"]["decided_by"] == "local_advisory"
    assert result.explanation.startswith("advisory")


async def test_cascade_asks_the_judge_when_a_sentence_carries_a_contradicted_value(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    pytest.importorskip("judges.scorers.local")
    route = api.post("/chat/completions").mock(return_value=reply(FIXTURE["judge_reply"]))
    for case in (
        README_CASE,
        dataclasses.replace(
            README_CASE,
            contexts=(Context("p", "Team plan: $49 per month, up to 10 seats."),),
            answer="The Team plan is $149 per month and comes with a free iPad.",
        ),
    ):
        result = await run_scorer(case, shipped_faithfulness(), Clients(judge=judge))
        trail = result.details["cascade"]
        assert trail["decided_by"] == "judge" and trail["reason"].startswith("hard evidence")
    assert route.call_count == 2


async def test_cascade_escalates_an_input_the_local_method_refuses(
    judge: JudgeClient, api: respx.MockRouter
) -> None:
    pytest.importorskip("judges.scorers.local")
    from judges.scorers.local import MAX_ANSWER_CHARS

    route = api.post("/chat/completions").mock(return_value=reply(FIXTURE["judge_reply"]))
    big = dataclasses.replace(GROUNDED, answer=GROUNDED.answer * (MAX_ANSWER_CHARS // 100))
    result = await run_scorer(big, shipped_faithfulness(), Clients(judge=judge))
    assert route.call_count == 1
    assert "too large" in result.details["cascade"]["reason"]
