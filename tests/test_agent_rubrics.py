"""Agent rubrics on execute_tool spans: the local tool-use checks, tool selection against a
respx-mocked judge, task completion's prompt, and the demo's agent traces end to end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx

from evaluator.cli.demo import AGENT_TRACES
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import SHIPPED_RUBRICS_DIR
from evaluator.traces.cases import build_case
from evaluator.traces.model import parse_trace
from judges.llm.client import JudgeClient
from judges.scorers.agent import tool_problems
from judges.scorers.llm_rubric import render
from judges.scorers.registry import run_scorer
from judges.types import Clients, EvalCase, Status, ToolCall
from tests.conftest import JUDGE_URL, chat_completion

SHIPPED = load_rubrics(SHIPPED_RUBRICS_DIR)


def _demo_cases() -> dict[str, EvalCase]:
    lines = Path(AGENT_TRACES).read_text().splitlines()
    return {c.trace_id: c for c in (build_case(parse_trace(json.loads(x))) for x in lines)}


def test_tool_calls_are_read_from_execute_tool_spans_in_start_order() -> None:
    case = _demo_cases()["agent-02"]
    assert [c.name for c in case.tool_calls] == ["get_order", "refund", "refund"]
    assert [c.error for c in case.tool_calls] == [False, True, False]
    assert json.loads(case.tool_calls[0].arguments) == {"id": "A-1009"}
    assert case.answered_at_s is not None and case.tool_definitions[0]["name"] == "get_order"


@pytest.mark.parametrize(
    ("trace_id", "kinds"),
    [
        ("agent-00", []),
        ("agent-01", ["repeated", "repeated"]),
        ("agent-02", ["failed"]),  # a retry after a failure is not a repeat of a success
        ("agent-03", ["after_answer", "after_answer"]),  # the first result held the answer
        ("agent-05", ["failed"]),
    ],
)
def test_tool_problems_on_the_demo_runs(trace_id: str, kinds: list[str]) -> None:
    case = _demo_cases()[trace_id]
    found = tool_problems(
        case.tool_calls, answer=case.answer, answered_at_s=case.answered_at_s, max_calls=20
    )
    assert [p.kind for p in found] == kinds


def test_calls_past_the_budget_and_after_the_final_answer() -> None:
    calls = tuple(ToolCall("search", json.dumps({"q": i}), start_s=float(i)) for i in range(5))
    over = tool_problems(calls, answer="", answered_at_s=None, max_calls=3)
    assert [(p.index, p.kind) for p in over] == [(3, "over_budget"), (4, "over_budget")]
    late = tool_problems(calls, answer="", answered_at_s=2.5, max_calls=10)
    assert [(p.index, p.kind) for p in late] == [(3, "after_answer"), (4, "after_answer")]


async def test_tool_use_scores_locally_and_skips_runs_without_tools() -> None:
    rubric = SHIPPED.by_name("tool_use")
    assert rubric is not None
    cases = _demo_cases()
    looped = await run_scorer(cases["agent-01"], rubric, Clients())
    assert looped.status is Status.OK and looped.passed is False
    assert looped.value == pytest.approx(1 / 3) and looped.details["repeated"] == 2
    clean = await run_scorer(cases["agent-00"], rubric, Clients())
    assert clean.value == 1.0 and clean.passed is True
    no_tools = EvalCase(trace_id="t", span_id="s", question="q", answer="a")
    skipped = await run_scorer(no_tools, rubric, Clients())
    assert skipped.status is Status.SKIPPED and "no tool calls" in skipped.explanation


@pytest.fixture
async def judge() -> AsyncIterator[JudgeClient]:
    client = JudgeClient(base_url=JUDGE_URL, model="judge-model", max_retries=0)
    yield client
    await client.aclose()


async def test_tool_selection_asks_the_judge_once_per_run(judge: JudgeClient) -> None:
    rubric = SHIPPED.by_name("tool_selection")
    assert rubric is not None
    case = _demo_cases()["agent-03"]
    verdicts = {"calls": [
        {"call": 1, "needed": True, "right_tool": True, "reason": "kb search answers it"},
        {"call": 2, "needed": False, "right_tool": True, "reason": "same search again"},
        {"call": 3, "needed": False, "right_tool": False, "reason": "unrelated order"},
    ]}  # fmt: skip
    with respx.mock(base_url=JUDGE_URL) as api:
        route = api.post("/chat/completions").mock(
            return_value=httpx.Response(200, json=chat_completion(json.dumps(verdicts)))
        )
        score = await run_scorer(case, rubric, Clients(judge=judge))
    assert route.call_count == 1
    sent = json.loads(route.calls[0].request.content)["messages"][1]["content"]
    assert "search_kb" in sent and "get_order" in sent and "Reset password" in sent
    assert score.status is Status.OK and score.value == pytest.approx(1 / 3)
    assert score.passed is False


async def test_tool_selection_missing_verdicts_are_an_error_not_a_guess(
    judge: JudgeClient,
) -> None:
    rubric = SHIPPED.by_name("tool_selection")
    assert rubric is not None
    reply = {"calls": [{"call": 1, "needed": True, "right_tool": True, "reason": "ok"}]}
    with respx.mock(base_url=JUDGE_URL) as api:
        api.post("/chat/completions").mock(
            return_value=httpx.Response(200, json=chat_completion(json.dumps(reply)))
        )
        score = await run_scorer(_demo_cases()["agent-03"], rubric, Clients(judge=judge))
    assert score.status is Status.ERROR and "[2, 3]" in score.explanation


def test_task_completion_prompt_carries_the_tool_calls_and_results() -> None:
    rubric = SHIPPED.by_name("task_completion")
    assert rubric is not None
    messages = render(_demo_cases()["agent-05"], rubric)
    user = messages[1]["content"]
    assert "refund" in user and "order not found" in user and "ERROR" in user
    assert "Your refund for A-2000 is on its way." in user
