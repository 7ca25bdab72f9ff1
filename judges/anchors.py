"""Anchor sets: a labelled set a rubric re-scores to check that its judge still agrees.

The rubric names the set in its TOML:

    [anchors]
    file = "anchors/faithfulness.jsonl"   # relative to the rubrics directory
    every = "7d"                          # re-score on this schedule (and on a new epoch)
    max_items = 200                       # stratified: balanced labels, at most this many

Pure helpers only: which items to score (stratified, stable) and what it will cost.

    >>> pick = stratified_sample(["a", "b", "c", "d", "e"], [True, False, False, False, True], 4)
    >>> sorted(pick)
    [0, 2, 3, 4]
    >>> estimate_price(200, 1, 1500, 120, lambda m, i, o: (i * 0.15 + o * 0.6) / 1e6).usd
    0.0594
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

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
