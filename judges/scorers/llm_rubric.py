"""G-Eval-style scorer: a rubric written entirely in TOML (criteria, steps, scale)."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, Field, create_model

from judges.errors import JudgeError, judge_failure
from judges.llm.client import JudgeClient, JudgeReply
from judges.prompts import DATA_RULES, fence, numbered, render_contexts, render_tool_calls
from judges.rubric import Rubric, Scale
from judges.types import EvalCase, Score, Status

# Bump when a change here can change a verdict: it starts a new evaluator epoch.
IMPLEMENTATION_VERSION = "1"


@cache
def verdict_schema(scale: Scale) -> type[BaseModel]:
    """A reply model whose score must lie on the rubric's scale (checked, not trusted)."""
    return create_model(
        "RubricVerdict",
        reasoning=(str, Field(description="Short justification, written before the score.")),
        score=(int, Field(ge=scale.min, le=scale.max)),
    )


def render(case: EvalCase, rubric: Rubric) -> list[dict[str, str]]:
    spec = rubric.llm_rubric
    assert spec is not None  # guaranteed by Rubric validation
    steps = numbered(spec.steps) if spec.steps else "Judge the criteria directly."
    system = (
        "You are a strict evaluator of an AI application's output.\n"
        f"{DATA_RULES}\n\n"
        f"Criteria:\n{spec.criteria}\n\nEvaluation steps:\n{steps}\n\n"
        f"Score on an integer scale from {rubric.scale.min} (worst) to {rubric.scale.max} (best). "
        'Reply with JSON: {"reasoning": "...", "score": <integer>}.'
    )
    blocks = []
    if "question" in spec.inputs:
        blocks.append("Question:\n" + fence("question", case.question))
    if "contexts" in spec.inputs:
        blocks.append("Retrieved documents:\n" + (render_contexts(case.contexts) or "(none)"))
    if "tool_calls" in spec.inputs:
        calls = render_tool_calls(case.tool_calls) or "(none)"
        blocks.append("Tool calls, in order:\n" + fence("tool_calls", calls))
    if "answer" in spec.inputs:
        blocks.append("Answer to evaluate:\n" + fence("answer", case.answer))
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(blocks)}]


async def score_llm_rubric(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> Score:
    try:
        reply = await judge.complete(
            render(case, rubric),
            verdict_schema(rubric.scale),
            model=rubric.judge.model,
            temperature=rubric.judge.temperature,
        )
    except JudgeError as exc:
        return judge_failure(exc, method="judge", judge_model=rubric.judge.model or judge.model)
    return score_from_reply(rubric, reply)


def batch_request(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> dict[str, Any]:
    """The same call as `score_llm_rubric`'s, as a /chat/completions body to send in a batch."""
    return judge.request_body(
        render(case, rubric),
        verdict_schema(rubric.scale),
        model=rubric.judge.model,
        temperature=rubric.judge.temperature,
        max_tokens=judge.reply_budget(verdict_schema(rubric.scale), rubric.judge.max_output_tokens),
    )


def score_from_reply(rubric: Rubric, reply: JudgeReply[Any]) -> Score:
    """The Score of a validated judge reply, whether it came online or from a batch."""
    raw_score = reply.parsed.score
    value = rubric.scale.normalise(raw_score)
    passed = value >= rubric.pass_threshold
    return Score(
        status=Status.OK,
        value=value,
        label="pass" if passed else "fail",
        passed=passed,
        explanation=reply.parsed.reasoning,
        details={"raw_score": raw_score, "scale": [rubric.scale.min, rubric.scale.max]},
        method="judge",
        judge_model=reply.model,
        usage=reply.usage,
    )
