"""Local (no-LLM, offline) faithfulness and answer-relevance scorers.

Faithfulness works per answer sentence: find the evidence for it in the contexts (content-word
recall anywhere and in the best-matching 1–2 sentence window, numbers, names, negation, and
embedding similarity when an `Embedder` is given), turn that evidence into a probability that
the sentence is unsupported with a small logistic model, and combine sentences with a
noisy-OR: the answer is hallucinated if *any* sentence is. Score = 1 − P(hallucinated).

The weights were fitted by `bench/local_faithfulness.py --fit` on RAGTruth QA sentence labels
and checked with cross-validation split by question (see that script for held-out numbers).
The features are task-agnostic (no QA-specific cue), so the method also applies to
summaries and data-to-text, though it was only measured on QA.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from judges.llm.embedder import Embedder
from judges.text import (
    content_words,
    extract_entities,
    extract_numbers,
    has_negation,
    split_sentences,
    stem,
    tokenize,
)
from judges.types import EvalCase, Score, Status

METHOD = "local"
# Score threshold maximising balanced accuracy on RAGTruth QA (0.64 lexical, 0.57 embeddings).
DEFAULT_THRESHOLD = 0.6

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

# Logistic weights on `_features` (see bench/local_faithfulness.py --fit).
# Negation mismatch and the raw unsupported count were tried and left out: on RAGTruth QA the
# fitted negation weight came out negative (noise) and the count duplicates `log_novel`.
_FEATURES = (
    "recall_any",
    "recall_best",
    "log_novel",
    "numbers",
    "names",
    "log_terms",
    "similarity",
)
_WEIGHTS_LEXICAL: dict[str, float] = {
    "bias": -1.711,
    "recall_any": 0.906,
    "recall_best": -2.494,
    "log_novel": 1.701,
    "numbers": 1.004,
    "names": 0.722,
    "log_terms": -0.816,
}
_WEIGHTS_EMBEDDING: dict[str, float] = {
    "bias": -1.674,
    "recall_any": 0.952,
    "recall_best": -2.44,
    "log_novel": 1.71,
    "numbers": 1.001,
    "names": 0.719,
    "log_terms": -0.8,
    "similarity": -0.193,
}


@dataclass(frozen=True, slots=True)
class SentenceEvidence:
    """What the contexts say about one answer sentence."""

    sentence: str
    terms: int
    recall_any: float
    recall_best: float
    unsupported_terms: tuple[str, ...]
    novel_terms: int
    unsupported_numbers: tuple[str, ...]
    unsupported_entities: tuple[str, ...]
    negation_mismatch: bool
    similarity: float | None
    best_context_id: str | None


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
    claims = (claim_text(s) for s in split_sentences(answer))
    return [c for c in claims if len(_terms(c)) >= 2 and not is_evasive(c)]


def _windows(case: EvalCase) -> list[tuple[str, str]]:
    """(context id, text) for every context sentence and every pair of adjacent sentences."""
    out: list[tuple[str, str]] = []
    for ctx in case.contexts:
        sents = split_sentences(ctx.text) or [ctx.text]
        for i, sent in enumerate(sents):
            out.append((ctx.id, sent))
            if i + 1 < len(sents):
                out.append((ctx.id, f"{sent} {sents[i + 1]}"))
    return out


def collect_evidence(case: EvalCase, embedder: Embedder | None = None) -> list[SentenceEvidence]:
    """Per-claim evidence against the contexts of `case` (empty if there are no claims)."""
    claims = claim_sentences(case.answer)
    windows = _windows(case)
    if not claims or not windows:
        return []
    all_text = " ".join(c.text for c in case.contexts)
    ctx_terms = set(_terms(all_text))
    ctx_words = set(tokenize(all_text))
    ctx_numbers = extract_numbers(all_text)
    question_terms = set(_terms(case.question))
    window_terms = [set(_terms(text)) for _, text in windows]
    sims: np.ndarray | None = None
    if embedder is not None:
        vectors = embedder.encode([text for _, text in windows] + claims)
        sims = vectors[len(windows) :] @ vectors[: len(windows)].T
    evidence = []
    for i, claim in enumerate(claims):
        surface = {stem(t): t for t in tokenize(claim)}
        terms = _terms(claim)
        unique = set(terms)
        best = max(range(len(windows)), key=lambda j: len(unique & window_terms[j]))
        unsupported = [t for t in dict.fromkeys(terms) if t not in ctx_terms]
        evidence.append(
            SentenceEvidence(
                sentence=claim,
                terms=len(terms),
                recall_any=sum(t in ctx_terms for t in terms) / len(terms),
                recall_best=len(unique & window_terms[best]) / len(unique),
                unsupported_terms=tuple(surface.get(t, t) for t in unsupported),
                novel_terms=sum(t not in question_terms for t in unsupported),
                unsupported_numbers=tuple(sorted(extract_numbers(claim) - ctx_numbers)),
                unsupported_entities=tuple(
                    sorted(e for e in extract_entities(claim) if not set(tokenize(e)) <= ctx_words)
                ),
                negation_mismatch=has_negation(claim) != has_negation(windows[best][1]),
                similarity=None if sims is None else float(sims[i].max()),
                best_context_id=windows[best][0],
            )
        )
    return evidence


def features(ev: SentenceEvidence) -> dict[str, float]:
    """The model inputs for one sentence; counts are capped/logged so one outlier can't dominate."""
    return {
        "recall_any": ev.recall_any,
        "recall_best": ev.recall_best,
        "log_novel": math.log1p(ev.novel_terms),
        "numbers": float(min(len(ev.unsupported_numbers), 3)),
        "names": float(min(len(ev.unsupported_entities), 3)),
        "log_terms": math.log(ev.terms),
        "similarity": ev.similarity if ev.similarity is not None else 0.0,
    }


def unsupported_probability(ev: SentenceEvidence, weights: dict[str, float] | None = None) -> float:
    """P(sentence is not supported by the contexts) under the logistic model."""
    if weights is None:
        weights = _WEIGHTS_EMBEDDING if ev.similarity is not None else _WEIGHTS_LEXICAL
    z = weights.get("bias", 0.0) + sum(weights.get(k, 0.0) * v for k, v in features(ev).items())
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def aggregate(probabilities: list[float]) -> float:
    """Noisy-OR: the answer is hallucinated if any sentence is. Returns P(hallucinated)."""
    return 1.0 - math.prod(1.0 - p for p in probabilities)


def score_faithfulness_local(
    case: EvalCase, embedder: Embedder | None = None, *, threshold: float = DEFAULT_THRESHOLD
) -> Score:
    """Faithfulness of `case.answer` to `case.contexts` without an LLM.

    `value` = 1 − P(hallucinated) in [0, 1]; `passed` = value >= threshold. Answers without a
    checkable claim (e.g. "I don't know") score 1.0: they assert nothing the contexts could
    contradict; whether they are *useful* is answer relevance's job.
    """
    if not any(c.text.strip() for c in case.contexts):
        return Score.skipped("no contexts to check the answer against", method=METHOD)
    evidence = collect_evidence(case, embedder)
    if not evidence:
        details = {"sentences": [], "claims": 0, "note": "no factual claims"}
        passed = threshold <= 1.0
        return Score(
            Status.OK, 1.0, "grounded", passed, "no factual claims to check", details, METHOD
        )
    probs = [unsupported_probability(ev) for ev in evidence]
    value = round(1.0 - aggregate(probs), 6)
    flagged = [ev for ev, p in zip(evidence, probs, strict=True) if p >= 0.5]
    passed = value >= threshold
    if flagged:
        explanation = (
            f"{len(flagged)} of {len(evidence)} sentences look unsupported; "
            f"first: {flagged[0].sentence[:120]!r}"
        )
    elif passed:
        explanation = f"all {len(evidence)} sentences find support in the contexts"
    else:
        # No single sentence is clearly unsupported, but the doubts add up across them: say so
        # rather than claim full support next to a failing score.
        weakest = max(zip(probs, evidence, strict=True), key=lambda pe: pe[0])[1]
        explanation = (
            f"no sentence is clearly unsupported, but across {len(evidence)} sentences the "
            f"chance that one is ({1 - value:.2f}) is too high; weakest: "
            f"{weakest.sentence[:120]!r}"
        )
    details = {
        "claims": len(evidence),
        "embeddings": embedder is not None,
        "sentences": [
            {**_public(ev), "support": round(1.0 - p, 4)}
            for ev, p in zip(evidence, probs, strict=True)
        ],
    }
    label = "grounded" if passed else "hallucinated"
    return Score(Status.OK, value, label, passed, explanation, details, METHOD)


def _public(ev: SentenceEvidence) -> dict[str, object]:
    keys = (
        "sentence",
        "unsupported_terms",
        "unsupported_numbers",
        "unsupported_entities",
        "negation_mismatch",
        "similarity",
        "best_context_id",
    )
    row = asdict(ev)
    return {k: list(row[k]) if isinstance(row[k], tuple) else row[k] for k in keys}


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
