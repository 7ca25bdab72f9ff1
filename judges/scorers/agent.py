"""Agent rubrics over `execute_tool` spans (OpenTelemetry GenAI conventions).

* ``tool_use`` (method ``local``, no judge): the run's mechanics — repeated identical calls
  (same tool, same arguments, after one that succeeded), failed calls, more calls than
  ``options.max_calls``, and calls made after the answer was available (after the final
  answer was generated, or after a tool result that already held the whole answer).
  score = 1 - problem calls / calls.
* ``tool_selection`` (method ``judge``): was each call needed, and the right tool, given the
  user's request and the tools offered? One call; score = share of calls judged both.

Task completion of an agent run is an ``llm_rubric`` with ``inputs = ["question",
"tool_calls", "answer"]`` (the shipped ``task_completion`` rubric).

    >>> from judges.types import ToolCall
    >>> calls = (ToolCall("search", '{"q": "x"}'), ToolCall("search", '{"q": "x"}'))
    >>> [p.kind for p in tool_problems(calls, answer="", answered_at_s=None, max_calls=10)]
    ['repeated']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from judges.errors import JudgeError, judge_failure
from judges.llm.client import JudgeClient
from judges.prompts import DATA_RULES, fence, numbered, render_tool_calls
from judges.rubric import Rubric
from judges.text import content_words
from judges.types import Clients, EvalCase, Score, Status, ToolCall

IMPLEMENTATION_VERSION = "1"
ProblemKind = Literal["repeated", "failed", "over_budget", "after_answer"]
_ANSWER_COVERED = 0.9  # share of the answer's content words a tool result must hold


@dataclass(frozen=True)
class ToolProblem:
    index: int  # 0-based position of the call
    kind: ProblemKind
    why: str


def _key(call: ToolCall) -> tuple[str, str]:
    return call.name, " ".join(call.arguments.split())


def _answer_in(result: str, answer_words: set[str]) -> bool:
    if not answer_words or not result:
        return False
    return len(answer_words & set(content_words(result))) >= _ANSWER_COVERED * len(answer_words)


def tool_problems(
    calls: Sequence[ToolCall], *, answer: str, answered_at_s: float | None, max_calls: int
) -> list[ToolProblem]:
    """Every problem call, at most one per call (the first rule that applies), pure."""
    problems: list[ToolProblem] = []
    seen: dict[tuple[str, str], int] = {}
    answer_words = set(content_words(answer))
    covered_at: int | None = None
    for i, call in enumerate(calls):
        key = _key(call)
        late = (
            answered_at_s is not None and call.start_s is not None and call.start_s > answered_at_s
        )
        why: tuple[ProblemKind, str] | None = None
        if call.error:
            why = ("failed", f"{call.name} returned an error")
        elif key in seen:
            why = ("repeated", f"same {call.name} call as #{seen[key] + 1}")
        elif covered_at is not None:
            why = ("after_answer", f"{call.name} after #{covered_at + 1} already held the answer")
        elif late:
            why = ("after_answer", f"{call.name} after the final answer")
        elif i >= max_calls:
            why = ("over_budget", f"call {i + 1} > max_calls {max_calls}")
        if why is not None:
            problems.append(ToolProblem(i, *why))
        if not call.error:  # retrying a failed call is recovery, not a loop
            seen.setdefault(key, i)
        if covered_at is None and not call.error and _answer_in(call.result, answer_words):
            covered_at = i
    return problems


async def score_tool_use(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    max_calls: int = rubric.typed_options.max_calls
    calls = case.tool_calls
    problems = tool_problems(
        calls, answer=case.answer, answered_at_s=case.answered_at_s, max_calls=max_calls
    )
    value = 1.0 - len(problems) / len(calls)
    passed = value >= rubric.pass_threshold
    kinds = ("repeated", "failed", "over_budget", "after_answer")
    counts = {k: sum(p.kind == k for p in problems) for k in kinds}
    summary = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
    return Score(
        status=Status.OK,
        value=value,
        label="pass" if passed else "fail",
        passed=passed,
        explanation=f"{len(calls)} tool calls: " + (summary or "no problem found"),
        details={
            "calls": len(calls),
            "problems": [{"call": p.index + 1, "kind": p.kind, "why": p.why} for p in problems],
            **counts,
            "max_calls": max_calls,
        },
        method="local",
    )


class CallVerdict(BaseModel):
    call: int = Field(ge=1, description="1-based number of the tool call")
    needed: bool
    right_tool: bool
    reason: str


class SelectionReply(BaseModel):
    calls: list[CallVerdict]


def render_selection(case: EvalCase) -> list[dict[str, str]]:
    system = (
        "You review the tool calls an AI agent made for one user request.\n"
        f"{DATA_RULES}\n\n"
        "For every call decide: was it needed to serve the request (needed), and was this "
        "the right tool among those offered, with sensible arguments (right_tool)? Reply "
        'with JSON: {"calls": [{"call": <number>, "needed": true|false, '
        '"right_tool": true|false, "reason": "..."}]} with one entry per call.'
    )
    tools = (
        numbered(
            [f"{d.get('name', '?')}: {d.get('description', '')}" for d in case.tool_definitions]
        )
        or "(not recorded)"
    )
    user = "\n\n".join(
        [
            "User request:\n" + fence("question", case.question),
            "Tools offered:\n" + fence("tools", tools),
            "Tool calls, in order:\n" + fence("tool_calls", render_tool_calls(case.tool_calls)),
            "Final answer:\n" + fence("answer", case.answer),
        ]
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


async def score_tool_selection(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> Score:
    try:
        reply = await judge.complete(
            render_selection(case),
            SelectionReply,
            model=rubric.judge.model,
            temperature=rubric.judge.temperature,
        )
    except JudgeError as exc:
        return judge_failure(exc, method="judge", judge_model=rubric.judge.model or judge.model)
    verdicts: dict[int, CallVerdict] = {v.call: v for v in reply.parsed.calls}
    n = len(case.tool_calls)
    missing = [i for i in range(1, n + 1) if i not in verdicts]
    if missing:  # a verdict we did not get is not a verdict we may invent
        return Score.error(
            f"the judge returned no verdict for tool call(s) {missing} of {n}",
            method="judge",
            details={"raw": reply.raw[:2000]},
            judge_model=reply.model,
            usage=reply.usage,
        )
    good = sum(verdicts[i].needed and verdicts[i].right_tool for i in range(1, n + 1))
    value = good / n
    passed = value >= rubric.pass_threshold
    return Score(
        status=Status.OK,
        value=value,
        label="pass" if passed else "fail",
        passed=passed,
        explanation=f"{good} of {n} tool calls were needed and the right tool",
        details={"calls": [verdicts[i].model_dump() for i in range(1, n + 1)]},
        method="judge",
        judge_model=reply.model,
        usage=reply.usage,
    )
