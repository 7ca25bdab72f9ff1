"""Inverse-probability weighted statistics: `WeightedStats` and `weight_of` live in
judges.weights, below every layer that shows a number (the /metrics gauges use them too);
they are re-exported here."""

from __future__ import annotations

from judges.weights import WeightedStats, weight_of

__all__ = ["WeightedStats", "weight_of"]
