"""Waiting on state, not on the clock: poll a condition until it holds or a generous deadline
passes. A loaded machine only makes the wait longer; it never turns a pass into a failure
unless the deadline (tens of seconds) is reached, and then the message says what was awaited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEADLINE_S = 30.0
_STEP_S = 0.01  # the interval between looks at the state, not a wait for it


def wait_until(condition: Callable[[], object], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Return as soon as `condition()` is truthy; fail naming `what` after `deadline_s`."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"still waiting after {deadline_s:.0f} s for {what}")
        time.sleep(_STEP_S)


async def until(
    condition: Callable[[], object | Awaitable[object]], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """The asynchronous `wait_until`: the event loop keeps running between looks, and
    `condition` may be a coroutine function."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > end:
            raise AssertionError(f"still waiting after {deadline_s:.0f} s for {what}")
        await asyncio.sleep(_STEP_S)
