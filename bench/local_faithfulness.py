"""Measure the local faithfulness method per data set (hallucinated answer = positive).

    python -m bench.local_faithfulness                  # lexical; shipped weights + out-of-sample
    python -m bench.local_faithfulness --embeddings     # also the MiniLM stage
    python -m bench.local_faithfulness --fit            # print weights to ship

Sets are never pooled: RAGTruth QA, FRANK CNN/DM test, FRANK XSum test. Every number is
out-of-sample. FRANK test is never used for fitting; the shipped weights are fitted on
RAGTruth QA + FRANK valid, so RAGTruth is reported by 5-fold cross-validation split by source
document (fit on the other folds + FRANK valid). The cross-task table fits on one task only
and reports on the other. The pass mark is the shipped one (score 0.5), never re-tuned here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np

from bench.local_data import (
    Item,
    bootstrap_auroc,
    fit,
    load_frank,
    load_ragtruth,
    probabilities,
    token_overlap,
)
from judges.agreement import auroc, balanced_accuracy, f1
from judges.llm.embedder import Embedder
from judges.scorers import local as lg
from judges.scorers import local_model as lm

CUT = 1.0 - lg.DEFAULT_THRESHOLD  # P(hallucinated) at the shipped pass mark
MARGINS = (0.0, 0.1, 0.2, 0.3, 0.4)


def collect(items: list[Item], embedder: Embedder | None) -> None:
    """Evidence per answer, timed end to end (the full scorer, cold context index)."""
    for it in items:
        start = time.perf_counter()
        lg.score_faithfulness_local(it.case, embedder)
        it.millis = (time.perf_counter() - start) * 1000
        it.evidence = lg.collect_evidence(it.case, embedder)


def out_of_sample(items: list[Item], names: tuple[str, ...]) -> dict[int, float]:
    """P(hallucinated) per item id: RAGTruth by document folds, FRANK test by the valid fit."""
    rag = [it for it in items if it.dataset == "ragtruth"]
    valid = [it for it in items if it.split == "valid"]
    test = [it for it in items if it.split == "test"]
    out: dict[int, float] = {}
    for k in range(5):
        weights = fit([it for it in rag if it.fold != k] + valid, names)
        held = [it for it in rag if it.fold == k]
        out |= dict(zip(map(id, held), probabilities(held, weights), strict=True))
    shipped = fit(rag + valid, names)
    out |= dict(zip(map(id, test), probabilities(test, shipped), strict=True))
    return out


def row(name: str, items: list[Item], p: list[float]) -> str:
    y = [it.hallucinated for it in items]
    floor = [1.0 - token_overlap(it.case) for it in items]
    pred = [s >= CUT for s in p]
    if 0 < sum(y) < len(y):
        lo, hi = bootstrap_auroc(items, p)
        auc = f"{auroc(y, p):.3f} [{lo:.3f}, {hi:.3f}]"
        fl = f"{auroc(y, floor):.3f}"
    else:
        auc, fl = "n/a", "n/a"
    ms = statistics.median(it.millis for it in items)
    return (
        f"| {name} | {len(items)} | {sum(y)} | {auc} | {balanced_accuracy(y, pred):.3f} "
        f"| {f1(y, pred):.3f} | {fl} | {ms:.1f} |"
    )


SETS = (
    ("RAGTruth QA", lambda it: it.dataset == "ragtruth"),
    ("FRANK CNN/DM test", lambda it: it.dataset == "cnndm" and it.split == "test"),
    ("FRANK XSum test", lambda it: it.dataset == "xsum" and it.split == "test"),
)


def report(items: list[Item], p_of: dict[int, float], title: str, by_model: bool) -> None:
    print(f"\n### {title}\n")
    print("| set | n | halluc. | AUROC [95% CI, doc bootstrap] | BalAcc@pass | F1@pass "
          "| floor AUROC | median ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, keep in SETS:
        sel = [it for it in items if keep(it)]
        print(row(name, sel, [p_of[id(it)] for it in sel]))
        if by_model:
            groups: dict[str, list[Item]] = defaultdict(list)
            for it in sel:
                groups[it.model].append(it)
            for model, group in sorted(groups.items()):
                print(row(f"  {model}", group, [p_of[id(it)] for it in group]))


def hard_rule(items: list[Item]) -> None:
    print("\n### Hard-evidence rule (a sentence with an unsupported value or name)\n")
    print(
        "| set | clean flagged (FP rate) | hallucinated flagged | values only FP | names only FP |"
    )
    print("|---|---|---|---|---|")
    for name, keep in SETS:
        sel = [it for it in items if keep(it)]
        clean = [it for it in sel if not it.hallucinated]
        bad = [it for it in sel if it.hallucinated]

        def share(group: list[Item], test: object) -> str:
            hits = sum(any(test(ev) for ev in it.evidence) for it in group)  # type: ignore[operator]
            return f"{hits / max(len(group), 1):.1%} ({hits}/{len(group)})"

        vals = lambda ev: bool(ev.unsupported_values or ev.contradicted_values)  # noqa: E731
        print(
            f"| {name} | {share(clean, lambda ev: ev.hard_evidence)} "
            f"| {share(bad, lambda ev: ev.hard_evidence)} | {share(clean, vals)} "
            f"| {share(clean, lambda ev: bool(ev.unsupported_entities))} |"
        )


def cascade(items: list[Item], p_of: dict[int, float]) -> None:
    print("\n### Cascade: decided locally = passes by >= margin and carries no hard evidence\n")
    print("| set | margin | hallucinated passed without judge | clean decided locally |")
    print("|---|---|---|---|")
    for name, keep in SETS:
        sel = [it for it in items if keep(it)]
        for m in MARGINS:

            def local(it: Item, m: float = m) -> bool:
                hard = any(ev.hard_evidence for ev in it.evidence)
                return 1.0 - p_of[id(it)] >= lg.DEFAULT_THRESHOLD + m and not hard

            bad = [it for it in sel if it.hallucinated]
            clean = [it for it in sel if not it.hallucinated]
            print(
                f"| {name} | {m:.1f} | {sum(map(local, bad)) / len(bad):.1%} "
                f"| {sum(map(local, clean)) / len(clean):.1%} |"
            )


def cross_task(items: list[Item], names: tuple[str, ...]) -> None:
    rag = [it for it in items if it.dataset == "ragtruth"]
    valid = [it for it in items if it.split == "valid"]
    p_of: dict[int, float] = {}
    w_rag, w_frank = fit(rag, names), fit(valid, names)
    test = [it for it in items if it.split == "test"]
    p_of |= dict(zip(map(id, test), probabilities(test, w_rag), strict=True))
    p_of |= dict(zip(map(id, rag), probabilities(rag, w_frank), strict=True))
    report(items, p_of, "Cross-task: FRANK fitted on RAGTruth only; RAGTruth on FRANK valid only",
           by_model=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", action="store_true")
    parser.add_argument("--fit", action="store_true", help="print weights fitted on all data")
    parser.add_argument("--by-model", action="store_true", help="rows per generator")
    args = parser.parse_args()
    items = load_ragtruth() + load_frank()
    embedder = Embedder() if args.embeddings else None
    names = lm.FEATURES if embedder else tuple(f for f in lm.FEATURES if f != "similarity")
    collect(items, embedder)
    stage = "lexical+embeddings" if embedder else "lexical"
    print(f"## Local faithfulness ({stage}), method version {lm.LOCAL_METHOD_VERSION}")
    p_of = out_of_sample(items, names)
    report(items, p_of, "Out-of-sample (RAGTruth: 5-fold CV by document), shipped pass mark",
           by_model=args.by_model)  # fmt: skip
    shipped = lm.default_weights(embedder is not None)
    if len(shipped) > 1:
        p_ship = dict(zip(map(id, items), probabilities(items, shipped), strict=True))
        report(items, p_ship, "Shipped weights (RAGTruth rows in-sample)", by_model=False)
    hard_rule(items)
    cascade(items, p_of)
    cross_task(items, names)
    if args.fit:
        rag_valid = [it for it in items if it.split in ("all", "valid")]
        w = fit(rag_valid, names)
        print("\nweights to ship:", {k: round(v, 3) for k, v in w.items()})
    print("\nmedian ms/answer overall:", round(float(np.median([it.millis for it in items])), 2))


if __name__ == "__main__":
    main()
