"""Labelled data and fitting helpers for bench/local_faithfulness.py.

Sets: RAGTruth QA (`ragtruth`) and FRANK news summaries, CNN/DM (`cnndm`) and XSum (`xsum`)
kept apart, each with FRANK's `valid`/`test` split. Hallucinated answer = positive.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from pathlib import Path

import numpy as np

from judges.scorers import local_model as lm
from judges.text import tokenize
from judges.types import Context, EvalCase

RAGTRUTH = Path("/work/shared/data/ragtruth_qa/ragtruth_qa.jsonl")
FRANK = Path("/work/shared/data/frank/frank.jsonl")
FOLDS = 5


@dataclasses.dataclass
class Item:
    dataset: str  # ragtruth | cnndm | xsum
    split: str  # all | valid | test
    doc_id: str
    model: str
    hallucinated: bool
    case: EvalCase
    evidence: list[lm.SentenceEvidence] = dataclasses.field(default_factory=list)
    millis: float = 0.0
    task: str = "other"

    @property
    def fold(self) -> int:
        return zlib.crc32(self.doc_id.encode()) % FOLDS


def load_ragtruth(path: Path = RAGTRUTH) -> list[Item]:
    items = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        raw = re.split(r"passage \d+:", row["source"]["passages"])
        parts = [p.strip() for p in raw if p.strip()]
        contexts = tuple(Context(f"passage {i + 1}", p) for i, p in enumerate(parts))
        for k, resp in enumerate(row["responses"]):
            case = EvalCase(
                trace_id=f"{row['source_id']}-{k}",
                span_id="0",
                question=row["source"]["question"],
                answer=resp["response"],
                contexts=contexts,
                model=resp["model"],
            )
            doc = str(row["source_id"])
            items.append(Item("ragtruth", "all", doc, resp["model"], bool(resp["labels"]), case))
    return items


def load_frank(path: Path = FRANK) -> list[Item]:
    items = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        # FRANK's own sentence split: XSum articles lost their paragraph breaks in `source`.
        article = "\n".join(row["source_sentences"])
        contexts = (Context("article", article),)
        for k, resp in enumerate(row["responses"]):
            case = EvalCase(
                trace_id=f"{row['source_id']}-{k}",
                span_id="0",
                question="",
                answer=resp["response"],
                contexts=contexts,
                model=resp["model"],
            )
            items.append(
                Item(
                    row["dataset"],
                    row["split"],
                    str(row["source_id"]),
                    resp["model"],
                    bool(resp["labels"]),
                    case,
                )
            )
    return items


def token_overlap(case: EvalCase) -> float:
    """The floor: share of answer tokens found anywhere in the contexts."""
    ctx = set(tokenize(" ".join(c.text for c in case.contexts)))
    toks = tokenize(case.answer)
    return sum(t in ctx for t in toks) / len(toks) if toks else 1.0


def design(items: list[Item], names: tuple[str, ...]) -> np.ndarray:
    rows = []
    for it in items:
        f = lm.answer_features(it.evidence) if it.evidence else None
        rows.append([1.0] + [f[n] if f else 0.0 for n in names])
    return np.array(rows, dtype=float).reshape(len(rows), len(names) + 1)


def balanced_weights(items: list[Item]) -> np.ndarray:
    """Each (data set, class) cell gets the same total weight: equal priors, equal sets."""
    cells: dict[tuple[str, bool], int] = {}
    for it in items:
        cells[(it.dataset, it.hallucinated)] = cells.get((it.dataset, it.hallucinated), 0) + 1
    w = np.array([1.0 / cells[(it.dataset, it.hallucinated)] for it in items])
    return w * len(items) / w.sum()


def fit_logistic(
    x: np.ndarray, y: np.ndarray, sw: np.ndarray, l2: float = 1.0, iters: int = 60
) -> np.ndarray:
    """Weighted, L2-regularised logistic regression by Newton's method; column 0 is the bias."""
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (sw * (p - y)) + reg * w
        hess = (x * (sw * p * (1 - p))[:, None]).T @ x + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


# Features that may only lower P(hallucinated): support. All others may only raise it.
SUPPORT = frozenset(
    {"recall", "best_min", "best_mean", "pair_mean", "pair_min", "similarity", "align_min",
     "align_mean"}
)  # fmt: skip


def fit(items: list[Item], names: tuple[str, ...]) -> dict[str, float]:
    """Answer-level weights fitted on `items` (answers without claims are left out).

    Sign-constrained: a feature whose fitted weight points the wrong way (more support →
    more hallucination, or more novelty → less) is dropped and the rest refitted. On RAGTruth
    alone, copied phrasing looks *worse* given the other features (answers paraphrase), on
    CNN/DM it is the best single sign of faithfulness: an unconstrained fit learns the QA
    style, and that is what failed to transfer.
    """
    train = [it for it in items if it.evidence]
    y = np.array([it.hallucinated for it in train], dtype=float)
    kept = list(names)
    while True:
        w = fit_logistic(design(train, tuple(kept)), y, balanced_weights(train))
        weights = dict(zip(kept, map(float, w[1:]), strict=True))
        wrong = [n for n in kept if (weights[n] > 0) == (n in SUPPORT) and weights[n] != 0]
        if not wrong:
            return {"bias": float(w[0])} | {n: weights.get(n, 0.0) for n in names}
        kept.remove(max(wrong, key=lambda n: abs(weights[n])))


def logits(items: list[Item], weights: dict[str, float]) -> list[float]:
    """The model's raw logit per answer; answers without claims get -30 (they assert nothing)."""
    return [lm.model_logit(it.evidence, weights) if it.evidence else -30.0 for it in items]


def fit_calibration(items: list[Item], weights: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Per-task Platt maps (slope, intercept) on the logits of `weights`, plus the pooled one.

    Each map is fitted on the answers of its task type, each (set, class) cell weighted equally,
    so 0.5 is the balanced decision point of that task; answers without claims are left out.
    """
    table: dict[str, tuple[float, float]] = {}
    groups = {task: [it for it in items if it.task == task and it.evidence]
              for task in ("qa", "summary", "extreme_summary")}  # fmt: skip
    groups["pooled"] = [it for it in items if it.evidence]
    for task, group in groups.items():
        if len({it.hallucinated for it in group}) < 2:
            continue
        x = np.column_stack([np.ones(len(group)), logits(group, weights)])
        y = np.array([it.hallucinated for it in group], dtype=float)
        bias, slope = fit_logistic(x, y, balanced_weights(group), l2=1e-3)
        table[task] = (float(slope), float(bias))
    return table


def probabilities(
    items: list[Item],
    weights: dict[str, float],
    table: dict[str, tuple[float, float]] | None = None,
    hard: bool = True,
) -> list[float]:
    """Calibrated P(hallucinated) per answer; answers without claims get 0."""
    out = []
    for it in items:
        if not it.evidence:
            out.append(0.0)
            continue
        p = lm.model_probability(it.evidence, weights, it.task, table)
        out.append(lm.apply_hard_evidence(p, it.evidence) if hard else p)
    return out


def bootstrap_auroc(
    items: list[Item], scores: list[float], rounds: int = 500, seed: int = 7
) -> tuple[float, float]:
    """95 % interval of the AUROC, resampling source documents (answers to one document
    are not independent)."""
    from judges.agreement import auroc

    rng = np.random.default_rng(seed)
    by_doc: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_doc.setdefault(it.doc_id, []).append(i)
    docs = list(by_doc)
    values = []
    for _ in range(rounds):
        idx = [i for d in rng.choice(len(docs), len(docs)) for i in by_doc[docs[d]]]
        y = [items[i].hallucinated for i in idx]
        if 0 < sum(y) < len(y):
            values.append(auroc(y, [scores[i] for i in idx]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
