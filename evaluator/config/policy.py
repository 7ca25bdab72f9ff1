"""Regression policy: the `[regression]` / `[alerts.policy]` tables, parsed and validated.

Pure and dependency-free so that settings validation (the bottom layer) can check a policy
without loading the store or the statistics.

    >>> parse_duration("6h"), parse_duration("7d")
    (datetime.timedelta(seconds=21600), datetime.timedelta(days=7))
    >>> parse_policy({"window": "2h"}).policy.window
    datetime.timedelta(seconds=7200)
"""

from __future__ import annotations

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


def parse_policy(data: Mapping[str, Any], group_by: Sequence[str] = LABELS[:3]) -> CheckConfig:
    """Validate a [regression] / [alerts.policy] table; ValueError names the key."""
    unknown = sorted(set(data) - set(POLICY_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed: {', '.join(POLICY_KEYS)}")
    kw: dict[str, Any] = {}
    try:
        for key in ("window", "baseline"):
            if key in data:
                try:
                    kw[key] = parse_duration(data[key])
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        if "min_samples" in data:
            kw["min_samples"] = int(data["min_samples"])
        for key in _FLOAT_KEYS:
            if key in data:
                kw[key] = float(data[key])
        if "method" in data:
            kw["method"] = str(data["method"])
        policy = RegressionPolicy(**kw)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    detector = str(data.get("detector", "sequential"))
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    labels = tuple(data.get("group_by", group_by))
    bad = [x for x in labels if x not in LABELS]
    if bad:
        raise ValueError(f"group_by: unknown label {bad[0]!r}; use {', '.join(LABELS)}")
    return CheckConfig(policy, detector, labels)
