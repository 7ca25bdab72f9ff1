"""Measure the local faithfulness method per data set (hallucinated answer = positive).

    python -m bench.local_faithfulness                  # lexical; shipped weights + out-of-sample
    python -m bench.local_faithfulness --embeddings     # also the MiniLM stage
    python -m bench.local_faithfulness --fit            # print weights to ship

Sets are never pooled: RAGTruth QA, FRANK CNN/DM test, FRANK XSum test. Every number is
out-of-sample. FRANK test is never used for fitting. The shipped model (v2.1) is fitted in two
steps: the answer-level weights on RAGTruth QA only (chosen over RAGTruth + FRANK valid because
they transfer better to FRANK valid, a set they never saw), then one Platt map per task type
(judges.scorers.local_calibration): qa on RAGTruth, summary / extreme_summary on FRANK valid.
RAGTruth rows are 5-fold CV split by source document (weights and qa map fitted on the other
folds); FRANK test rows use the shipped fit. The pass mark is the shipped one (score 0.5),
never re-tuned here. `--fit` prints the constants to paste into local_model / local_calibration.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections import defaultdict

import numpy as np

from bench.local_data import (
    Item,
    bootstrap_auroc,
    fit,
    fit_calibration,
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
MARKS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
ALIGNS = (0.0, 0.5, 0.6, 0.7, 0.8)


def collect(items: list[Item], embedder: Embedder | None) -> None:
    """Evidence per answer, timed end to end (the full scorer, cold context index). Thread CPU
    time, not wall clock: the bench shares its cores with other jobs (pin with taskset -c 0)."""
    for it in items:
        start = time.thread_time()
        lg.score_faithfulness_local(it.case, embedder)
        it.millis = (time.thread_time() - start) * 1000
        it.evidence = lg.collect_evidence(it.case, embedder)
        it.task = lg.task_of(it.case, len(it.evidence))


def shipped_fit(
    items: list[Item], names: tuple[str, ...], exclude_fold: int | None = None
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Weights on RAGTruth (minus one fold), per-task maps on those answers + FRANK valid."""
    rag = [it for it in items if it.dataset == "ragtruth" and it.fold != exclude_fold]
    valid = [it for it in items if it.split == "valid"]
    weights = fit(rag, names)
    return weights, fit_calibration(rag + valid, weights)


def out_of_sample(items: list[Item], names: tuple[str, ...]) -> dict[int, float]:
    """P(hallucinated) per item id: RAGTruth by document folds, FRANK test by the shipped fit."""
    rag = [it for it in items if it.dataset == "ragtruth"]
    test = [it for it in items if it.split == "test"]
    out: dict[int, float] = {}
    for k in range(5):
        weights, table = shipped_fit(items, names, exclude_fold=k)
        held = [it for it in rag if it.fold == k]
        out |= dict(zip(map(id, held), probabilities(held, weights, table), strict=True))
    weights, table = shipped_fit(items, names)
    out |= dict(zip(map(id, test), probabilities(test, weights, table), strict=True))
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
          "| floor AUROC | median CPU ms |")  # fmt: skip
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


def local_pass(p_hallucinated: float, it: Item, mark: float, align: float) -> bool:
    """The cascade's rule: decide "pass" locally only when P(faithful) >= mark, no sentence
    aligns with the contexts below `align`, and no sentence carries hard evidence."""
    if any(ev.hard_evidence for ev in it.evidence):
        return False
    worst = min((ev.alignment for ev in it.evidence), default=1.0)
    return 1.0 - p_hallucinated >= mark and worst >= align


def cascade(items: list[Item], p_of: dict[int, float]) -> None:
    print("\n### Cascade trade-off: pass locally iff P(faithful) >= mark, worst sentence "
          "alignment >= align, no hard evidence\n")  # fmt: skip
    print("| set | mark | align | hallucinated passed without judge | clean decided locally |")
    print("|---|---|---|---|---|")
    for name, keep in SETS:
        sel = [it for it in items if keep(it)]
        bad = [it for it in sel if it.hallucinated]
        clean = [it for it in sel if not it.hallucinated]
        for mark, align in itertools.product(MARKS, ALIGNS):
            hb = sum(local_pass(p_of[id(it)], it, mark, align) for it in bad) / len(bad)
            cl = sum(local_pass(p_of[id(it)], it, mark, align) for it in clean) / len(clean)
            print(f"| {name} | {mark:.2f} | {align:.1f} | {hb:.1%} | {cl:.1%} |")


def ablations(items: list[Item], names: tuple[str, ...]) -> None:
    """The v2.0 protocol (weights on RAGTruth + FRANK valid) and no per-task calibration."""
    rag = [it for it in items if it.dataset == "ragtruth"]
    valid = [it for it in items if it.split == "valid"]
    test = [it for it in items if it.split == "test"]
    for title, weights_on, per_task in (
        ("weights on RAGTruth + FRANK valid (v2.0 protocol), per-task maps", True, True),
        ("weights on RAGTruth, pooled map only (no task detection)", False, False),
    ):
        p_of: dict[int, float] = {}
        for k in [*range(5), None]:
            train = [it for it in rag if it.fold != k] + (valid if weights_on else [])
            weights = fit(train, names)
            table = fit_calibration([it for it in rag if it.fold != k] + valid, weights)
            if not per_task:
                table = {"pooled": table["pooled"]}
            held = [it for it in rag if it.fold == k] if k is not None else test
            p_of |= dict(zip(map(id, held), probabilities(held, weights, table), strict=True))
        report(items, p_of, f"Ablation: {title}", by_model=False)


def names_for(embedder: Embedder | None) -> tuple[str, ...]:
    """The features fitted: all of them with embeddings, all but similarity without."""
    return lm.FEATURES if embedder else tuple(f for f in lm.FEATURES if f != "similarity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", action="store_true")
    parser.add_argument("--fit", action="store_true", help="print weights fitted on all data")
    parser.add_argument("--by-model", action="store_true", help="rows per generator")
    args = parser.parse_args()
    items = load_ragtruth() + load_frank()
    embedder = Embedder() if args.embeddings else None
    names = names_for(embedder)
    collect(items, embedder)
    stage = "lexical+embeddings" if embedder else "lexical"
    print(f"## Local faithfulness ({stage}), method version {lm.LOCAL_METHOD_VERSION}")
    p_of = out_of_sample(items, names)
    report(items, p_of, "Out-of-sample (RAGTruth: 5-fold CV by document), shipped pass mark",
           by_model=args.by_model)  # fmt: skip
    shipped = lm.default_weights(embedder is not None)
    if len(shipped) > 1:
        p_ship = dict(zip(map(id, items), probabilities(items, shipped, None), strict=True))
        report(items, p_ship, "Shipped constants (RAGTruth rows in-sample)", by_model=False)
    hard_rule(items)
    cascade(items, p_of)
    ablations(items, names)
    if args.fit:
        weights, table = shipped_fit(items, names)
        print("\nweights to ship:", {k: round(v, 3) for k, v in weights.items() if v})
        print(
            "calibration to ship:", {k: (round(a, 3), round(b, 3)) for k, (a, b) in table.items()}
        )
    print("\nmedian ms/answer overall:", round(float(np.median([it.millis for it in items])), 2))


if __name__ == "__main__":
    main()
