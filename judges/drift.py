"""Judge drift: agreement with intervals, and a one-sided test that agreement fell.

Pure functions. Convention as in judges.agreement: `positive` = the item fails (e.g.
hallucinated); `risk` is higher for more likely positive; `predicted` = the judge says fail.

Why these tests. Balanced accuracy (BA) is the mean of the two per-class accuracies, so a
drop in BA is a drop in (sens + spec) / 2, and each class can be tested as a proportion:

- paired (the same anchor items in both runs, the default): per class, McNemar's
  discordant counts b (right before, wrong now) and c (wrong before, right now) give the
  change (b - c) / n with variance (b + c) / n² under "no change"; a judge at temperature 0
  mostly repeats itself, so only the items whose verdict moved add variance — far more power
  than comparing two samples;
- unpaired (different items): per class a two-proportion difference with the pooled
  variance p(1 - p)(1/n1 + 1/n2) under "no change".

The class terms add (independent classes) into z = ΔBA / sd; p = 1 - Φ(z). False alarms are
held down three ways: a small one-sided level (0.01 by default), a minimum drop worth paging
for (a real but 0.01-sized drop does not page), and one open alert per rubric.

    >>> r = drift_test([True, False] * 50, [True, False] * 50, [True, False] * 50,
    ...                [True, True] * 50)
    >>> r.drop, r.test, r.p_value < 1e-6
    (0.5, 'paired-mcnemar', True)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evalcore.exact import sign_flip_tail
from judges.agreement import auroc, balanced_accuracy, cohen_kappa

Metric = Callable[[list[bool], list[bool], list[float]], float]


def _ba(y: list[bool], pred: list[bool], _risk: list[float]) -> float:
    return balanced_accuracy(y, pred)


def _kappa(y: list[bool], pred: list[bool], _risk: list[float]) -> float:
    return cohen_kappa(y, pred)


def _auroc(y: list[bool], _pred: list[bool], risk: list[float]) -> float:
    return auroc(y, risk)


METRICS: dict[str, Metric] = {"balanced_accuracy": _ba, "cohen_kappa": _kappa, "auroc": _auroc}


def agreement_with_intervals(
    positive: Sequence[bool],
    predicted: Sequence[bool],
    risk: Sequence[float],
    *,
    reps: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC, balanced accuracy and Cohen's κ, each with a percentile bootstrap interval.

    The bootstrap resamples within each class (stratified), so every replicate has both
    classes and the class balance of the anchor set is kept; a metric that is undefined on
    the data (AUROC with one class) is None.
    """
    y, pred, rk = list(positive), list(predicted), list(risk)
    if not (len(y) == len(pred) == len(rk)):
        raise ValueError("positive, predicted and risk must have the same length")
    pos = [i for i, v in enumerate(y) if v]
    neg = [i for i, v in enumerate(y) if not v]
    out: dict[str, Any] = {"n": len(y), "positives": len(pos), "confidence": confidence}
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {k: [] for k in METRICS}
    if pos and neg:
        for _ in range(reps):
            idx = [rng.choice(pos) for _ in pos] + [rng.choice(neg) for _ in neg]
            yy, pp, rr = [y[i] for i in idx], [pred[i] for i in idx], [rk[i] for i in idx]
            for name, fn in METRICS.items():
                draws[name].append(fn(yy, pp, rr))
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    for name, fn in METRICS.items():
        try:
            value: float | None = fn(y, pred, rk) if y else None
        except ValueError:
            value = None
        samples = sorted(draws[name])
        out[name] = {
            "value": value,
            "ci_low": _quantile(samples, lo_q) if samples and value is not None else None,
            "ci_high": _quantile(samples, hi_q) if samples and value is not None else None,
        }
    return out


def _quantile(sorted_values: list[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class DriftResult:
    test: str  # paired-mcnemar | two-proportion
    before: float  # balanced accuracy of the earlier run (on the compared items)
    after: float
    drop: float  # before - after
    z: float
    p_value: float
    n_before: int
    n_after: int
    alpha: float
    min_drop: float

    @property
    def alarm(self) -> bool:
        return self.p_value < self.alpha and self.drop >= self.min_drop

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "alarm": self.alarm}


def _upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _class_acc(y: Sequence[bool], pred: Sequence[bool], cls: bool) -> tuple[int, int]:
    hits = sum(1 for t, p in zip(y, pred, strict=True) if t is cls and p is cls)
    return hits, sum(1 for t in y if t is cls)


def drift_test(
    y_before: Sequence[bool],
    pred_before: Sequence[bool],
    y_after: Sequence[bool],
    pred_after: Sequence[bool],
    *,
    paired: bool = True,
    alpha: float = 0.01,
    min_drop: float = 0.05,
) -> DriftResult:
    """One-sided test that balanced accuracy fell from the `before` run to the `after` run.

    `paired=True` needs the same items in the same order (y_before == y_after).
    """
    y_before, y_after = [bool(v) for v in y_before], [bool(v) for v in y_after]
    pred_before, pred_after = [bool(v) for v in pred_before], [bool(v) for v in pred_after]
    if paired and y_before != y_after:
        raise ValueError("a paired test needs the same items, in the same order, in both runs")
    before = balanced_accuracy(y_before, pred_before)
    after = balanced_accuracy(y_after, pred_after)
    var = 0.0
    classes = 0
    for cls in (True, False):
        if paired:
            idx = [i for i, t in enumerate(y_before) if t is cls]
            if not idx:
                continue
            b = sum(1 for i in idx if pred_before[i] is cls and pred_after[i] is not cls)
            c = sum(1 for i in idx if pred_before[i] is not cls and pred_after[i] is cls)
            var += (b + c) / len(idx) ** 2
        else:
            h1, n1 = _class_acc(y_before, pred_before, cls)
            h2, n2 = _class_acc(y_after, pred_after, cls)
            if not n1 or not n2:
                continue
            pooled = (h1 + h2) / (n1 + n2)
            var += pooled * (1 - pooled) * (1 / n1 + 1 / n2)
        classes += 1
    drop = before - after
    # Balanced accuracy averages the classes present: its variance is the sum over classes².
    sd = math.sqrt(var) / classes if classes else 0.0
    z = drop / sd if sd > 0 else 0.0
    return DriftResult(
        test="paired-mcnemar" if paired else "two-proportion",
        before=before,
        after=after,
        drop=drop,
        z=z,
        p_value=_upper_tail(z) if sd > 0 else 1.0,
        n_before=len(y_before),
        n_after=len(y_after),
        alpha=alpha,
        min_drop=min_drop,
    )


def paired_drift_exact(
    y: Sequence[bool],
    pred_reference: Sequence[bool],
    pred_now: Sequence[bool],
    *,
    alpha: float = 0.01,
    min_drop: float = 0.05,
) -> DriftResult:
    """One-sided exact test that balanced accuracy fell from a reference run to this run of
    the same anchor items (`y` the labels, in the same order for both runs).

    Guarantee: when the judge has not changed, the two runs are exchangeable — an item
    whose verdict differs between them is as likely to have been right in either — and
    P(p_value ≤ alpha) ≤ alpha exactly, at any number of items (the conditional McNemar
    null, per class, convolved: evalcore.exact.sign_flip_tail). Against a *fixed* reference
    (the epoch's first run) the drift to date is measured whole, so a gradual slide is seen
    as a step of the same total is; over T runs in an epoch the expected number of false
    alarms is ≤ alpha·T (0.52 a year at weekly runs and alpha 0.01). Assumes the anchor
    items' verdicts are independent given the judge.

        >>> y = [True] * 50 + [False] * 50
        >>> ref = [True] * 45 + [False] * 5 + [False] * 45 + [True] * 5
        >>> now = [True] * 35 + [False] * 15 + [False] * 45 + [True] * 5
        >>> r = paired_drift_exact(y, ref, now)
        >>> round(r.drop, 2), r.alarm, r.test
        (0.1, True, 'paired-exact')
    """
    y, ref, now = (
        [bool(v) for v in y],
        [bool(v) for v in pred_reference],
        [bool(v) for v in pred_now],
    )
    if not (len(y) == len(ref) == len(now)):
        raise ValueError("labels and both runs' verdicts must cover the same items")
    changes = []
    for cls in (True, False):
        idx = [i for i, t in enumerate(y) if t is cls]
        lost = sum(1 for i in idx if ref[i] is cls and now[i] is not cls)
        gained = sum(1 for i in idx if ref[i] is not cls and now[i] is cls)
        changes.append((lost, gained, len(idx)))
    classes = [c for c in changes if c[2]]
    drop = (
        sum((lost - gained) / n for lost, gained, n in classes) / len(classes) if classes else 0.0
    )
    p = sign_flip_tail(changes, drop) if drop > 0 else 1.0
    # The normal approximation's z, for display beside the exact p.
    sd = math.sqrt(sum((lo + ga) / n**2 for lo, ga, n in classes)) / max(len(classes), 1)
    return DriftResult(
        test="paired-exact",
        before=balanced_accuracy(y, ref) if y else 0.0,
        after=balanced_accuracy(y, now) if y else 0.0,
        drop=drop,
        z=drop / sd if sd > 0 else 0.0,
        p_value=p,
        n_before=len(y),
        n_after=len(y),
        alpha=alpha,
        min_drop=min_drop,
    )
