"""The answer-level model of the local faithfulness method: evidence → P(hallucinated).

Sentence evidence (judges.scorers.local) is pooled into length-normalised answer features
(shares and extremes, never raw counts, so a long answer is not penalised for being long and
the score does not track writing style), and a logistic model turns them into a probability.

The weights are fitted by `bench/local_faithfulness.py --fit` on RAGTruth QA (classes balanced);
the raw logit is then mapped to P(hallucinated) under *equal priors* by a Platt map fitted per
task type (`judges.scorers.local_calibration`: QA on RAGTruth, summaries on FRANK valid), so
0.5 is the balanced-accuracy decision point of each task (bench numbers are out-of-sample).

Hard evidence is not weighed against overlap: a sentence asserting a value or a name that the
contexts contradict or lack caps its support at `1 - HARD_FLOOR` (see `apply_hard_evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass

from judges.scorers.local_calibration import calibrate

# Bump when the features, weights or rules change: every record carries it in its details, so
# a new algorithm starts a new series instead of silently shifting an old one.
LOCAL_METHOD_VERSION = "2.1"
# P(hallucinated) at least this high when a sentence carries unsupported hard evidence.
HARD_FLOOR = 0.9

FEATURES = (
    "recall",
    "best_min",
    "best_mean",
    "pair_mean",
    "pair_min",
    "novel_max",
    "novel_mean",
    "tri_mean",
    "tri_max",
    "values",
    "names",
    "negation",
    "similarity",
    "align_min",
    "align_mean",
)
# Fitted by bench/local_faithfulness.py --fit on RAGTruth QA only (balanced classes,
# sign-constrained: features left out got a weight of the wrong sign and were dropped). Chosen
# over RAGTruth + FRANK valid because these weights rank FRANK valid better (a set they never
# saw: CNN/DM 0.79 vs 0.75 AUROC); FRANK valid only fits the per-task calibration.
WEIGHTS_LEXICAL: dict[str, float] = {
    "bias": -0.916,
    "recall": -0.58,
    "best_min": -0.83,
    "best_mean": -0.385,
    "pair_min": -1.053,
    "novel_max": 1.826,
    "novel_mean": 1.35,
    "tri_max": 1.212,
    "values": 2.946,
    "names": 2.098,
    "align_min": -0.665,
}
# Not refitted with the similarity feature yet: same as lexical (similarity weight 0).
WEIGHTS_EMBEDDING: dict[str, float] = dict(WEIGHTS_LEXICAL)


@dataclass(frozen=True, slots=True)
class SentenceEvidence:
    """What the contexts say about one answer sentence."""

    sentence: str
    terms: int
    recall_any: float  # share of its content terms found anywhere in the contexts
    recall_best: float  # share found in the single best 1–2 unit window
    pair_recall: float  # share of adjacent term pairs that co-occur in the contexts
    trigram_novel: float  # share of its word trigrams not found in the contexts
    unsupported_terms: tuple[str, ...]
    novel_terms: int  # unsupported terms that are not in the question either
    unsupported_values: tuple[str, ...]  # numbers/dates/amounts the contexts lack
    contradicted_values: tuple[str, ...]  # ... where the contexts give a different one
    unsupported_numbers: tuple[str, ...]  # canonical form of both, e.g. "5000"
    unsupported_entities: tuple[str, ...]
    negation_mismatch: bool
    similarity: float | None
    best_context_id: str | None
    # Longest common token subsequence with the best window / sentence tokens: how much of
    # the sentence reads, in order, in one place of the contexts (copied or lightly edited).
    alignment: float = 1.0

    @property
    def hard_evidence(self) -> bool:
        """Whether the sentence asserts a value or name the contexts contradict or lack."""
        bad = self.unsupported_values or self.contradicted_values or self.unsupported_entities
        return bool(bad)


def answer_features(evidence: list[SentenceEvidence]) -> dict[str, float]:
    """Pooled, length-normalised features of an answer's claims (non-empty list)."""
    terms = sum(ev.terms for ev in evidence) or 1
    best = [ev.recall_best for ev in evidence]
    pair = [ev.pair_recall for ev in evidence]
    novel = [ev.novel_terms / max(ev.terms, 1) for ev in evidence]
    sims = [ev.similarity for ev in evidence if ev.similarity is not None]
    return {
        "recall": sum(ev.recall_any * ev.terms for ev in evidence) / terms,
        "best_min": min(best),
        "best_mean": sum(b * ev.terms for b, ev in zip(best, evidence, strict=True)) / terms,
        "pair_mean": sum(pair) / len(pair),
        "pair_min": min(pair),
        "novel_max": max(novel),
        "novel_mean": sum(ev.novel_terms for ev in evidence) / terms,
        "tri_mean": sum(ev.trigram_novel * ev.terms for ev in evidence) / terms,
        "tri_max": max(ev.trigram_novel for ev in evidence),
        "values": sum(bool(ev.unsupported_values or ev.contradicted_values) for ev in evidence)
        / len(evidence),
        "names": sum(bool(ev.unsupported_entities) for ev in evidence) / len(evidence),
        "negation": sum(ev.negation_mismatch for ev in evidence) / len(evidence),
        "similarity": min(sims) if sims else 0.0,
        "align_min": min(ev.alignment for ev in evidence),
        "align_mean": sum(ev.alignment for ev in evidence) / len(evidence),
    }


def linear(features: dict[str, float], weights: dict[str, float]) -> float:
    """The model's raw logit (before the per-task calibration)."""
    return weights.get("bias", 0.0) + sum(weights.get(k, 0.0) * v for k, v in features.items())


def default_weights(embeddings: bool) -> dict[str, float]:
    return WEIGHTS_EMBEDDING if embeddings else WEIGHTS_LEXICAL


def model_logit(evidence: list[SentenceEvidence], weights: dict[str, float] | None = None) -> float:
    """The answer's raw logit from the model alone (no calibration, no hard-evidence rule)."""
    if weights is None:
        weights = default_weights(any(ev.similarity is not None for ev in evidence))
    return linear(answer_features(evidence), weights)


def model_probability(
    evidence: list[SentenceEvidence],
    weights: dict[str, float] | None = None,
    task: str = "other",
    table: dict[str, tuple[float, float]] | None = None,
) -> float:
    """P(hallucinated) of the answer for its task type (no hard-evidence rule)."""
    return calibrate(model_logit(evidence, weights), task, table)


def apply_hard_evidence(probability: float, evidence: list[SentenceEvidence]) -> float:
    """The hard-evidence rule: an unsupported value or name decides, whatever the overlap."""
    if any(ev.hard_evidence for ev in evidence):
        return max(probability, HARD_FLOOR)
    return probability


def hallucination_probability(
    evidence: list[SentenceEvidence], weights: dict[str, float] | None = None, task: str = "other"
) -> float:
    """P(hallucinated) of the answer (equal priors), hard-evidence rule included."""
    return apply_hard_evidence(model_probability(evidence, weights, task), evidence)
