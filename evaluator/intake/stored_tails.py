"""Tail rules on stored traces, for the drain: a worker remembers the tail-worthy traces
ingested in the last TAIL_LOOKBACK (read when it starts, then incrementally by ingestion
time; evaluator.store.tail), at most TAIL_CACHE_MAX of them, oldest evicted first. A bare ID
drained (no signals of its own) is looked up here, so the tail rules see the stored trace
however its ID arrived (README, Sampling) at the cost of a dict lookup per ID.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from evaluator.sampling import Signals, TailRules
from evaluator.store.tail import tail_traces_since

TAIL_LOOKBACK = timedelta(days=1)
TAIL_OVERLAP = timedelta(minutes=1)
TAIL_CACHE_MAX = 500_000


class StoredTails:
    def __init__(self, rules: TailRules) -> None:
        self.rules = rules
        # Stored traces that may trip a tail rule, by trace id (oldest evicted first).
        self._tails: OrderedDict[str, Signals] = OrderedDict()
        self._since = datetime.now(UTC) - TAIL_LOOKBACK

    async def among(self, engine: Engine, trace_ids: list[str]) -> dict[str, Signals]:
        """Tail signals of stored traces among `trace_ids` (from the incremental cache)."""
        rules = self.rules
        # Re-read a margin before the high-water mark: a transaction may commit an older
        # ingested_at after a newer one was read.
        rows = await asyncio.to_thread(
            tail_traces_since,
            engine,
            self._since - TAIL_OVERLAP,
            on_error=rules.on_error,
            on_negative_feedback=rules.on_negative_feedback,
            cost_above_usd=rules.cost_above_usd,
            latency_above_ms=rules.latency_above_ms,
        )
        for row in rows:
            signals, _ = Signals.checked(
                error=row.error,
                cost_usd=row.cost_usd,
                latency_ms=row.latency_ms,
                feedback=row.feedback,
            )
            self._tails[row.trace_id] = signals
            self._tails.move_to_end(row.trace_id)
            self._since = max(self._since, row.ingested_at)
        while len(self._tails) > TAIL_CACHE_MAX:
            self._tails.popitem(last=False)
        return {t: self._tails[t] for t in trace_ids if t in self._tails}
