"""Dispatch a rubric to its scorer: (scorer kind, method) → coroutine returning a Score.

Checks what every scorer needs up front (an answer, contexts, a judge) so that a case that
cannot be scored becomes a `skipped`/`error` Score with the reason, not an exception.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from judges.provenance import attributing
from judges.rubric import Rubric
from judges.types import Clients, EvalCase, Score

ScorerFn = Callable[[EvalCase, Rubric, Clients], Awaitable[Score]]
_NEEDS_CONTEXTS = frozenset({"faithfulness", "context_relevance"})
_NEEDS_TOOL_CALLS = frozenset({"tool_use", "tool_selection"})


async def _faithfulness(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    from judges.scorers import faithfulness

    return await faithfulness.score(case, rubric, clients)


async def _answer_relevance(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    from judges.scorers import relevance

    return await relevance.score_answer(case, rubric, clients)


async def _context_relevance(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    from judges.scorers import relevance

    return await relevance.score_contexts(case, rubric, clients)


async def _self_consistency(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    from judges.scorers import self_consistency

    return await self_consistency.score(case, rubric, clients)


async def _llm_rubric(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    from judges.scorers.llm_rubric import score_llm_rubric

    assert clients.judge is not None  # checked in run_scorer
    return await score_llm_rubric(case, rubric, clients.judge)


async def _tool_use(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    from judges.scorers.agent import score_tool_use

    return await score_tool_use(case, rubric, clients)


async def _tool_selection(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    from judges.scorers.agent import score_tool_selection

    return await score_tool_selection(case, rubric, clients)


SCORERS: dict[str, ScorerFn] = {
    "llm_rubric": _llm_rubric,
    "faithfulness": _faithfulness,
    "answer_relevance": _answer_relevance,
    "context_relevance": _context_relevance,
    "self_consistency": _self_consistency,
    "tool_use": _tool_use,
    "tool_selection": _tool_selection,
}


def _needs_tool_calls(rubric: Rubric) -> bool:
    spec = rubric.llm_rubric
    return rubric.scorer in _NEEDS_TOOL_CALLS or (spec is not None and "tool_calls" in spec.inputs)


def precheck(case: EvalCase, rubric: Rubric, clients: Clients) -> Score | None:
    """A Score explaining why the case cannot be scored by this rubric, or None."""
    method = rubric.resolved_method
    if not case.answer.strip():
        return Score.error("the evaluated span's answer is empty", method=method)
    if rubric.scorer in _NEEDS_CONTEXTS and not case.contexts:
        return Score.skipped(
            "trace has no retrieval documents (gen_ai.retrieval.documents) to check against",
            method=method,
        )
    if _needs_tool_calls(rubric) and not case.tool_calls:
        return Score.skipped("trace has no tool calls (execute_tool spans) to judge", method=method)
    if rubric.needs_judge and clients.judge is None:
        return Score.skipped(
            f"method {method!r} needs a judge and none is configured "
            "(set EVALUATOR_JUDGE__BASE_URL)",
            method=method,
        )
    return None


async def run_scorer(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """Score `case`; the Score carries its identity (the epoch's input) and, when a judge was
    asked, whether its replies came from the reply cache (`details.judge_cache`)."""
    from judges.scorers.identity import identity_for

    identity = identity_for(rubric, clients)
    with attributing(identity, max_output_tokens=rubric.judge.max_output_tokens) as calls:
        score = precheck(case, rubric, clients) or await SCORERS[rubric.scorer](
            case, rubric, clients
        )
    cache = {**calls.cache_details(), **calls.reply_details()}
    return dataclasses.replace(
        score,
        identity=identity,
        judge_model_reported=", ".join(calls.reported_models) or None,
        details={**score.details, **cache} if cache else score.details,
    )
