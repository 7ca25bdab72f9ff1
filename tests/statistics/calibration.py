"""What every calibration test shares: the tolerance rule and seeded streams.

The rule (issue: decisions valid): a cell of the suite — one decision, one null, one n —
runs ≥ 2,000 seeded replicates and fails when the one-sided 99 % Clopper–Pearson *lower*
bound of its false-decision rate exceeds the level the decision states. A decision at its
level passes with probability ≥ 99 %; one at twice its level is caught at 2,000 replicates.
"""

from __future__ import annotations

import numpy as np

from evalcore.exact import clopper_pearson_lower

SEEDS = 2000


def assert_within_level(false_decisions: int, replicates: int, level: float, cell: str) -> None:
    lower = clopper_pearson_lower(false_decisions, replicates, 0.01)
    rate = false_decisions / replicates
    assert lower <= level, (
        f"{cell}: {false_decisions}/{replicates} false decisions (rate {rate:.4f}; 99 % lower "
        f"bound {lower:.4f}) exceeds the stated level {level}"
    )


def beta_scores(rng: np.random.Generator, mean: float, size: tuple[int, ...]) -> np.ndarray:
    """Continuous scores in [0, 1] with the given mean (Beta with concentration 4: spread
    like judge scores, a fair share near both ends)."""
    k = 4.0
    return rng.beta(mean * k, (1 - mean) * k, size=size)
