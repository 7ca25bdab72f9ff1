"""The one retry/back-off policy: exponential growth, a cap, and jitter.

Every retry loop in the project (judge client, webhooks, OTLP export, the intake drain and
the enqueuers, worker reconnects, judge-outage deferrals) takes its delays from here, so
"how long until the next try" has one answer and one set of tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def backoff_s(
    attempt: int, *, base: float = 0.5, cap: float = 8.0, rng: random.Random | None = None
) -> float:
    """Delay before retry `attempt` (1-based): base * 2**(attempt-1), capped, with jitter
    in [half, full] so that many clients failing together do not retry in step."""
    exponent = min(max(attempt, 1) - 1, 60)  # 2**60 is far past any cap; avoids overflow
    high = min(cap, base * 2**exponent)
    return (rng or random).uniform(high / 2, high)


def wait_s(attempt: int, retry_after: float | None, *, base: float, cap: float) -> float:
    """A server's `Retry-After` wins (it knows when it will be back); else the back-off."""
    return retry_after if retry_after is not None else backoff_s(attempt, base=base, cap=cap)


@dataclass
class Backoff:
    """Stateful form for loops that retry until success: `next()` grows, `reset()` after a
    success."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = field(default=0, init=False)

    def next(self) -> float:
        self.attempt += 1
        return backoff_s(self.attempt, base=self.base, cap=self.cap)

    def reset(self) -> None:
        self.attempt = 0
