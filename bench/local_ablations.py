"""Candidate features for the local faithfulness model, each measured under the bench protocol.

    python -m bench.local_ablations

Each candidate is one more answer-level feature added to the shipped list, refitted exactly as
`bench.local_faithfulness` fits the shipped model (sign-constrained weights on RAGTruth QA,
per-task maps on those answers + FRANK valid), and reported out-of-sample: RAGTruth 5-fold CV
by document, FRANK CNN/DM and XSum test separately. Candidates that do not beat the shipped
list on these numbers stay here, measured and documented (BENCHMARKS.md §8), and out of
`judges.scorers.local_model`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench.local_data import Item, load_frank, load_ragtruth
from bench.local_faithfulness import CUT, SETS, collect, names_for, out_of_sample
from judges.agreement import auroc, balanced_accuracy
from judges.scorers import local_model as lm
from judges.text import content_words, stem

_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?")
_BULLET_RE = re.compile(r"^\s*\d{1,2}[.)]\s+")
_POINTER_RE = re.compile(r"\b(?:passage|source|document)s?\s+\d+(?:\s*(?:,|and|&)\s*\d+)*", re.I)
# A novel term found in fewer development documents than this counts as rare (a name, a
# specific word) rather than a common word the summary merely rephrased with.
RARE_DF = 20


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER_RE.findall(text)}


def digits_novel_raw(it: Item) -> float:
    """Any digit string in the answer absent from contexts and question (list markers too)."""
    known = _numbers(" ".join(c.text for c in it.case.contexts) + " " + it.case.question)
    return float(bool(_numbers(it.case.answer) - known))


def digits_novel_claims(it: Item) -> float:
    """The same on claims, without list markers ("1. ") and passage pointers ("passage 6")."""
    known = _numbers(" ".join(c.text for c in it.case.contexts) + " " + it.case.question)
    claims = (_POINTER_RE.sub(" ", _BULLET_RE.sub("", ev.sentence)) for ev in it.evidence)
    return float(any(_numbers(c) - known for c in claims))


def novel_count_max(it: Item) -> float:
    """Novel terms of the worst sentence as a count (capped at 4), not a share."""
    return min(max(ev.novel_terms for ev in it.evidence), 4) / 4


def rare_novel(df: Counter[str]) -> Callable[[Item], float]:
    """Share of the worst sentence's terms that are novel *and* rare in development documents."""

    def feature(it: Item) -> float:
        return max(
            sum(df[stem(t)] < RARE_DF for t in ev.unsupported_terms) / max(ev.terms, 1)
            for ev in it.evidence
        )

    return feature


def document_frequency(items: list[Item]) -> Counter[str]:
    """Term → development documents holding it (RAGTruth passages, FRANK valid articles)."""
    docs = {
        (it.doc_id, c.id): c.text
        for it in items
        if it.dataset == "ragtruth" or it.split == "valid"
        for c in it.case.contexts
    }
    df: Counter[str] = Counter()
    for text in docs.values():
        df.update(set(content_words(text)))
    return df


@contextmanager
def extra_features(values: dict[int, dict[str, float]]) -> Iterator[None]:
    """Add per-answer candidate values (keyed by id of the evidence list) to the model's
    features for the duration of one measurement."""
    original = lm.answer_features

    def with_extra(evidence: list[lm.SentenceEvidence]) -> dict[str, float]:
        return original(evidence) | values.get(id(evidence), {})

    lm.answer_features = with_extra  # type: ignore[assignment]
    try:
        yield
    finally:
        lm.answer_features = original  # type: ignore[assignment]


def line(title: str, items: list[Item], p_of: dict[int, float]) -> str:
    cells = []
    for _, keep in SETS:
        sel = [it for it in items if keep(it)]
        y = [it.hallucinated for it in sel]
        p = [p_of[id(it)] for it in sel]
        cells.append(f"{auroc(y, p):.3f} / {balanced_accuracy(y, [s >= CUT for s in p]):.3f}")
    return f"| {title} | " + " | ".join(cells) + " |"


def main() -> None:
    items = load_ragtruth() + load_frank()
    collect(items, None)
    base = names_for(None)
    candidates: dict[str, Callable[[Item], float]] = {
        "digits_novel_raw": digits_novel_raw,
        "digits_novel_claims": digits_novel_claims,
        "novel_count_max": novel_count_max,
        "rare_novel": rare_novel(document_frequency(items)),
    }
    values = {
        id(it.evidence): {name: f(it) for name, f in candidates.items()}
        for it in items
        if it.evidence
    }
    print("| variant | " + " | ".join(f"{n} AUROC / BalAcc" for n, _ in SETS) + " |")
    print("|---|---|---|---|")
    with extra_features(values):
        print(line("shipped features", items, out_of_sample(items, base)))
        for name in candidates:
            print(line(f"+ {name}", items, out_of_sample(items, (*base, name))))
        both = (*base, "digits_novel_claims", "novel_count_max")
        print(line("+ digits_novel_claims + novel_count_max", items, out_of_sample(items, both)))


if __name__ == "__main__":
    main()
