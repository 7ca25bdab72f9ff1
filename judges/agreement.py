"""Agreement between a scorer and human labels: AUROC, balanced accuracy, F1, Cohen's kappa.

Pure functions over plain sequences. Convention: `y_true` holds booleans where True is the
*positive* class (e.g. "hallucinated"), and `y_score` is higher for more likely positive.

    >>> auroc([False, True, True], [0.1, 0.4, 0.9])
    1.0
    >>> best_threshold([False, True], [0.2, 0.8]).threshold
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float
    balanced_accuracy: float
    f1: float


def _check(y_true: Sequence[bool], other: Sequence[object]) -> None:
    if len(y_true) != len(other):
        raise ValueError(f"length mismatch: {len(y_true)} labels vs {len(other)} predictions")


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean rank of their group (Mann-Whitney, Spearman)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(order)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation; 0.0 when either side is constant or too short."""
    if len(xs) != len(ys) or len(xs) < 3:
        return 0.0
    rx, ry = average_ranks(xs), average_ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else 0.0


def auroc(y_true: Sequence[bool], y_score: Sequence[float]) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic; ties count one half.

    Raises ValueError when only one class is present (the AUROC is undefined, not 0.5).
    """
    _check(y_true, y_score)
    n_pos = sum(1 for y in y_true if y)
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative labels")
    ranks = average_ranks(y_score)
    rank_sum = sum(r for r, y in zip(ranks, y_true, strict=True) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def confusion(y_true: Sequence[bool], y_pred: Sequence[bool]) -> Confusion:
    _check(y_true, y_pred)
    tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t and p)
    fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if not t and p)
    fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t and not p)
    return Confusion(tp=tp, fp=fp, tn=len(y_true) - tp - fp - fn, fn=fn)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def balanced_accuracy(y_true: Sequence[bool], y_pred: Sequence[bool]) -> float:
    """Mean of sensitivity and specificity; a class absent from y_true is left out."""
    c = confusion(y_true, y_pred)
    parts = []
    if c.tp + c.fn:
        parts.append(c.tp / (c.tp + c.fn))
    if c.tn + c.fp:
        parts.append(c.tn / (c.tn + c.fp))
    return sum(parts) / len(parts) if parts else 0.0


def f1(y_true: Sequence[bool], y_pred: Sequence[bool]) -> float:
    """F1 of the positive class; 0.0 when there are no true or predicted positives."""
    c = confusion(y_true, y_pred)
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def cohen_kappa(y_true: Sequence[bool], y_pred: Sequence[bool]) -> float:
    """Agreement beyond chance; 1.0 when both raters agree and chance agreement is total."""
    c = confusion(y_true, y_pred)
    n = c.total
    if n == 0:
        raise ValueError("cohen_kappa needs at least one item")
    observed = (c.tp + c.tn) / n
    p_yes = ((c.tp + c.fn) / n) * ((c.tp + c.fp) / n)
    p_no = ((c.tn + c.fp) / n) * ((c.tn + c.fn) / n)
    expected = p_yes + p_no
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def predict(y_score: Sequence[float], threshold: float) -> list[bool]:
    """Positive where the score reaches the threshold (score >= threshold)."""
    return [s >= threshold for s in y_score]


def best_threshold(
    y_true: Sequence[bool], y_score: Sequence[float], *, metric: str = "balanced_accuracy"
) -> ThresholdChoice:
    """The observed score that maximises `metric` ("balanced_accuracy" or "f1").

    Candidates are the distinct scores themselves (predict positive at >= candidate); on a
    tie the lowest threshold wins, which is deterministic.
    """
    _check(y_true, y_score)
    if metric not in ("balanced_accuracy", "f1"):
        raise ValueError(f"unknown metric {metric!r}")
    if not y_score:
        raise ValueError("best_threshold needs at least one score")
    best: ThresholdChoice | None = None
    best_key = -1.0
    for cand in sorted(set(y_score)):
        pred = predict(y_score, cand)
        choice = ThresholdChoice(cand, balanced_accuracy(y_true, pred), f1(y_true, pred))
        key = choice.balanced_accuracy if metric == "balanced_accuracy" else choice.f1
        if key > best_key:
            best, best_key = choice, key
    assert best is not None
    return best
