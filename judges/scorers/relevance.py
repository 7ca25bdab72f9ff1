"""Answer relevance (does the answer address the question?) and context relevance (does each
retrieved document help answer it? — the precision of retrieval).

Answer relevance asks the judge for one label from a closed set, mapped to [0, 1]
(``ANSWER_VERDICTS``): an evasive or noncommittal answer ("it depends", "I cannot say") scores
0 like an off-topic one, because it does not address the question however polite it is.
Correctness is not judged here; faithfulness does that.

Context relevance sends ALL documents in one call and gets one yes/no per document back;
value = relevant / total. ``local`` compares each document with the question by embeddings
(max over the document's sentences) or, without an embedder, by the share of the question's
content words the document contains. The local thresholds are options, not calibrated truths.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, create_model, field_validator

from judges.errors import JudgeError, judge_failure
from judges.llm.client import JudgeClient, JudgeReply
from judges.prompts import DATA_RULES, case_blocks, chat
from judges.rubric import Rubric
from judges.scorers.local import score_answer_relevance_local
from judges.text import content_words, split_sentences
from judges.types import Clients, EvalCase, Score, Status

# Bump when a change here can change a verdict: it starts a new evaluator epoch.
IMPLEMENTATION_VERSION = "1"

if TYPE_CHECKING:
    from judges.llm.embedder import Embedder

AnswerVerdict = Literal["direct", "partial", "evasive", "off_topic"]
ANSWER_VERDICTS: dict[str, float] = {
    "direct": 1.0,
    "partial": 0.5,
    "evasive": 0.0,
    "off_topic": 0.0,
}

# Defaults for the local context check; override with options.relevance_threshold.
EMBEDDING_THRESHOLD = 0.35
LEXICAL_THRESHOLD = 0.5
_MAX_SENTENCES = 64  # per document: long documents are compared by their first sentences


class AnswerRelevanceReply(BaseModel):
    reason: str = Field(description="one sentence")
    verdict: AnswerVerdict


class DocumentVerdict(BaseModel):
    id: int
    reason: str = Field("", description="a few words")
    relevant: bool


class _DocumentVerdicts(BaseModel):
    documents: list[DocumentVerdict]

    @field_validator("documents")
    @classmethod
    def _each_once(cls, docs: list[DocumentVerdict]) -> list[DocumentVerdict]:
        if sorted(d.id for d in docs) != list(range(1, len(docs) + 1)):
            raise ValueError("give exactly one entry for each document number 1..n")
        return sorted(docs, key=lambda d: d.id)


@functools.lru_cache(maxsize=64)
def documents_schema(n_documents: int) -> type[_DocumentVerdicts]:
    """One verdict per document, no more, no fewer (a short list is re-asked).

    Cached: a new class per call would miss the client's schema cache every time (and grow it).
    """
    return create_model(
        "DocumentVerdicts",
        __base__=_DocumentVerdicts,
        documents=(list[DocumentVerdict], Field(min_length=n_documents, max_length=n_documents)),
    )


# --- prompts (pure) --------------------------------------------------------------------

ANSWER_VERDICT_RULES = (
    "Verdicts: direct = answers what was asked; partial = answers only part of it or mostly "
    "something else; evasive = refuses, hedges or stays noncommittal instead of answering; "
    "off_topic = about something else."
)


def render_answer(case: EvalCase) -> list[dict[str, str]]:
    system = (
        "You rate whether an AI answer addresses the user's question. Judge relevance only, "
        f"not correctness.\n{DATA_RULES}\n"
        f"{ANSWER_VERDICT_RULES}\n"
        'Reply with JSON: {"reason": str, "verdict": "direct"|"partial"|"evasive"|"off_topic"}.'
    )
    return chat(system, case_blocks(case, question=True, answer=True))


def render_contexts_check(case: EvalCase) -> list[dict[str, str]]:
    system = (
        "You rate retrieved documents: is each one useful for answering the question?\n"
        f"{DATA_RULES}\n"
        'Reply with JSON: {"documents": [{"id": document number, "reason": str, '
        '"relevant": bool}]}, one entry per document.'
    )
    return chat(system, case_blocks(case, question=True, documents=True))


# --- arithmetic (pure) -----------------------------------------------------------------


def precision(relevant: Sequence[bool]) -> float | None:
    return sum(relevant) / len(relevant) if relevant else None


def lexical_overlap(question: str, document: str) -> float:
    """Share of the question's content words that the document contains (0 if none)."""
    wanted = set(content_words(question))
    return len(wanted & set(content_words(document))) / len(wanted) if wanted else 0.0


def embedding_similarities(
    question_vec: np.ndarray, sentence_vecs: Sequence[np.ndarray]
) -> list[float]:
    """Per document: max cosine of the question to any of its sentences (rows unit-length)."""
    return [float(np.max(vecs @ question_vec)) if len(vecs) else 0.0 for vecs in sentence_vecs]


def _passed(value: float, rubric: Rubric) -> tuple[bool, str]:
    passed = value >= rubric.pass_threshold
    return passed, "pass" if passed else "fail"


# --- answer relevance ------------------------------------------------------------------


async def score_answer_judge(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> Score:
    """Does the answer address the question? One judge call."""
    try:
        reply: JudgeReply[AnswerRelevanceReply] = await judge.complete(
            render_answer(case),
            AnswerRelevanceReply,
            model=rubric.judge.model,
            temperature=rubric.judge.temperature,
        )
    except JudgeError as exc:
        return _error(exc, "judge", rubric.judge.model or judge.model)
    return answer_score(reply.parsed, rubric, "judge", judge_model=reply.model, usage=reply.usage)


async def score_answer_local(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """Answer relevance without a judge (judges.scorers.local), off the event loop."""
    return await asyncio.to_thread(
        score_answer_relevance_local, case, clients.embedder, threshold=rubric.pass_threshold
    )


def answer_score(parsed: AnswerRelevanceReply, rubric: Rubric, method: str, **extra: Any) -> Score:
    """The Score for a judge's answer-relevance verdict (pure)."""
    value = ANSWER_VERDICTS[parsed.verdict]
    passed, _ = _passed(value, rubric)
    return Score(
        status=Status.OK,
        value=value,
        label=parsed.verdict,
        passed=passed,
        explanation=parsed.reason,
        details={"verdict": parsed.verdict},
        method=method,
        **extra,
    )


# --- context relevance -----------------------------------------------------------------


async def score_contexts_judge(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> Score:
    """Share of retrieved documents that help answer the question (one call for all)."""
    try:
        reply = await judge.complete(
            render_contexts_check(case),
            documents_schema(len(case.contexts)),
            model=rubric.judge.model,
            temperature=rubric.judge.temperature,
        )
    except JudgeError as exc:
        return _error(exc, "judge", rubric.judge.model or judge.model)
    verdicts: list[DocumentVerdict] = reply.parsed.documents
    return judged_contexts_score(
        verdicts, case, rubric, "judge", judge_model=reply.model, usage=reply.usage
    )


async def score_contexts_local(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """The same share by embeddings or word overlap, off the event loop."""
    return await asyncio.to_thread(_contexts_local, case, rubric, clients.embedder)


def judged_contexts_score(
    verdicts: Sequence[DocumentVerdict], case: EvalCase, rubric: Rubric, method: str, **extra: Any
) -> Score:
    """The Score for one judge verdict per document, in document order (pure)."""
    documents = [
        {"id": ctx.id, "relevant": v.relevant, "reason": v.reason}
        for ctx, v in zip(case.contexts, verdicts, strict=True)
    ]
    return _contexts_score([v.relevant for v in verdicts], documents, rubric, method, **extra)


def _contexts_local(case: EvalCase, rubric: Rubric, embedder: Embedder | None) -> Score:
    if embedder is not None:
        basis, default = "embeddings", EMBEDDING_THRESHOLD
        sentences = [split_sentences(c.text)[:_MAX_SENTENCES] or [c.text] for c in case.contexts]
        flat = [s for doc in sentences for s in doc]
        vecs = embedder.encode([case.question, *flat])
        groups, start = [], 1
        for doc in sentences:
            groups.append(vecs[start : start + len(doc)])
            start += len(doc)
        similarities = embedding_similarities(vecs[0], groups)
    else:
        basis, default = "lexical", LEXICAL_THRESHOLD
        similarities = [lexical_overlap(case.question, c.text) for c in case.contexts]
    threshold = rubric.typed_options.relevance_threshold  # validated with the rubric
    if threshold is None:
        threshold = default
    relevant = [s >= threshold for s in similarities]
    documents = [
        {"id": c.id, "relevant": r, "similarity": round(s, 4)}
        for c, r, s in zip(case.contexts, relevant, similarities, strict=True)
    ]
    score = _contexts_score(relevant, documents, rubric, "local")
    score.details.update({"basis": basis, "threshold": threshold})
    return score


def _contexts_score(
    relevant: list[bool], documents: list[dict[str, Any]], rubric: Rubric, method: str, **extra: Any
) -> Score:
    value = precision(relevant)
    assert value is not None  # callers skip a case without documents
    passed, label = _passed(value, rubric)
    return Score(
        status=Status.OK,
        value=value,
        label=label,
        passed=passed,
        explanation=f"{sum(relevant)} of {len(relevant)} retrieved documents are relevant",
        details={"documents": documents},
        method=method,
        **extra,
    )


def _error(exc: JudgeError, method: str, judge_model: str) -> Score:
    return judge_failure(exc, method=method, judge_model=judge_model)
