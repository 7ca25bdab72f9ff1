"""The (scorer, method) registry: for each, the coroutine that scores a case and what it needs.

One row per (scorer kind, method) in `REGISTRY`. Dispatch (`run_scorer`), the case check
(`precheck`), the verdict identity (`identity_for`) and every "does this rubric need a
judge / embeddings / ..." question the service asks (`needs`, `missing_needs`, `calls_judge`,
`escalates`) read it, so adding a method is one row here plus its name in `METHODS`
(judges/rubric.py), and no other place decides what it needs.

    >>> faithful = Rubric.model_validate({"name": "f", "version": "1", "scorer": "faithfulness"})
    >>> sorted(needs(faithful))
    ['contexts', 'judge']

A need is what the method cannot score without (the case is skipped, saying which); a use is
what it takes when it is there and does without otherwise: a cascade asks the judge only when
its local step is unsure (without one its verdicts are advisory), the local methods use an
embedder when one is loaded, self-consistency asks the generator only for missing samples.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from judges.errors import ScorerConfigError, config_failure
from judges.llm.client import JudgeClient
from judges.provenance import VerdictIdentity, attributing
from judges.rubric import METHODS, Rubric
from judges.scorers import (
    agent,
    combined,
    combined_prompts,
    faithfulness,
    llm_rubric,
    ragas_method,
    relevance,
    self_consistency,
)
from judges.scorers import faithfulness_prompts as fp
from judges.scorers.identity import Templates, TemplatesOf, verdict_identity
from judges.scorers.local_model import LOCAL_METHOD_VERSION
from judges.types import Clients, EvalCase, Score, ToolCall

ScorerFn = Callable[[EvalCase, Rubric, Clients], Awaitable[Score]]
JudgedFn = Callable[[EvalCase, Rubric, JudgeClient], Awaitable[Score]]
Need = Literal["judge", "embeddings", "generator", "contexts", "tool_calls"]
# Needs that a client provides (the rest are what a case must carry).
CLIENT_NEEDS: tuple[Need, ...] = ("judge", "embeddings", "generator")


@dataclass(frozen=True, slots=True)
class Method:
    """One (scorer, method): how it scores and what it needs.

    `templates` renders the prompts and reply schemas it sends a judge (hashed into the
    verdict identity). Two needs depend on the rubric (`needs`, `uses`): an llm_rubric whose
    inputs list tool_calls needs them, and the local faithfulness step uses embeddings only
    with options.local_embeddings = true.
    """

    score: ScorerFn
    templates: TemplatesOf
    needs: tuple[Need, ...] = ()
    uses: tuple[Need, ...] = ()


def implementation(scorer: str, method: str) -> str:
    """What the verdict identity names as the code: "<module>:<IMPLEMENTATION_VERSION>"
    (ragas_method's for ragas), plus the local method's version or ragas's release."""
    module = _IDENTITY_MODULES[scorer]
    code = ragas_method if method == "ragas" else module
    parts = [f"{module.__name__.rpartition('.')[2]}:{code.IMPLEMENTATION_VERSION}"]
    if method in ("local", "cascade"):
        parts.append(f"local:{LOCAL_METHOD_VERSION}")
    if method == "ragas":
        parts.append(f"ragas:{_ragas_release()}")
    return "+".join(parts)


@functools.cache
def _ragas_release() -> str:
    try:
        return importlib.metadata.version("ragas")
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _judged(fn: JudgedFn) -> ScorerFn:
    """A coroutine that takes the judge itself: `precheck` has made sure there is one."""

    async def score(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
        assert clients.judge is not None  # "judge" is in the row's needs
        return await fn(case, rubric, clients.judge)

    return score


# --- what each method sends a judge (probe-rendered into the verdict identity) ------------


def _none(case: EvalCase, rubric: Rubric) -> Templates:
    return [], []  # ragas owns its prompts (its release stands in); local methods send none


def _llm_rubric(case: EvalCase, rubric: Rubric) -> Templates:
    return [llm_rubric.render(case, rubric)], [llm_rubric.verdict_schema(rubric.scale)]


def _faithfulness(case: EvalCase, rubric: Rubric) -> Templates:
    return [fp.render_judge(case)], [fp.FaithfulnessReply]


def _two_step(case: EvalCase, rubric: Rubric) -> Templates:
    prompts = [fp.render_extract(case), fp.render_verify(case, ["probe claim"])]
    return prompts, [fp.ClaimList, fp.verification_schema(1)]


def _answer(case: EvalCase, rubric: Rubric) -> Templates:
    return [relevance.render_answer(case)], [relevance.AnswerRelevanceReply]


def _contexts(case: EvalCase, rubric: Rubric) -> Templates:
    return [relevance.render_contexts_check(case)], [relevance.documents_schema(1)]


def _combined(case: EvalCase, rubric: Rubric) -> Templates:
    prompt = combined_prompts.render_combined(case)
    return [prompt], [combined_prompts.combined_schema(len(case.contexts))]


def _self_consistency(case: EvalCase, rubric: Rubric) -> Templates:
    check = self_consistency.render_check(["Probe sentence."], "probe sample")
    return [check], [self_consistency.verdicts_schema(1)]


def _tool_selection(case: EvalCase, rubric: Rubric) -> Templates:
    probe = dataclasses.replace(case, tool_calls=(ToolCall("probe_tool", "{}", "probe"),))
    return [agent.render_selection(probe)], [agent.SelectionReply]


# --- the registry ----------------------------------------------------------------------

# The module a scorer's verdict identity names (its IMPLEMENTATION_VERSION).
_IDENTITY_MODULES: dict[str, ModuleType] = {
    "llm_rubric": llm_rubric,
    "faithfulness": faithfulness,
    "answer_relevance": relevance,
    "context_relevance": relevance,
    "self_consistency": self_consistency,
    "tool_use": agent,
    "tool_selection": agent,
}
JUDGE: tuple[Need, ...] = ("judge",)
EMBEDDINGS: tuple[Need, ...] = ("embeddings",)
GENERATOR: tuple[Need, ...] = ("generator",)
CONTEXTS: tuple[Need, ...] = ("contexts",)
TOOL_CALLS: tuple[Need, ...] = ("tool_calls",)
# (scorer, method): Method(coroutine, templates, needs, uses)
REGISTRY: dict[tuple[str, str], Method] = {
    ("llm_rubric", "judge"): Method(_judged(llm_rubric.score_llm_rubric), _llm_rubric, JUDGE),
    ("faithfulness", "judge"): Method(
        _judged(faithfulness.score_judge), _faithfulness, JUDGE + CONTEXTS
    ),
    ("faithfulness", "local"): Method(faithfulness.score_local, _none, CONTEXTS, EMBEDDINGS),
    ("faithfulness", "cascade"): Method(
        faithfulness.score_cascade, _faithfulness, CONTEXTS, JUDGE + EMBEDDINGS
    ),
    ("faithfulness", "two_step"): Method(
        _judged(faithfulness.score_two_step), _two_step, JUDGE + CONTEXTS
    ),
    ("faithfulness", "ragas"): Method(
        _judged(ragas_method.score_faithfulness_ragas), _none, JUDGE + CONTEXTS
    ),
    ("faithfulness", "combined"): Method(
        combined.score_faithfulness_combined, _combined, JUDGE + CONTEXTS
    ),
    ("answer_relevance", "judge"): Method(_judged(relevance.score_answer_judge), _answer, JUDGE),
    ("answer_relevance", "local"): Method(relevance.score_answer_local, _none, (), EMBEDDINGS),
    ("answer_relevance", "ragas"): Method(
        ragas_method.score_answer_relevance_ragas, _none, JUDGE + EMBEDDINGS
    ),
    ("answer_relevance", "combined"): Method(combined.score_answer_combined, _combined, JUDGE),
    ("context_relevance", "judge"): Method(
        _judged(relevance.score_contexts_judge), _contexts, JUDGE + CONTEXTS
    ),
    ("context_relevance", "local"): Method(
        relevance.score_contexts_local, _none, CONTEXTS, EMBEDDINGS
    ),
    ("context_relevance", "combined"): Method(
        combined.score_contexts_combined, _combined, JUDGE + CONTEXTS
    ),
    ("self_consistency", "embeddings"): Method(
        self_consistency.score_embeddings, _none, EMBEDDINGS, GENERATOR
    ),
    ("self_consistency", "judge"): Method(
        self_consistency.score_judge, _self_consistency, JUDGE, GENERATOR
    ),
    ("tool_use", "local"): Method(agent.score_tool_use, _none, TOOL_CALLS),
    ("tool_selection", "judge"): Method(
        _judged(agent.score_tool_selection), _tool_selection, JUDGE + TOOL_CALLS
    ),
}
if set(REGISTRY) != {(s, m) for s, methods in METHODS.items() for m in methods}:
    raise RuntimeError("judges.rubric.METHODS and the scorer registry list different methods")


# --- what a rubric needs (the one place that says) ---------------------------------------


def method_of(rubric: Rubric) -> Method:
    return REGISTRY[(rubric.scorer, rubric.resolved_method)]


def needs(rubric: Rubric) -> frozenset[Need]:
    """What `rubric`'s method cannot score without."""
    spec = rubric.llm_rubric
    inputs: tuple[Need, ...] = ("tool_calls",) if spec and "tool_calls" in spec.inputs else ()
    return frozenset((*method_of(rubric).needs, *inputs))


def uses(rubric: Rubric) -> frozenset[Need]:
    """What `rubric`'s method takes when it is there and does without otherwise."""
    found = frozenset(method_of(rubric).uses)
    if rubric.scorer == "faithfulness" and rubric.options.get("local_embeddings") is not True:
        return found - {"embeddings"}  # opt-in: judges/scorers/faithfulness.py says why
    return found


def needs_judge(rubric: Rubric) -> bool:
    return "judge" in needs(rubric)


def calls_judge(rubric: Rubric) -> bool:
    """Whether `rubric` may ask a judge at all (a cascade when its local step is unsure)."""
    return "judge" in needs(rubric) | uses(rubric)


def escalates(rubric: Rubric) -> bool:
    """Asks the judge only when its local step is unsure (a cascade): a judge budget charges
    it when it escalates, and without a judge its verdicts are advisory."""
    return "judge" in uses(rubric)


def wants_embeddings(rubric: Rubric) -> bool:
    return "embeddings" in needs(rubric) | uses(rubric)


def missing_needs(rubric: Rubric, clients: Clients) -> list[Need]:
    """The clients `rubric` needs that `clients` lacks, in `CLIENT_NEEDS` order."""
    have = {"judge": clients.judge, "embeddings": clients.embedder, "generator": clients.generator}
    wanted = needs(rubric)
    return [n for n in CLIENT_NEEDS if n in wanted and have[n] is None]


_MISSING: dict[Need, str] = {
    "judge": "method {method!r} needs a judge and none is configured "
    "(set EVALUATOR_JUDGE__BASE_URL)",
    "embeddings": "method {method!r} needs embeddings and no local embedder is loaded: "
    "install the [embeddings] extra (pip install -e '.[embeddings]')",
    "generator": "method {method!r} needs a generator and none is configured ([generator])",
}


def precheck(case: EvalCase, rubric: Rubric, clients: Clients) -> Score | None:
    """A Score explaining why the case cannot be scored by this rubric, or None."""
    method = rubric.resolved_method
    wanted = needs(rubric)
    if not case.answer.strip():
        return Score.error("the evaluated span's answer is empty", method=method)
    if "contexts" in wanted and not case.contexts:
        return Score.skipped(
            "trace has no retrieval documents (gen_ai.retrieval.documents) to check against",
            method=method,
        )
    if "tool_calls" in wanted and not case.tool_calls:
        return Score.skipped("trace has no tool calls (execute_tool spans) to judge", method=method)
    missing = missing_needs(rubric, clients)
    if missing:
        return Score.skipped(_MISSING[missing[0]].format(method=method), method=method)
    return None


def identity_for(rubric: Rubric, clients: Clients) -> VerdictIdentity:
    """The identity of `rubric` run with `clients`; judge fields only when a judge decides."""
    key = (rubric.scorer, rubric.resolved_method)
    return verdict_identity(
        rubric,
        clients.judge if calls_judge(rubric) else None,
        implementation=implementation(*key),
        templates=REGISTRY[key].templates,
    )


async def run_scorer(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """Score `case`; the Score carries its identity (the epoch's input) and, when a judge was
    asked, whether its replies came from the reply cache (`details.judge_cache`)."""
    identity = identity_for(rubric, clients)
    with attributing(identity, max_output_tokens=rubric.judge.max_output_tokens) as calls:
        score = precheck(case, rubric, clients) or await _score(case, rubric, clients)
    cache = {**calls.cache_details(), **calls.reply_details()}
    return dataclasses.replace(
        score,
        identity=identity,
        judge_model_reported=", ".join(calls.reported_models) or None,
        details={**score.details, **cache} if cache else score.details,
    )


async def _score(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    try:
        return await method_of(rubric).score(case, rubric, clients)
    except ScorerConfigError as exc:  # e.g. an embedder that cannot load
        return config_failure(exc, method=rubric.resolved_method)
