"""Adaptive concurrency for judge calls: find the endpoint's capacity instead of assuming it.

A judge endpoint's capacity is unknown and changes: a llama.cpp server with 2 slots queues
everything beyond 2 until the queued requests time out; a cloud endpoint answers 429 when a
tenant's share is spent. `AdaptiveConcurrency` is an AIMD limit (additive increase,
multiplicative decrease — TCP's congestion control, applied to requests in flight):

- it starts low (`initial`, 2 by default) and grows by 1 after each window of `limit`
  successful calls made while it was full (about one per round trip), up to `maximum`
  (`judge.max_concurrency`);
- it halves (`decrease_factor`) on a timeout, a 429, or a reply whose latency is more than
  `latency_tolerance` (1.5) times its running baseline and more than `latency_floor_s`
  (0.25 s) above it — the signal that requests now queue at the server. The baseline is
  kept per request kind (the reply schema), because a long reply is slow without any
  queueing; it follows faster replies at once and slower ones slowly (`baseline_rise` of
  the gap per sample), so a queue does not become the baseline;
- it reacts at most once per window: only a call that started after the last decrease can
  cause another, so 32 timeouts of one overloaded burst halve the limit once, not 32 times.

A call waits for a slot first come first served, for as long as the endpoint keeps
answering: a slow endpoint at its real capacity (a CPU server answers one request every
10-30 s) drains a long queue, one slot at a time. A waiter gives up (`SlotTimeout`) when the
endpoint answered nothing for its `timeout_s` (behind a hanging endpoint the queue fails as
fast as the calls in flight time out), or at the caller's deadline (`slots_until`: a worker
job's, so that no call starts an attempt it has no time left to finish).

One limiter per JudgeClient, and the worker builds one JudgeClient for all its rubrics, so
every rubric of a worker process shares it. It does not coordinate across processes (each
converges on its share); rate limits shared by all processes are `RateLimiter`'s job.

    >>> limiter = AdaptiveConcurrency(32)
    >>> limiter.limit, limiter.maximum
    (2, 32)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

Outcome = Literal["ok", "timeout", "rate_limited", "error"]


class SlotTimeout(Exception):
    """No slot within the wait the caller allowed (`acquire(timeout_s, deadline)`)."""


# The latest time.monotonic() at which a judge call in this context may start an attempt.
_DEADLINE: ContextVar[float | None] = ContextVar("judge_slot_deadline", default=None)


@contextmanager
def slots_until(deadline: float | None) -> Iterator[None]:
    """Judge calls made in this context start no attempt after `deadline` (a
    `time.monotonic()` value; None: no deadline): a call still waiting for a slot then, or
    retrying after it, fails as a timeout at once. A worker job sets its own: past it, at
    most one attempt in flight and its back-offs remain, which the job's timeout covers.

    >>> with slots_until(time.monotonic() + 60):
    ...     pass
    """
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def slot_deadline() -> float | None:
    """The deadline `slots_until` set for this context, if any."""
    return _DEADLINE.get()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted call: when it started, in which window, and how many times the limit
    had been filled when it did (it ran at a full limit if that count moves before it ends)."""

    started: float
    window: int
    fills: int


class AdaptiveConcurrency:
    """An AIMD limit on calls in flight (see the module docstring).

    `acquire()` waits for a slot and returns a Ticket; `release(ticket, outcome, kind)`
    frees it and feeds the outcome back. `async with limiter:` holds a slot without
    feedback (for callers that cannot tell a timeout from an answer, e.g. ragas's client).
    """

    def __init__(
        self,
        maximum: int,
        *,
        initial: int = 2,
        minimum: int = 1,
        decrease_factor: float = 0.5,
        latency_tolerance: float = 1.5,
        latency_floor_s: float = 0.25,
        baseline_rise: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maximum < 1 or not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum ({minimum}) <= maximum ({maximum})")
        self.maximum = maximum
        self.minimum = minimum
        self.limit = max(minimum, min(initial, maximum))
        self.decrease_factor = decrease_factor
        self.latency_tolerance = latency_tolerance
        self.latency_floor_s = latency_floor_s
        self.baseline_rise = baseline_rise
        self._clock = clock
        self._window = 0
        self._streak = 0
        self._in_flight = 0
        self._waiting = 0
        self._fills = 0  # how many admissions filled the limit
        self._answered_at = 0.0  # when the endpoint last answered (`clock`)
        self.peak_in_flight = 0
        self.released = 0  # calls that ended, whatever their outcome
        self.increases = 0
        self.decreases: dict[str, int] = {"timeout": 0, "rate_limited": 0, "latency": 0}
        self.baselines: dict[str, float] = {}
        self._queue: deque[asyncio.Future[None]] = deque()  # calls waiting, oldest first

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(
        self, timeout_s: float | None = None, deadline: float | None = None
    ) -> Ticket:
        """A slot, else `SlotTimeout` once the endpoint has answered nothing for `timeout_s`
        while this call waited (None: no such bound), or at `deadline` (time.monotonic();
        default: `slot_deadline()`). Callers pass their per-attempt timeout: behind a
        hanging endpoint calls queued for a slot fail as that endpoint's timeouts do (and
        their job defers), while behind a slow one that answers they wait their turn."""
        if deadline is None:
            deadline = slot_deadline()
        await self._take(timeout_s, deadline)
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        fills = self._fills
        if self._in_flight >= self.limit:
            self._fills += 1
            fills -= 1  # this call itself filled it
        return Ticket(self._clock(), self._window, fills)

    async def _take(self, timeout_s: float | None, deadline: float | None) -> None:
        """Count one more call in flight, first come first served. A freed slot is handed
        to the oldest waiter (its future resolved, the slot counted for it), so a release
        wakes one waiter, not all of them: with dozens queued, waking all cost more CPU
        than the calls (bench/paired.py)."""
        started = self._clock()
        if deadline is not None and started >= deadline:
            raise SlotTimeout(self._refusal("the caller's deadline for judge calls has passed"))
        if not self._queue and self._in_flight < self.limit:
            self._in_flight += 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(slot)
        self._waiting += 1
        try:
            await self._wait_for_slot(slot, started, timeout_s, deadline)
        except BaseException:
            if slot.done() and not slot.cancelled():  # handed a slot, then gave up: pass it on
                self._in_flight -= 1
                self._hand_on()
            raise
        finally:
            self._waiting -= 1
            if slot in self._queue:
                self._queue.remove(slot)

    async def _wait_for_slot(
        self,
        slot: asyncio.Future[None],
        started: float,
        timeout_s: float | None,
        deadline: float | None,
    ) -> None:
        """Wait while the endpoint keeps answering (an answer within the last `timeout_s`)
        and the deadline is ahead; a wait cut short is re-armed from the last answer. Times
        are the limiter's `clock` (time.monotonic, or a test's), read again at each wake-up."""
        while True:
            now = self._clock()
            until = deadline if deadline is not None else float("inf")
            if timeout_s is not None:
                until = min(until, max(started, self._answered_at) + timeout_s)
            if until <= now:
                if deadline is not None and now >= deadline:
                    raise SlotTimeout(self._refusal("the caller's deadline for judge calls came"))
                raise SlotTimeout(
                    self._refusal(f"the endpoint answered nothing for {timeout_s:g} s")
                )
            try:
                await asyncio.wait_for(
                    asyncio.shield(slot), None if until == float("inf") else until - now
                )
                return
            except TimeoutError:
                if slot.done() and not slot.cancelled():
                    return  # handed a slot just as the wait ran out: take it

    def _refusal(self, why: str) -> str:
        return (
            f"no judge call slot: {why} ({self._in_flight} in flight, {self._waiting} waiting, "
            f"limit {self.limit})"
        )

    def _hand_on(self) -> None:
        """Give free slots (under the current limit) to the oldest live waiters."""
        while self._queue and self._in_flight < self.limit:
            slot = self._queue.popleft()
            if not slot.done():
                slot.set_result(None)
                self._in_flight += 1

    async def release(self, ticket: Ticket, outcome: Outcome, kind: str = "") -> str | None:
        """Free the slot and adapt; returns "increase", "decrease:<reason>" or None."""
        change = self._adapt(ticket, outcome, kind)
        if outcome != "timeout":  # the endpoint answered (even a refusal): it is alive
            self._answered_at = self._clock()
        self._in_flight -= 1
        self.released += 1
        self._hand_on()
        return change

    def _adapt(self, ticket: Ticket, outcome: Outcome, kind: str) -> str | None:
        if outcome in ("timeout", "rate_limited"):
            return self._decrease(ticket, outcome)
        if outcome != "ok":
            return None  # a 4xx or an unusable reply says nothing about capacity
        latency = self._clock() - ticket.started
        base = self.baselines.get(kind)
        if base is None or latency < base:
            self.baselines[kind] = latency
        else:
            self.baselines[kind] = base + self.baseline_rise * (latency - base)
        # Queueing at the server adds at least a service time: an excess of a few ms over a
        # ms baseline is the event loop's jitter, not a queue (it held a fast judge at 2-3 in
        # flight, and small group commits raised the worker's CPU per trace 1.6x).
        slow = latency > self.latency_tolerance * base if base is not None and base > 0 else False
        if slow and base is not None and latency - base > self.latency_floor_s:
            return self._decrease(ticket, "latency")
        if ticket.fills == self._fills:
            return None  # the limit was never full during this call: no evidence it can grow
        self._streak += 1
        if self._streak >= self.limit and self.limit < self.maximum:
            self.limit += 1
            self._streak = 0
            self.increases += 1
            return "increase"
        return None

    def _decrease(self, ticket: Ticket, reason: str) -> str | None:
        if ticket.window != self._window:
            return None  # this window already halved the limit
        self._window += 1
        self._streak = 0
        self.limit = max(self.minimum, int(self.limit * self.decrease_factor))
        self.decreases[reason] += 1
        return f"decrease:{reason}"

    # The old interface (hold a slot; tell successes and 429s apart by hand).
    async def __aenter__(self) -> None:
        await self._take(None, None)
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

    async def __aexit__(self, *exc: object) -> None:
        self._in_flight -= 1
        self._hand_on()

    def on_rate_limited(self) -> None:
        """A 429 seen outside `release` (e.g. through ragas's own client)."""
        self._decrease(Ticket(self._clock(), self._window, self._fills), "rate_limited")

    def stats(self) -> dict[str, Any]:
        """For the worker's heartbeat and `evaluator health`: where the limit stands."""
        return {
            "limit": self.limit,
            "maximum": self.maximum,
            "in_flight": self._in_flight,
            "waiting": self._waiting,
            "peak_in_flight": self.peak_in_flight,
            "released": self.released,
            "increases": self.increases,
            "decreases": dict(self.decreases),
        }
