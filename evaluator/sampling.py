"""Sampling decisions (pure): which traces a rubric evaluates.

Rate sampling hashes the trace ID into [0, 1): a trace is in when its point is below the rate.
The same trace is always in or out, and a lower rate's sample is a subset of a higher
rate's. Tail rules override the rate for the traces that matter most.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only read for attributes; the app-side import stays light
    from evaluator.traces.model import Trace

# The range each numeric signal may take; anything else (NaN, ±Inf, negative cost) is a bug
# in the caller. The value is dropped (and counted by the enqueuer), the trace ID still goes.
SIGNAL_RANGES: dict[str, tuple[float, float]] = {
    "cost_usd": (0.0, 1e6),
    "latency_ms": (0.0, 1e10),
    "feedback": (-1e6, 1e6),
}


def checked_value(name: str, value: object) -> float | None:
    """`value` as a float when it is a finite number in the signal's range, else None."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    low, high = SIGNAL_RANGES[name]
    return number if math.isfinite(number) and low <= number <= high else None


class Reason(StrEnum):
    RATE = "rate"
    ERROR = "tail_error"
    COST = "tail_cost"
    LATENCY = "tail_latency"
    FEEDBACK = "tail_feedback"
    NOT_SAMPLED = "not_sampled"
    # With a [budget]: sampled but over the window's hard cap (counted, not evaluated), and
    # tail-rule traces over the cap, held for the next window (evaluated then, never dropped).
    NOT_SAMPLED_BUDGET = "not_sampled_budget"
    BUDGET_DEFERRED = "budget_deferred"


@dataclass(frozen=True, slots=True)
class TailRules:
    on_error: bool = True
    on_negative_feedback: bool = True
    cost_above_usd: float = 0.0  # 0 disables
    latency_above_ms: float = 0.0  # 0 disables


@dataclass(frozen=True, slots=True)
class Signals:
    """What the app (or the stored trace) says about a finished request."""

    error: bool = False
    cost_usd: float | None = None
    latency_ms: float | None = None
    feedback: float | None = None

    def to_wire(self) -> dict[str, float | bool]:
        out: dict[str, float | bool] = {}
        if self.error:
            out["e"] = True
        if self.cost_usd is not None:
            out["c"] = self.cost_usd
        if self.latency_ms is not None:
            out["l"] = self.latency_ms
        if self.feedback is not None:
            out["f"] = self.feedback
        return out

    @classmethod
    def checked(
        cls,
        *,
        error: bool = False,
        cost_usd: object = None,
        latency_ms: object = None,
        feedback: object = None,
    ) -> tuple[Signals, list[str]]:
        """Signals keeping only valid values, and the names of the values refused."""
        given = {"cost_usd": cost_usd, "latency_ms": latency_ms, "feedback": feedback}
        kept = {name: checked_value(name, value) for name, value in given.items()}
        refused = [n for n, v in given.items() if v is not None and kept[n] is None]
        return cls(error=error is True, **kept), refused

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> Signals:
        # Entries written by older apps may carry NaN/Infinity (json.dumps allows them).
        signals, _ = cls.checked(
            error=data.get("e") is True,
            cost_usd=data.get("c"),
            latency_ms=data.get("l"),
            feedback=data.get("f"),
        )
        return signals

    def merged(self, other: Signals) -> Signals:
        return Signals(
            error=self.error or other.error,
            cost_usd=self.cost_usd if self.cost_usd is not None else other.cost_usd,
            latency_ms=self.latency_ms if self.latency_ms is not None else other.latency_ms,
            feedback=self.feedback if self.feedback is not None else other.feedback,
        )


LABEL_MAX = 256  # the width of the label columns


def checked_label(value: object) -> str | None:
    """`value` when it is a usable stratum label (a printable str of 1..256 chars), else None."""
    if not isinstance(value, str) or not value or len(value) > LABEL_MAX:
        return None
    return value if value.isprintable() else None


@dataclass(frozen=True, slots=True)
class Labels:
    """The stratum labels an app may send with a trace ID (budgeted allocation uses them)."""

    feature: str | None = None
    tenant: str | None = None
    prompt_version: str | None = None

    def __bool__(self) -> bool:
        return not (self.feature is None and self.tenant is None and self.prompt_version is None)

    def to_wire(self) -> dict[str, str]:
        out = {"ft": self.feature, "tn": self.tenant, "pv": self.prompt_version}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def checked(
        cls, *, feature: object = None, tenant: object = None, prompt_version: object = None
    ) -> tuple[Labels, list[str]]:
        """Labels keeping only valid values, and the names of the values refused."""
        given = {"feature": feature, "tenant": tenant, "prompt_version": prompt_version}
        kept = {name: checked_label(value) for name, value in given.items()}
        refused = [n for n, v in given.items() if v is not None and kept[n] is None]
        return cls(**kept), refused

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> Labels:
        labels, _ = cls.checked(
            feature=data.get("ft"), tenant=data.get("tn"), prompt_version=data.get("pv")
        )
        return labels


def hash_point(trace_id: str) -> float:
    """A stable point in [0, 1) for the trace ID (first 8 bytes of blake2b)."""
    digest = hashlib.blake2b(trace_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def tail_reason(signals: Signals, rules: TailRules) -> Reason | None:
    if rules.on_error and signals.error:
        return Reason.ERROR
    if rules.on_negative_feedback and signals.feedback is not None and signals.feedback < 0:
        return Reason.FEEDBACK
    if (
        rules.cost_above_usd > 0
        and signals.cost_usd is not None
        and signals.cost_usd > rules.cost_above_usd
    ):
        return Reason.COST
    if (
        rules.latency_above_ms > 0
        and signals.latency_ms is not None
        and signals.latency_ms > rules.latency_above_ms
    ):
        return Reason.LATENCY
    return None


def decide(point: float, rate: float, signals: Signals, rules: TailRules) -> Reason:
    """Why the trace is evaluated at `rate`, or Reason.NOT_SAMPLED."""
    if point < rate:
        return Reason.RATE
    return tail_reason(signals, rules) or Reason.NOT_SAMPLED


def trace_signals(trace: Trace) -> Signals:
    """What a stored trace says about itself (a stored value out of range is ignored)."""
    signals, _ = Signals.checked(
        error=trace.is_error,
        cost_usd=trace.cost_usd,
        latency_ms=trace.latency_ms,
        feedback=trace.feedback,
    )
    return signals


def trace_labels(trace: Trace) -> Labels:
    """The stratum labels a stored trace carries (a label out of shape is left out)."""
    labels, _ = Labels.checked(
        feature=trace.feature, tenant=trace.tenant, prompt_version=trace.prompt_version
    )
    return labels
