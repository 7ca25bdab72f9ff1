"""SharedCalls: one judge call awaited by several scorers of the same case.

The combined RAG method asks one question for three rubrics (faithfulness, answer and context
relevance). The worker runs a trace's rubrics as separate coroutines over one `Clients`, so
the first of them to ask starts the call and the others await the same task, whether they
run concurrently or one after another. An entry leaves the memo as soon as every part it
serves has taken its result, when its call fails (a retried job must ask again, not replay
the failure), or when the memo is full or the entry is older than `ttl_s` (a trace that
sampled only some of the parts). Keys carry the case's identity and content digest, so an
entry can never answer for another case.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class _Entry:
    task: asyncio.Future[Any]
    issuer: str
    parts: frozenset[str]
    created: float
    taken: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Shared:
    """A shared call's result for one part: `issued` is True for the caller that started it
    (it alone carries the call's cost, so a trace's cost is counted once)."""

    value: Any
    issued: bool
    issuer: str


class SharedCalls:
    """A bounded map from call key to the one task computing it."""

    def __init__(self, max_entries: int = 1024, ttl_s: float = 300.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        key: Hashable,
        *,
        part: str,
        parts: frozenset[str],
        issuer: str,
        call: Callable[[], Awaitable[Any]],
    ) -> Shared:
        """The result of `call()` for `key`, started now unless another part already did.

        Exceptions from the call reach every waiter. Cancelling one waiter does not cancel the
        call the others wait for.
        """
        entry = self._entries.get(key)
        issued = entry is None
        if entry is None:
            self._prune()
            entry = _Entry(asyncio.ensure_future(call()), issuer, parts, time.monotonic())
            entry.task.add_done_callback(functools.partial(self._done, key, entry))
            self._entries[key] = entry
        entry.taken.add(part)
        if entry.taken >= entry.parts:
            self._drop(key, entry)
        value = await asyncio.shield(entry.task)
        return Shared(value, issued, entry.issuer)

    def _done(self, key: Hashable, entry: _Entry, task: asyncio.Future[Any]) -> None:
        if task.cancelled() or task.exception() is not None:  # also marks it retrieved
            self._drop(key, entry)

    def _drop(self, key: Hashable, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]

    def _prune(self) -> None:
        horizon = time.monotonic() - self.ttl_s
        # Insertion order is age order: drop expired entries, then the oldest beyond the bound.
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.created >= horizon and len(self._entries) < self.max_entries:
                break
            del self._entries[key]  # a running task keeps running for its waiters
