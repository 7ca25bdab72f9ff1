"""Local (no-LLM, offline) faithfulness and answer-relevance scorers.

Faithfulness works per answer sentence: find the evidence for it in the contexts (content-word
recall anywhere and in the best 1–2 unit window, co-occurrence of its adjacent term pairs,
novel terms, hard evidence — numbers, dates, amounts, names — and embedding similarity when
an `Embedder` is given), pool it into length-normalised answer features and turn them into
P(hallucinated) with the model in `judges.scorers.local_model`, calibrated for the task type the
input's structure shows (`judges.scorers.local_calibration`). Score = 1 − P(hallucinated).

Contexts may be prose or JSON records (`judges.scorers.local_contexts`); values are compared after
normalisation (`judges.evidence`). Work is linear in the input size, and inputs past
`MAX_ANSWER_CHARS` / `MAX_CONTEXT_CHARS` are refused with an error that names the cause —
never scored on the part that was read.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import asdict
from functools import lru_cache

import numpy as np

from judges.evidence import ValueIndex, check_values, context_index, extract_values
from judges.llm.embedder import Embedder
from judges.scorers.local_calibration import calibration_key, detect_task
from judges.scorers.local_contexts import ContextIndex, build_index, clean_artifacts, trigrams_of
from judges.scorers.local_model import (
    HARD_FLOOR,
    LOCAL_METHOD_VERSION,
    SentenceEvidence,
    apply_hard_evidence,
    model_probability,
)
from judges.text import content_words, has_negation, lcs_length, split_sentences, stem, tokenize
from judges.types import EvalCase, Score, Status

METHOD = "local"
# P(hallucinated) is calibrated per task under equal priors: 0.5 is each task's balanced decision.
DEFAULT_THRESHOLD = 0.5
# Beyond these the scorer refuses: the cost is linear, but a partial read would be a lie.
MAX_ANSWER_CHARS = 20_000
MAX_CONTEXT_CHARS = 400_000
# Claim tokens aligned with their best window (LCS); the window gets three times as many.
ALIGN_CAP = 80

# Attribution and discourse words: saying *where* a fact comes from ("passage 2 mentions")
# is not a claim about the world, so these never count as unsupported content.
_ATTRIBUTION = frozenset(
    stem(w)
    for w in re.findall(
        r"\w+",
        """passage passages context contexts document documents text article source sources
    information info mention mentions mentioned state states stated provide provides provided
    suggest suggests suggested highlight highlights highlighted note noted notes indicate
    indicates indicated describe describes described discuss discusses discussed explain
    explains explained according given answer question based specifically additionally
    therefore finally however overall important worth summary summarize conclusion also
    example first second third another following follows""",
    )
)
_LEAD_IN_RE = re.compile(
    r"^(?:based on|according to|from|in) (?:the )?(?:given |provided |above |retrieved )?"
    r"(?:passages?|information|context|contexts|documents?|text|sources?)[^,]*,\s*",
    re.IGNORECASE,
)
_CITATION_RE = re.compile(
    r"[(\[]\s*(?:passages?|sources?|doc(?:ument)?s?)\s*[\d ,&and]*[)\]]", re.IGNORECASE
)
_EVASIVE_RE = re.compile(
    r"\b(?:i (?:cannot|can't|can not|am unable to|do not know|don't know)|unable to answer"
    r"|(?:the|these|given|provided) (?:passages?|context|documents?|information|text)"
    r" (?:do|does|did)(?:n't| not) (?:provide|contain|mention|include|specify|say|state|give)"
    r"|not (?:enough|sufficient) information|no information (?:is|was) (?:provided|given))\b",
    re.IGNORECASE,
)


def claim_text(sentence: str) -> str:
    """The sentence without lead-ins ("Based on the passages, …") and citations ("(Passage 2)")."""
    return _CITATION_RE.sub("", _LEAD_IN_RE.sub("", sentence)).strip()


def is_evasive(text: str) -> bool:
    """Whether the text declines to answer or says the contexts lack the information."""
    return bool(_EVASIVE_RE.search(text))


def _terms(text: str) -> list[str]:
    return [w for w in content_words(text) if w not in _ATTRIBUTION]


def claim_sentences(answer: str) -> list[str]:
    """Answer sentences that make a checkable claim (two or more content terms, not evasive)."""
    claims = (claim_text(s) for s in split_sentences(clean_artifacts(answer)))
    return [c for c in claims if len(_terms(c)) >= 2 and not is_evasive(c)]


def input_too_large(case: EvalCase) -> str | None:
    """Why the case is past the local method's size cap, or None."""
    context_chars = sum(len(c.text) for c in case.contexts)
    if len(case.answer) > MAX_ANSWER_CHARS:
        return f"answer has {len(case.answer)} characters, over the cap of {MAX_ANSWER_CHARS}"
    if context_chars > MAX_CONTEXT_CHARS:
        return f"contexts have {context_chars} characters, over the cap of {MAX_CONTEXT_CHARS}"
    return None


def _pair_recall(terms: list[str], index: ContextIndex) -> float:
    pairs = [(a, b) if a <= b else (b, a) for a, b in itertools.pairwise(terms)]
    pairs = [p for p in pairs if p[0] != p[1]]
    return sum(p in index.pairs for p in pairs) / len(pairs) if pairs else 1.0


def _alignment(tokens: list[str], window: str) -> float:
    """Share of the claim's tokens that the window holds in the same order (LCS). Capped so
    one sentence costs at most ALIGN_CAP² steps, which keeps the scorer linear."""
    if not tokens:
        return 1.0
    claim = tokens[:ALIGN_CAP]
    return lcs_length(claim, list(_stems(window)[: 3 * ALIGN_CAP])) / len(claim)


@lru_cache(maxsize=4096)
def _stems(text: str) -> tuple[str, ...]:
    # A context window is the best window of many claims (and answers to one question).
    return tuple(stem(t) for t in tokenize(text))


# What a claim's values and names are checked against: (values, stemmed words, acronyms).
_Support = tuple[ValueIndex, set[str], set[str]]


def _evidence(
    claim: str,
    index: ContextIndex,
    question_terms: set[str],
    support: _Support,
    similarity: float | None,
) -> SentenceEvidence:
    surface = {stem(t): t for t in tokenize(claim)}
    terms = _terms(claim)
    unique = set(terms)
    best, shared = index.best_window(unique)
    unsupported = [t for t in dict.fromkeys(terms) if t not in index.terms]
    values = extract_values(claim)
    missing, contradicted = check_values(values, *support)
    bad = set(missing) | set(contradicted)
    numbers = sorted(
        {v.key.rsplit(":", 1)[-1] for v in values if v.text in bad and v.kind != "entity"}
    )
    entities = tuple(v.text for v in values if v.kind == "entity" and v.text in bad)
    best_text = index.windows[best][1] if best >= 0 else ""
    grams = trigrams_of(claim)
    tokens = [stem(t) for t in tokenize(claim)]
    return SentenceEvidence(
        sentence=claim,
        terms=len(terms),
        recall_any=sum(t in index.terms for t in terms) / len(terms),
        recall_best=shared / len(unique),
        pair_recall=_pair_recall(terms, index),
        trigram_novel=sum(g not in index.trigrams for g in grams) / len(grams) if grams else 0.0,
        unsupported_terms=tuple(surface.get(t, t) for t in unsupported),
        novel_terms=sum(t not in question_terms for t in unsupported),
        unsupported_values=tuple(t for t in missing if t not in entities),
        contradicted_values=tuple(contradicted),
        unsupported_numbers=tuple(numbers),
        unsupported_entities=entities,
        negation_mismatch=bool(best_text) and has_negation(claim) != has_negation(best_text),
        similarity=similarity,
        best_context_id=index.windows[best][0] if best >= 0 else None,
        alignment=_alignment(tokens, best_text),
    )


def collect_evidence(case: EvalCase, embedder: Embedder | None = None) -> list[SentenceEvidence]:
    """Per-claim evidence against the contexts of `case` (empty if there are no claims)."""
    claims = claim_sentences(case.answer)
    if not claims or not any(c.text.strip() for c in case.contexts):
        return []
    index = build_index([(c.id, c.text) for c in case.contexts], _ATTRIBUTION)
    question_terms = set(_terms(case.question))
    # A value or name the user's question supplies is not the answer's invention.
    q_values, q_words, q_initials = context_index(case.question)
    support = (
        ValueIndex(index.values + q_values),
        set(index.words) | q_words,
        index.initials | q_initials,
    )
    sims: list[float | None] = [None] * len(claims)
    if embedder is not None:
        # Claims against context units (not pairs): one encode per unit keeps this linear.
        units = [text for _, text in index.windows[::2]] or [""]
        vectors = embedder.encode(units + claims)
        sims = [float(row.max()) for row in vectors[len(units) :] @ vectors[: len(units)].T]
    return [
        _evidence(c, index, question_terms, support, s) for c, s in zip(claims, sims, strict=True)
    ]


def task_of(case: EvalCase, claims: int) -> str:
    """The case's task type (`judges.scorers.local_calibration.detect_task`)."""
    return detect_task(case.question, [c.text for c in case.contexts], claims)


def score_faithfulness_local(
    case: EvalCase, embedder: Embedder | None = None, *, threshold: float = DEFAULT_THRESHOLD
) -> Score:
    """Faithfulness of `case.answer` to `case.contexts` without an LLM.

    `value` = 1 − P(hallucinated) in [0, 1]; `passed` = value >= threshold. Answers without a
    checkable claim (e.g. "I don't know") score 1.0: they assert nothing the contexts could
    contradict; whether they are *useful* is answer relevance's job. `details.hard_evidence`
    is true when a sentence asserts a value or name the contexts contradict or lack; such an
    answer fails whatever its overlap, and the cascade always sends it to the judge.
    """
    version = {"local_method_version": LOCAL_METHOD_VERSION}
    if not any(c.text.strip() for c in case.contexts):
        return Score.skipped("no contexts to check the answer against", method=METHOD)
    if (cause := input_too_large(case)) is not None:
        return Score.error(
            f"input too large for the local method: {cause}",
            method=METHOD,
            details={**version, "cause": "input_too_large"},
        )
    evidence = collect_evidence(case, embedder)
    if not evidence:
        details = {
            **version,
            "sentences": [],
            "claims": 0,
            "note": "no factual claims",
            "hard_evidence": False,
        }
        passed = threshold <= 1.0
        return Score(
            Status.OK, 1.0, "grounded", passed, "no factual claims to check", details, METHOD
        )
    task = task_of(case, len(evidence))
    model_p = model_probability(evidence, task=task)
    p = apply_hard_evidence(model_p, evidence)
    value = round(1.0 - p, 6)
    passed = value >= threshold
    support = [
        round(1.0 - apply_hard_evidence(model_probability([ev], task=task), [ev]), 4)
        for ev in evidence
    ]
    hard = [ev for ev in evidence if ev.hard_evidence]
    if hard:
        first = hard[0]
        bad = [*first.contradicted_values, *first.unsupported_values, *first.unsupported_entities]
        explanation = (
            f"{len(hard)} of {len(evidence)} sentences assert values or names the contexts "
            f"contradict or lack ({', '.join(bad[:4])}); first: {first.sentence[:120]!r}"
        )
    elif passed:
        explanation = f"all {len(evidence)} sentences find support in the contexts"
    else:
        weakest = evidence[min(range(len(evidence)), key=lambda i: support[i])]
        explanation = (
            f"the evidence across {len(evidence)} sentences is too weak "
            f"(P(hallucinated) {p:.2f}); weakest: {weakest.sentence[:120]!r}"
        )
    details = {
        **version,
        "claims": len(evidence),
        "embeddings": embedder is not None,
        "hard_evidence": bool(hard),
        "task": task,
        "calibration": calibration_key(task),
        "model_probability": round(model_p, 6),
        "hard_floor": HARD_FLOOR,
        "sentences": [
            {**_public(ev), "support": s} for ev, s in zip(evidence, support, strict=True)
        ],
    }
    label = "grounded" if passed else "hallucinated"
    return Score(Status.OK, value, label, passed, explanation, details, METHOD)


def _public(ev: SentenceEvidence) -> dict[str, object]:
    keys = (
        "sentence",
        "unsupported_terms",
        "unsupported_values",
        "contradicted_values",
        "unsupported_numbers",
        "unsupported_entities",
        "negation_mismatch",
        "similarity",
        "best_context_id",
    )
    row = asdict(ev)
    out = {k: list(row[k]) if isinstance(row[k], tuple) else row[k] for k in keys}
    out["hard_evidence"] = ev.hard_evidence
    return out


def score_answer_relevance_local(
    case: EvalCase, embedder: Embedder | None = None, *, threshold: float = 0.5
) -> Score:
    """Does the answer address the question? Term overlap, embedding similarity, evasion.

    A cheap screen, not a judge: an evasive answer ("the passages do not say") scores low
    even when it is honest, because the user's question went unanswered.
    """
    if not case.answer.strip():
        return Score.skipped("empty answer", method=METHOD)
    if not case.question.strip():
        return Score.skipped("no question to compare the answer with", method=METHOD)
    q_terms = set(_terms(case.question)) or set(content_words(case.question))
    a_terms = set(content_words(case.answer))
    overlap = len(q_terms & a_terms) / len(q_terms) if q_terms else 0.0
    evasive = is_evasive(case.answer)
    similarity: float | None = None
    if embedder is not None:
        q_vec, a_vec = embedder.encode([case.question, case.answer])
        similarity = float(np.clip(q_vec @ a_vec, 0.0, 1.0))
        value = 0.4 * overlap + 0.6 * similarity
    else:
        value = overlap
    if evasive:
        # Evasion caps the score: the question was not answered, however on-topic the words.
        value = min(value, 0.25)
    value = round(float(np.clip(value, 0.0, 1.0)), 6)
    passed = value >= threshold
    return Score(
        Status.OK,
        value,
        "relevant" if passed else "irrelevant",
        passed,
        "the answer declines or defers to missing information"
        if evasive
        else f"question-term overlap {overlap:.2f}",
        {"overlap": round(overlap, 4), "similarity": similarity, "evasive": evasive},
        METHOD,
    )
