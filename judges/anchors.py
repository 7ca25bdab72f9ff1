"""Anchor sets: a labelled set a rubric re-scores to check that its judge still agrees.

The rubric names the set in its TOML:

    [anchors]
    file = "anchors/faithfulness.jsonl"   # relative to the rubrics directory
    every = "7d"                          # re-score on this schedule (and on a new epoch)
    max_items = 200                       # stratified: balanced labels, at most this many
    min_agreement = 0.7                   # absolute floor: alert while not shown above it

Pure helpers only: which items to score (stratified, stable), what it will cost, and
whether a run shows the judge's agreement above the rubric's floor (`check_floor`).

    >>> pick = stratified_sample(["a", "b", "c", "d", "e"], [True, False, False, False, True], 4)
    >>> sorted(pick)
    [0, 2, 3, 4]
    >>> estimate_price(200, 1, 1500, 120, lambda m, i, o: (i * 0.15 + o * 0.6) / 1e6).usd
    0.0594
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from evalcore.exact import clopper_pearson_lower

PriceFn = Callable[[str | None, int, int], float]


class AnchorSpec(BaseModel):
    """The `[anchors]` table of a rubric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(min_length=1)
    every: str = "7d"
    max_items: int = Field(200, ge=2, le=10_000)
    # Same items every run (paired comparison, far more power) unless resample is set.
    resample: bool = False
    seed: int = 0
    # One-sided level of the drift test and the smallest drop worth paging for.
    alpha: float = Field(0.01, gt=0, lt=0.5)
    min_drop: float = Field(0.05, ge=0, le=1)
    # Skip a run whose estimate exceeds this (None: no cap).
    max_usd: float | None = Field(None, ge=0)
    # Absolute floor on the judge's balanced accuracy: every run (the first one too) alerts
    # while the agreement's lower confidence bound at level floor_alpha is below it
    # (check_floor). None: no floor, only drift against the reference run.
    min_agreement: float | None = Field(None, gt=0.5, lt=1)
    floor_alpha: float = Field(0.05, gt=0, lt=0.5)


def _rank(key: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def stratified_sample(
    keys: Sequence[str], positive: Sequence[bool], max_items: int, *, seed: str = "0"
) -> list[int]:
    """Indices of a label-balanced sample of at most `max_items` items.

    Each class gets half the budget; a class with fewer items gives its spare budget to the
    other, so a lopsided set still fills `max_items`. Within a class, items are ordered by a
    hash of (seed, key): the same file and seed always give the same items, and adding an
    item to the file moves at most one item in or out of the sample.
    """
    if len(keys) != len(positive):
        raise ValueError(f"{len(keys)} keys vs {len(positive)} labels")
    pos = sorted((i for i, p in enumerate(positive) if p), key=lambda i: _rank(keys[i], seed))
    neg = sorted((i for i, p in enumerate(positive) if not p), key=lambda i: _rank(keys[i], seed))
    half = max_items // 2
    take_pos = min(len(pos), max(half, max_items - len(neg)))
    take_neg = min(len(neg), max_items - take_pos)
    return sorted(pos[:take_pos] + neg[:take_neg])


def rotating_seed(base: int, run_number: int) -> str:
    """The sampling seed of run `run_number` when `resample` is on (a fresh sample per run)."""
    return f"{base}:{run_number}"


@dataclass(frozen=True, slots=True)
class PriceEstimate:
    items: int
    calls: int
    input_tokens: int
    output_tokens: int
    usd: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "items": self.items,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usd": self.usd,
        }


def estimate_price(
    items: int,
    calls_per_item: float,
    mean_input_tokens: float,
    mean_output_tokens: float,
    price: PriceFn,
    model: str | None = None,
) -> PriceEstimate:
    """calls × mean tokens × price, computed before a run (no cache: every call is paid)."""
    calls = round(items * calls_per_item)
    tin, tout = round(calls * mean_input_tokens), round(calls * mean_output_tokens)
    return PriceEstimate(items, calls, tin, tout, round(price(model, tin, tout), 6))


def calls_per_item(scorer: str, method: str, samples: int = 1) -> float:
    """Judge calls one item costs, by scorer and method (measured runs replace this guess)."""
    if method in ("local", "embeddings"):
        return 0.0
    if method == "cascade":
        return 1.0  # no certification outside the worker's router: every item is judged
    if method == "two_step" or scorer in ("answer_relevance", "context_relevance"):
        return 2.0
    if scorer == "self_consistency":
        return float(max(samples, 1))
    return 1.0


@dataclass(frozen=True, slots=True)
class FloorCheck:
    """One anchor run against the rubric's `min_agreement` floor (see `check_floor`)."""

    floor: float
    alpha: float
    n_pos: int
    n_neg: int
    hits_pos: int  # positives the judge failed (its verdict agrees with the label)
    hits_neg: int  # negatives the judge passed
    unscored: int  # items without a verdict (errors, skips): counted as disagreements
    balanced_accuracy: float
    lower: float  # the balanced accuracy's one-sided lower confidence bound at 1 - alpha
    best_lower: float  # the highest `lower` this set can reach (a perfect judge)

    @property
    def below(self) -> bool:
        return self.lower < self.floor

    @property
    def clearable(self) -> bool:
        """Whether any judge could clear the floor on a set this small."""
        return self.best_lower >= self.floor

    def to_json(self) -> dict[str, float | int | bool]:
        return {
            "min_agreement": self.floor,
            "alpha": self.alpha,
            "n_pos": self.n_pos,
            "n_neg": self.n_neg,
            "hits_pos": self.hits_pos,
            "hits_neg": self.hits_neg,
            "unscored": self.unscored,
            "balanced_accuracy": round(self.balanced_accuracy, 6),
            "lower": round(self.lower, 6),
            "best_lower": round(self.best_lower, 6),
            "below": self.below,
            "clearable": self.clearable,
        }


def _ba_lower(hits_pos: int, n_pos: int, hits_neg: int, n_neg: int, alpha: float) -> float:
    return (
        clopper_pearson_lower(hits_pos, n_pos, alpha / 2)
        + clopper_pearson_lower(hits_neg, n_neg, alpha / 2)
    ) / 2


def check_floor(
    positive: Sequence[bool], agreed: Sequence[bool | None], *, floor: float, alpha: float
) -> FloorCheck:
    """Is the judge's balanced accuracy shown to be at least `floor`?

    `positive[i]` is the human label of anchor item i (it fails the rubric), `agreed[i]`
    whether the judge's verdict matched it (None: no verdict — an error or a skip — which
    counts as a disagreement: a judge that cannot answer does not agree).

    Decision: alert (`below`) when the lower confidence bound of the balanced accuracy,
    (L_pos + L_neg) / 2 with L the exact one-sided Clopper-Pearson bound of each class's hit
    rate at alpha/2, is below `floor`. Guarantee: a judge whose true balanced accuracy is
    below the floor passes a run silently with probability ≤ alpha (both class bounds hold
    together with probability ≥ 1 - alpha by the union bound, and then the balanced
    accuracy is ≥ the bound), from the first run on and whatever earlier runs said.
    Assumptions: the anchor items of each class are a random sample of the traffic they
    stand for, and the judge's verdicts on them are independent given the class. The price
    of that guarantee is alerts on good judges measured on too few items: a judge above the
    floor is alerted on with probability `alert_probability(...)`, which falls with the
    set's size and the judge's margin over the floor; `clearable` is False when even a
    perfect judge could not clear the floor on this set.

        >>> check = check_floor([True] * 50 + [False] * 50, [True] * 100, floor=0.7, alpha=0.01)
        >>> check.below, round(check.lower, 3)
        (False, 0.899)
        >>> constant = check_floor([True] * 50 + [False] * 50, [False] * 50 + [True] * 50,
        ...                        floor=0.7, alpha=0.01)
        >>> constant.below, constant.balanced_accuracy
        (True, 0.5)
    """
    if len(positive) != len(agreed):
        raise ValueError(f"{len(positive)} labels vs {len(agreed)} verdicts")
    n_pos = sum(bool(p) for p in positive)
    n_neg = len(positive) - n_pos
    hits_pos = sum(1 for p, a in zip(positive, agreed, strict=True) if p and a)
    hits_neg = sum(1 for p, a in zip(positive, agreed, strict=True) if not p and a)
    if not n_pos or not n_neg:
        lower = best = 0.0  # one class only: balanced accuracy is not measured at all
        ba = 0.0
    else:
        lower = _ba_lower(hits_pos, n_pos, hits_neg, n_neg, alpha)
        best = _ba_lower(n_pos, n_pos, n_neg, n_neg, alpha)
        ba = (hits_pos / n_pos + hits_neg / n_neg) / 2
    return FloorCheck(
        floor=floor,
        alpha=alpha,
        n_pos=n_pos,
        n_neg=n_neg,
        hits_pos=hits_pos,
        hits_neg=hits_neg,
        unscored=sum(a is None for a in agreed),
        balanced_accuracy=ba,
        lower=lower,
        best_lower=best,
    )


def alert_probability(
    tpr: float, tnr: float, n_pos: int, n_neg: int, *, floor: float, alpha: float
) -> float:
    """The exact probability that `check_floor` alerts on a judge with these true class
    hit rates, on a set of n_pos + n_neg items (binomial sums; O(n_pos · n_neg))."""
    lower_pos = [clopper_pearson_lower(k, n_pos, alpha / 2) for k in range(n_pos + 1)]
    lower_neg = [clopper_pearson_lower(k, n_neg, alpha / 2) for k in range(n_neg + 1)]
    p_pos = [math.comb(n_pos, k) * tpr**k * (1 - tpr) ** (n_pos - k) for k in range(n_pos + 1)]
    p_neg = [math.comb(n_neg, k) * tnr**k * (1 - tnr) ** (n_neg - k) for k in range(n_neg + 1)]
    return sum(
        p_pos[i] * p_neg[j]
        for i in range(n_pos + 1)
        for j in range(n_neg + 1)
        if (lower_pos[i] + lower_neg[j]) / 2 < floor
    )
