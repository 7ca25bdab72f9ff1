"""Measure the local faithfulness scorer on RAGTruth QA (hallucinated answer = positive).

    python -m bench.local_faithfulness            # held-out (5-fold by question) + shipped weights
    python -m bench.local_faithfulness --fit      # also print weights fitted on all data
    python -m bench.local_faithfulness --no-embeddings

Held-out numbers come from refitting the sentence model inside each fold (questions never
shared between train and test) and choosing the threshold on the training folds only. The
"shipped" numbers use the constants in judges/local_grounding.py, which were fitted on this
same file, so they are in-sample and are printed only as a consistency check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from judges.agreement import auroc, balanced_accuracy, best_threshold, f1, predict
from judges.scorers import local as lg
from judges.types import Context, EvalCase

DATA = Path("/work/shared/data/ragtruth_qa/ragtruth_qa.jsonl")
FOLDS = 5


@dataclasses.dataclass
class Item:
    question_id: str
    model: str
    hallucinated: bool
    case: EvalCase
    spans: list[tuple[int, int]]
    evidence: list[lg.SentenceEvidence] = dataclasses.field(default_factory=list)
    sentence_labels: list[bool] = dataclasses.field(default_factory=list)


def load(path: Path) -> list[Item]:
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
            spans = [(lab["start"], lab["end"]) for lab in resp["labels"]]
            items.append(Item(str(row["source_id"]), resp["model"], bool(spans), case, spans))
    return items


def label_sentences(item: Item) -> list[bool]:
    """A claim is hallucinated if its text overlaps an annotated span."""
    labels, cursor, answer = [], 0, item.case.answer
    for ev in item.evidence:
        pos = answer.find(ev.sentence[:30], cursor)
        pos = cursor if pos < 0 else pos
        end = pos + len(ev.sentence)
        labels.append(any(a < end and b > pos for a, b in item.spans))
        cursor = pos
    return labels


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method; column 0 is the bias."""
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def design(evidence: list[lg.SentenceEvidence], names: tuple[str, ...]) -> np.ndarray:
    rows = [[1.0] + [lg.features(ev)[n] for n in names] for ev in evidence]
    return np.array(rows, dtype=float).reshape(len(rows), len(names) + 1)


def response_scores(items: list[Item], weights: dict[str, float]) -> list[float]:
    """P(hallucinated) per answer (answers without claims get 0)."""
    return [
        lg.aggregate([lg.unsupported_probability(ev, weights) for ev in it.evidence])
        for it in items
    ]


def cross_validate(items: list[Item], names: tuple[str, ...]) -> tuple[list[float], list[bool]]:
    """Held-out P(hallucinated) and predictions, folds split by question id."""
    fold = {it.question_id: zlib.crc32(it.question_id.encode()) % FOLDS for it in items}
    scores, preds = [0.0] * len(items), [False] * len(items)
    for k in range(FOLDS):
        train = [it for it in items if fold[it.question_id] != k]
        ev = [e for it in train for e in it.evidence]
        y = np.array([lab for it in train for lab in it.sentence_labels], dtype=float)
        w = fit_logistic(design(ev, names), y)
        weights = {"bias": float(w[0]), **{n: float(v) for n, v in zip(names, w[1:], strict=True)}}
        train_scores = response_scores(train, weights)
        cut = best_threshold([it.hallucinated for it in train], train_scores).threshold
        for i, it in enumerate(items):
            if fold[it.question_id] == k:
                scores[i] = response_scores([it], weights)[0]
                preds[i] = scores[i] >= cut
    return scores, preds


def report(title: str, items: list[Item], scores: list[float], preds: list[bool]) -> None:
    y = [it.hallucinated for it in items]
    print(f"\n{title}")
    print(f"  {'model':24s} {'n':>4s} {'pos':>4s} {'AUROC':>6s} {'BalAcc':>6s} {'F1':>6s}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[it.model].append(i)
    for name, idx in [("ALL", list(range(len(items)))), *sorted(groups.items())]:
        yt, ys, yp = [y[i] for i in idx], [scores[i] for i in idx], [preds[i] for i in idx]
        auc = f"{auroc(yt, ys):.3f}" if 0 < sum(yt) < len(yt) else "  n/a"
        print(
            f"  {name:24s} {len(idx):4d} {sum(yt):4d} {auc:>6s} "
            f"{balanced_accuracy(yt, yp):6.3f} {f1(yt, yp):6.3f}"
        )


def timed_evidence(items: list[Item], embedder: lg.Embedder | None) -> list[float]:
    millis = []
    for it in items:
        start = time.perf_counter()
        lg.score_faithfulness_local(it.case, embedder)
        millis.append((time.perf_counter() - start) * 1000)
        it.evidence = lg.collect_evidence(it.case, embedder)
        it.sentence_labels = label_sentences(it)
    return millis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--no-embeddings", action="store_true")
    parser.add_argument("--fit", action="store_true", help="print weights fitted on all data")
    args = parser.parse_args()
    items = load(args.data)
    print(f"{len(items)} answers, {sum(it.hallucinated for it in items)} hallucinated")
    variants: list[tuple[str, lg.Embedder | None]] = [("lexical", None)]
    if not args.no_embeddings:
        variants.append(("lexical+embeddings", lg.Embedder()))
    for name, embedder in variants:
        millis = timed_evidence(items, embedder)
        names = lg._FEATURES if embedder else lg._FEATURES[:-1]
        no_claims = sum(not it.evidence for it in items)
        print(
            f"\n=== {name}: median {statistics.median(millis):.1f} ms/answer "
            f"(p90 {np.percentile(millis, 90):.1f}), {no_claims} answers without claims"
        )
        scores, preds = cross_validate(items, names)
        report(
            f"[{name}] held-out, {FOLDS}-fold by question, threshold chosen on train folds",
            items,
            scores,
            preds,
        )
        shipped = lg._WEIGHTS_EMBEDDING if embedder else lg._WEIGHTS_LEXICAL
        s = response_scores(items, shipped)
        cut = 1.0 - lg.DEFAULT_THRESHOLD
        report(
            f"[{name}] shipped weights, default threshold {lg.DEFAULT_THRESHOLD} (IN-SAMPLE)",
            items,
            s,
            predict(s, cut),
        )
        if args.fit:
            ev = [e for it in items for e in it.evidence]
            y = np.array([lab for it in items for lab in it.sentence_labels], dtype=float)
            w = fit_logistic(design(ev, names), y)
            fitted = {"bias": round(float(w[0]), 3)}
            fitted.update({n: round(float(v), 3) for n, v in zip(names, w[1:], strict=True)})
            best = best_threshold([it.hallucinated for it in items], response_scores(items, fitted))
            print(f"  fitted on all data: {fitted}")
            print(
                f"  best P(hallucinated) threshold (all data): {best.threshold:.3f} "
                f"→ score threshold {1 - best.threshold:.3f}"
            )


if __name__ == "__main__":
    main()
