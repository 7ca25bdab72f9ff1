"""method = "combined": faithfulness, answer and context relevance of one case in ONE call.

Each of the three rubrics still produces its own Score (value, pass mark, explanation,
details) from its part of the shared reply. The first of them to run starts the call through
`Clients.shared` (judges.memo) and the others await the same result, so the pipeline needs
no change and may run them concurrently or in turn.

Cost is counted once: the rubric that started the call carries its whole usage (calls,
tokens, cost); the others record zero and name that rubric in `details.combined.usage_on`.
A split by thirds would under-count a trace that sampled only some of the three rubrics.

A judge failure (after the client's one re-ask of a malformed reply) is shared too: every
rubric records the same cause as an error Score. `JudgeDeferred` reaches every rubric, so
the job is deferred and the memo forgets the failed call, so the retry asks again.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Hashable
from typing import Any

from judges.errors import JudgeError, judge_failure
from judges.llm.client import JudgeClient, JudgeReply
from judges.memo import Shared
from judges.rubric import Rubric
from judges.scorers.combined_prompts import (
    PROMPT_VERSION,
    CombinedReply,
    combined_schema,
    render_combined,
)
from judges.scorers.faithfulness import build_score
from judges.scorers.relevance import answer_score, judged_contexts_score, score_answer_judge
from judges.types import Clients, EvalCase, Score, Usage

METHOD = "combined"
PARTS = frozenset({"faithfulness", "answer_relevance", "context_relevance"})


def case_digest(case: EvalCase) -> str:
    """What the combined prompt shows of the case, hashed: the same ids with other content
    (a re-ingested trace) must not be served an old reply."""
    h = hashlib.blake2b(digest_size=16)
    for part in (case.question, case.answer, *(f"{c.id}\0{c.text}" for c in case.contexts)):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0\1")
    return h.hexdigest()


def shared_key(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> Hashable:
    """Case identity and content, judge identity and settings, prompt version.

    Rubric versions are not part of it: they do not change what is asked (pass marks and the
    no-claims policy apply to the reply afterwards), and each rubric only knows its own.
    """
    return (
        METHOD,
        PROMPT_VERSION,
        case.trace_id,
        case.span_id,
        case_digest(case),
        judge.base_url,
        rubric.judge.model or judge.model,
        rubric.judge.temperature,
    )


async def _shared_reply(
    case: EvalCase, rubric: Rubric, clients: Clients, judge: JudgeClient
) -> Shared:
    async def call() -> JudgeReply[Any] | JudgeError:
        try:
            return await judge.complete(
                render_combined(case),
                combined_schema(len(case.contexts)),
                model=rubric.judge.model,
                temperature=rubric.judge.temperature,
            )
        except JudgeError as exc:
            return exc  # an answer every part records, not a reason to ask again per part

    return await clients.shared.get(
        shared_key(case, rubric, judge),
        part=rubric.scorer,
        parts=PARTS,
        issuer=rubric.name,
        call=call,
    )


def _cost(shared: Shared, usage: Usage) -> tuple[Usage, dict[str, Any]]:
    trail = {"call": "issued" if shared.issued else "shared", "usage_on": shared.issuer}
    return (usage if shared.issued else Usage()), trail


Build = Callable[[CombinedReply, Usage, str], Score]


async def _score(case: EvalCase, rubric: Rubric, clients: Clients, build: Build) -> Score:
    judge = clients.judge
    assert judge is not None  # the registry's precheck: combined needs a judge
    shared = await _shared_reply(case, rubric, clients, judge)
    outcome = shared.value
    if isinstance(outcome, JudgeError):
        usage, trail = _cost(shared, outcome.usage)
        model = rubric.judge.model or judge.model
        return judge_failure(
            outcome, method=METHOD, judge_model=model, details={"combined": trail}, usage=usage
        )
    usage, trail = _cost(shared, outcome.usage)
    score: Score = build(outcome.parsed, usage, outcome.model)
    return dataclasses.replace(score, details={**score.details, "combined": trail})


async def score_faithfulness_combined(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    def build(parsed: CombinedReply, usage: Usage, model: str) -> Score:
        return build_score(
            parsed.claims, case, rubric, method=METHOD, judge_model=model, usage=usage
        )

    return await _score(case, rubric, clients, build)


async def score_answer_combined(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    if not case.contexts:
        # Nothing to share with (the other two parts skip without documents): ask alone.
        judge = clients.judge
        assert judge is not None  # the registry's precheck: combined needs a judge
        alone = await score_answer_judge(case, rubric.model_copy(update={"method": "judge"}), judge)
        return dataclasses.replace(
            alone, details={**alone.details, "combined": {"call": "alone: no documents"}}
        )

    def build(parsed: CombinedReply, usage: Usage, model: str) -> Score:
        return answer_score(parsed.answer_relevance, rubric, METHOD, judge_model=model, usage=usage)

    return await _score(case, rubric, clients, build)


async def score_contexts_combined(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    def build(parsed: CombinedReply, usage: Usage, model: str) -> Score:
        return judged_contexts_score(
            parsed.documents, case, rubric, METHOD, judge_model=model, usage=usage
        )

    return await _score(case, rubric, clients, build)
