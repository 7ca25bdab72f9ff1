"""Regression policy: the `[regression]` / `[alerts.policy]` tables, parsed and validated.

Pure and dependency-free so that settings validation (the bottom layer) can check a policy
without loading the store or the statistics.

    >>> parse_duration("6h"), parse_duration("7d")
    (datetime.timedelta(seconds=21600), datetime.timedelta(days=7))
    >>> parse_policy({"window": "2h"}).policy.window
    datetime.timedelta(seconds=7200)
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

AdjustMethod = Literal["bh", "bonferroni", "none"]


@dataclass(frozen=True)
class RegressionPolicy:
    window: timedelta = timedelta(hours=6)
    baseline: timedelta = timedelta(days=7)
    min_samples: int = 10
    min_effect_mean: float = 0.05
    min_effect_pass_rate: float = 0.05
    alpha: float = 0.01
    method: AdjustMethod = "bh"
    arl: float = 2_000_000.0  # e-detector: evaluations per false alert, at least, per group
    confidence: float = 0.95  # of the intervals reported in alerts

    def __post_init__(self) -> None:
        if self.window <= timedelta(0) or self.baseline <= timedelta(0):
            raise ValueError("window and baseline must be positive durations")
        if self.min_samples < 2:
            raise ValueError(f"min_samples must be >= 2, got {self.min_samples}")
        if not (0 < self.alpha < 1 and 0 < self.confidence < 1):
            raise ValueError("alpha and confidence must lie strictly between 0 and 1")
        if self.min_effect_mean < 0 or self.min_effect_pass_rate < 0:
            raise ValueError("effect-size bounds must be >= 0")
        if self.method not in ("bh", "bonferroni", "none"):
            raise ValueError(f"method must be 'bh', 'bonferroni' or 'none', got {self.method!r}")
        if self.arl <= 1:
            raise ValueError(f"arl must be > 1, got {self.arl}")


LABELS = ("prompt_version", "model", "feature", "tenant")
DETECTORS = ("sequential", "window", "both")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FLOAT_KEYS = ("min_effect_mean", "min_effect_pass_rate", "alpha", "arl", "confidence")
POLICY_KEYS = ("window", "baseline", "min_samples", *_FLOAT_KEYS, "method", "detector", "group_by")


def parse_duration(text: str | int | float) -> timedelta:
    """'30m', '6h', '7d', '2w' (or a number of seconds) → timedelta."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a duration; use e.g. 30m, 6h, 7d")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class CheckConfig:
    """How one rubric is checked: the statistics policy, what pages, and the group labels."""

    policy: RegressionPolicy
    detector: str = "sequential"
    group_by: tuple[str, ...] = ("prompt_version", "model", "feature")
    # 1 / the smallest inclusion probability the sampler can give this rubric's records,
    # known before any record: the e-processes' Horvitz–Thompson bets are scaled by it.
    max_weight: float = 1.0


def inclusion_floor(rate: float, budget_min_rate: float | None) -> float:
    """The smallest inclusion probability a rubric's records can carry: its sampling rate,
    or under a judge budget the budget's floor if that is lower (tail rules only raise p).
    Under a binding day cap a realised probability can fall below it (the window's
    admissions over its draws): the e-processes count such a record at this floor
    (`SequentialState.clamped`), an approximation the guarantees page states.

    >>> inclusion_floor(0.1, None), inclusion_floor(0.1, 0.01), inclusion_floor(0.0, None)
    (0.1, 0.01, 1.0)
    """
    floor = rate if budget_min_rate is None else min(rate, budget_min_rate)
    return floor if floor > 0 else 1.0  # rate 0: only tail traces, each at p = 1


def _number(key: str, value: Any, *, integer: bool = False) -> float:
    # TOML gives int/float; a string, a bool or a fractional min_samples is a typo, not data.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: must be {'an integer' if integer else 'a number'}, got {value!r}")
    if integer and not float(value).is_integer():
        raise ValueError(f"{key}: must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key}: must be a finite number, got {value!r}")
    return value


def _one_key(key: str, value: Any, kw: dict[str, Any]) -> None:
    """Check one key, storing its parsed value in `kw`; ValueError names key and allowed values."""
    if key in ("window", "baseline"):
        try:
            kw[key] = parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    elif key == "min_samples":
        kw[key] = int(_number(key, value, integer=True))
    elif key in _FLOAT_KEYS:
        kw[key] = float(_number(key, value))
    elif key == "method":
        if value not in ("bh", "bonferroni", "none"):
            raise ValueError(f"method: must be one of bh, bonferroni, none, got {value!r}")
        kw[key] = value
    elif key == "detector":
        if value not in DETECTORS:
            raise ValueError(f"detector: must be one of {', '.join(DETECTORS)}, got {value!r}")
    elif key == "group_by":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"group_by: must be a list of labels ({', '.join(LABELS)})")
        bad = [x for x in value if x not in LABELS]
        if bad:
            raise ValueError(f"group_by: unknown label {bad[0]!r}; use {', '.join(LABELS)}")


def policy_problems(data: Mapping[str, Any]) -> list[str]:
    """Every problem of a [regression] / [alerts.policy] table, one message each (key first)."""
    problems: list[str] = []
    kw: dict[str, Any] = {}
    for key in data:
        if key not in POLICY_KEYS:
            close = difflib.get_close_matches(str(key), POLICY_KEYS, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"unknown key {key!r}; {hint}allowed: {', '.join(POLICY_KEYS)}")
            continue
        try:
            _one_key(key, data[key], kw)
        except ValueError as exc:
            problems.append(str(exc))
    if not problems:
        try:
            RegressionPolicy(**kw)  # the rules between keys (and any left)
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def parse_policy(data: Mapping[str, Any], group_by: Sequence[str] = LABELS[:3]) -> CheckConfig:
    """Validate a [regression] / [alerts.policy] table; ValueError names every bad key."""
    problems = policy_problems(data)
    if problems:
        raise ValueError("; ".join(problems))
    kw: dict[str, Any] = {}
    for key in data:
        _one_key(key, data[key], kw)
    detector = str(data.get("detector", "sequential"))
    return CheckConfig(RegressionPolicy(**kw), detector, tuple(data.get("group_by", group_by)))
