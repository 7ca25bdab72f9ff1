"""The judge budget's Redis side: allocation state, the hard cap, and deferred tail traces.

One batch of the intake costs three round trips: a pipelined read of the allocation state
(evaluator.budget.state: last minute's arrivals per rubric, today's use, the strata's counts
and first sighting), one Lua call that admits evaluations against every cap at once
(evaluator.budget.scripts), and a pipelined write of this minute's flow. The Lua call is
atomic, so the caps hold across any number of workers: a request that does not fit is
refused whole, never admitted in part. With carry (the default) a per-minute cap is checked
as "today's evaluations ≤ cap × minutes elapsed today" against the day's counter, so budget
a quiet minute left is spent later and the total never exceeds what the minutes so far
allowed; one minute still spends at most `burst` x its cap.

The script keeps a ledger of the day's admitted evaluations, so a batch processed again (a
drain whose intents did not commit) is not charged twice; `charge` puts evaluations queued
outside the intake (`evaluator backfill`, `evaluator retry`) through the same script.

Tail-rule traces the cap refuses wait in `{prefix}:budget:deferred` (a sorted set scored by
the end of the window that refused them) and go back on the intake list when it ends;
`release_due` runs before every drain. Nothing here decides probabilities:
evaluator.budget.allocation does, purely.

With a database (`engine`, every worker): rate draws are not admitted here but offered to
their cap window (`allocate(offer=True)`), which evaluator.budget.windows closes by random
key; every admission is also a row in SQL (evaluator.store.admissions), the budget's source
of truth: the script checks Redis's run_id first and the counters are rebuilt from the rows
after a change (evaluator.budget.source). The guarantee: a UTC day's rows never
exceed its caps, and the stored probability is the realised one.

An escalating rubric (the faithfulness cascade) is drawn at intake but not charged there: the
worker charges its judge call when the cascade escalates, through the same script
(evaluator.budget.escalation).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from evaluator.budget.allocation import (
    DAY_S,
    MINUTE_S,
    BudgetPlan,
    Cap,
    applies,
    cumulative_cap,
    inclusion_probability,
    is_new,
    rubric_rates,
    stratum_key,
)
from evaluator.budget.scripts import ADMIT_LUA, RELEASE_LUA
from evaluator.budget.source import (
    STALE,
    ledger_field,
    ledger_key,
    rebuild,
)
from evaluator.budget.state import read_state, write_flow
from evaluator.errors import BudgetUnavailable
from evaluator.sampling import Labels, Signals, TailRules, hash_point, tail_reason
from evaluator.store.admissions import SHARED, Admission, day_of

REBUILD_TRIES = 3


def deferred_key(prefix: str) -> str:
    return f"{prefix}:budget:deferred"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One decoded intake entry the allocation looks at."""

    entry: bytes
    trace_id: str
    signals: Signals
    labels: Labels | None


@dataclass
class Allocation:
    """What one batch's allocation decided."""

    # Per admitted trace: its entry's position, whether a tail rule sent it, {rubric: p}.
    admitted: list[tuple[int, bool, dict[str, float]]] = field(default_factory=list)
    deferred: list[tuple[bytes, int]] = field(default_factory=list)  # (entry, window end)
    not_sampled: int = 0  # no rubric's probability drew the trace
    refused_traces: int = 0  # drawn, but every draw refused by a cap
    refused_evaluations: int = 0  # (trace, rubric) draws refused by a cap
    reasons: Counter[str] = field(default_factory=Counter)
    # With offers (a database): rate draws waiting for their cap window to close, per trace
    # its entry's position and {rubric: (stratum, drawn p, escalates)}.
    offered: list[tuple[int, dict[str, tuple[str, float, bool]]]] = field(default_factory=list)


class BudgetGate:
    def __init__(
        self, redis: Redis, *, key_prefix: str, plan: BudgetPlan, engine: Engine | None = None
    ) -> None:
        self.redis = redis
        self.plan = plan
        # With a database: admissions are durable rows (evaluator.store.admissions), the
        # counters are rebuilt from them, and rate draws wait for their cap window.
        self.engine = engine
        self.source_key = f"{key_prefix}:budget:source"
        # (window, clock) of this worker's last look for due windows (budget.windows).
        self.windows_checked: tuple[int, float] = (-1, 0.0)
        self.key_prefix = key_prefix
        self.prefix = f"{key_prefix}:budget"
        self.intake_key = f"{key_prefix}:intake"
        self._admit = redis.register_script(ADMIT_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self.scope_index = {SHARED: 1} | {r.name: i + 2 for i, r in enumerate(plan.rubrics)}
        self.escalating = frozenset(r.name for r in plan.rubrics if r.escalates)

    async def release_due(self, now_s: float, limit: int = 10_000) -> int:
        """Put deferred tail traces whose window has ended back on the intake list."""
        keys = [f"{self.prefix}:deferred", self.intake_key]
        return int(await self._release(keys=keys, args=[now_s, limit]))

    async def allocate(
        self,
        candidates: Sequence[Candidate],
        rules: TailRules,
        now_s: float,
        *,
        again: bool = False,
        offer: bool = False,
    ) -> Allocation:
        """Draw and admit one batch. `again`: the batch is one this intake processed before
        (its intents did not commit): what the ledger says was admitted then is kept, with
        its probability, rather than drawn anew (one more read, only then). `offer`: rate
        draws are not admitted here but returned in `offered`, for their cap window to admit
        by random key when it closes (evaluator.budget.windows); tail traces are admitted
        now."""
        plan = self.plan
        minute = int(now_s // MINUTE_S)
        # With `again`, the ledger field of every evaluation a candidate could get.
        fields = [
            {
                r.name: self.ledger_field_for(_kind(c, rules), c.trace_id, r.name)
                for r in plan.rubrics
            }
            for c in candidates
            if again
        ]
        labels = [c.labels for c in candidates]
        states, strata, admitted_before = await read_state(
            self.redis, self.key_prefix, plan, labels, fields, minute, now_s
        )
        rates = rubric_rates(plan, states, now_s)
        seen: Counter[str] = Counter()  # strata seen earlier in this batch
        arrivals: Counter[str] = Counter()
        reserved: Counter[str] = Counter()
        boosted: Counter[str] = Counter()  # new-stratum arrivals that no tail rule took
        # (candidate index, tail, {rubric: p}); tail traces are offered to the cap first.
        drawn: list[tuple[int, bool, dict[str, float]]] = []
        strata_of: dict[tuple[int, str], str] = {}
        result = Allocation()
        for index, c in enumerate(candidates):
            tail = tail_reason(c.signals, rules)
            point = hash_point(c.trace_id)
            chosen: dict[str, float] = {}
            for rubric in plan.rubrics:
                if not applies(rubric, c.labels):
                    continue
                key = stratum_key(rubric.name, c.labels)
                strata_of[index, rubric.name] = key
                count, first = strata.get(key, (0, None))
                new = is_new(count + seen[key], first, now_s, plan)
                seen[key] += 1
                arrivals[rubric.name] += 1
                p = inclusion_probability(
                    rates[rubric.name], tail=tail is not None, new_stratum=new
                )
                if tail is not None or new:
                    reserved[rubric.name] += 1
                if tail is None and new:
                    boosted[rubric.name] += 1
                before = admitted_before.get(fields[index][rubric.name]) if again else None
                if before is not None:
                    # Admitted (and charged) today already, by a drain whose intents did not
                    # commit: that decision stands, with its probability; the script admits
                    # it again without charging.
                    chosen[rubric.name] = before
                elif point < p:
                    chosen[rubric.name] = p
            if chosen:
                drawn.append((index, tail is not None, chosen))
            else:
                result.not_sampled += 1
        # Offered to the cap tail first, then new strata (the highest probability), then in
        # intake order (a stable sort).
        drawn.sort(key=lambda d: (not d[1], -max(d[2].values())))
        if offer:
            for index, _, chosen in (d for d in drawn if not d[1]):
                result.offered.append(
                    (
                        index,
                        {
                            r: (strata_of[index, r], p, r in self.escalating)
                            for r, p in chosen.items()
                        },
                    )
                )
            result.reasons["budget_offered"] += len(result.offered)
            drawn = [d for d in drawn if d[1]]
        # Escalating rubrics are drawn, not charged: the worker charges their judge calls.
        charged = [
            (i, tail, {r: p for r, p in chosen.items() if r not in self.escalating})
            for i, tail, chosen in drawn
        ]
        waits = await self._admit_groups(candidates, charged, rules, now_s, again=again)
        for (index, by_tail, chosen), (_, _, paid), wait in zip(drawn, charged, waits, strict=True):
            c = candidates[index]
            if by_tail:
                if wait:
                    result.deferred.append((c.entry, wait))
                    result.reasons["budget_deferred"] += 1
                else:
                    result.admitted.append((index, True, chosen))
                    result.reasons[str(tail_reason(c.signals, rules))] += 1
                continue
            refused = {r for r, w in zip(paid, wait, strict=True) if w}
            kept = {r: p for r, p in chosen.items() if r not in refused}
            result.refused_evaluations += len(chosen) - len(kept)
            if kept:
                result.admitted.append((index, False, kept))
                result.reasons["rate"] += 1
            else:
                result.refused_traces += 1
                result.reasons["not_sampled_budget"] += 1
        result.reasons["not_sampled"] += result.not_sampled
        await write_flow(
            self.redis, self.key_prefix, minute, arrivals, reserved, boosted, seen, now_s
        )
        return result

    async def charge(self, groups: Sequence[Sequence[str]], now_s: float) -> list[int]:
        """Charge evaluations queued outside the intake (`evaluator backfill`, `evaluator
        retry`) to the same counters, through the same script. A group is one trace's
        evaluations (a rubric name each), admitted whole or not at all; per group 0 when
        admitted, else the end of the window that refused it (epoch s), or -1 when it is
        larger than a cap's window and never fits. Not in the ledger: each call is a new
        run of the judge, never a repeat of an earlier admission."""
        fitting = [i for i, g in enumerate(groups) if self.fits(g)]
        evaluations = [
            [("", "1", self.scope_index[r]) for r in groups[i] if r in self.scope_index]
            for i in fitting
        ]
        waits = [-1] * len(groups)
        admitted = await self.run_admit(evaluations, now_s, honour_ledger=False)
        for i, wait in zip(fitting, admitted, strict=True):
            waits[i] = wait
        return waits

    def fits(self, group: Sequence[str]) -> bool:
        """Whether a group of evaluations fits every cap's window at all (a trace with more
        rubrics than `calls_per_minute` x `burst` never does)."""
        need = Counter(r for r in group if r in self.scope_index)
        need[SHARED] = sum(need.values())
        for scope, n in need.items():
            cap = self._cap(scope)
            per_minute = cap.per_minute
            if self.plan.carry and per_minute > 0:
                per_minute = _minute_bound(per_minute, self.plan.burst)
            if 0 < cap.per_day < n or 0 < per_minute < n:
                return False
        return True

    async def _admit_groups(
        self,
        candidates: Sequence[Candidate],
        drawn: list[tuple[int, bool, dict[str, float]]],
        rules: TailRules,
        now_s: float,
        *,
        again: bool,
    ) -> list[Any]:
        """Per drawn trace: for a tail trace one wait (all rubrics or none), for a rate
        trace one wait per rubric (each evaluation stands alone). `again`: a re-processed
        batch, whose evaluations in the ledger are admitted free."""
        if not drawn:
            return []
        groups: list[list[tuple[str, str, int]]] = []
        for index, tail, chosen in drawn:
            c = candidates[index]
            evaluations = [
                (
                    self.ledger_field_for(_kind(c, rules), c.trace_id, r),
                    repr(p),
                    self.scope_index[r],
                )
                for r, p in chosen.items()
            ]
            if tail:
                groups.append(evaluations)
            else:
                groups.extend([e] for e in evaluations)
        # With a database the day's admissions are SQL rows keyed by (day, kind, trace,
        # rubric): a repeat is the same row, so Redis must not charge it again either.
        honour = again or self.engine is not None
        raw = await self.run_admit(groups, now_s, honour_ledger=honour)
        waits: list[Any] = []
        at = 0
        for _index, tail, chosen in drawn:
            if tail:
                waits.append(raw[at])
                at += 1
            else:
                waits.append(raw[at : at + len(chosen)])
                at += len(chosen)
        return waits

    async def run_admit(
        self, groups: list[list[tuple[str, str, int]]], now_s: float, *, honour_ledger: bool
    ) -> list[int]:
        """One call of ADMIT_LUA; a group is [(ledger field or '', p, scope index)]."""
        if not groups:
            return []
        args: list[Any] = [len(self.scope_index)]
        for scope in self.scope_index:
            args.extend(self._scope_args(scope, now_s))
        args.append(ledger_key(self.key_prefix, now_s))
        args.append(1 if honour_ledger else 0)
        args.append(len(groups))
        for group in groups:
            args.append(len(group))
            for evaluation in group:
                args.extend(evaluation)
        for _ in range(REBUILD_TRIES):
            raw = [int(w) for w in await self._admit(keys=[self.source_key], args=args)]
            if raw != [STALE]:
                return raw
            # Redis is not the one the counters were rebuilt in: rebuild, then ask again.
            await rebuild(self, now_s)
        raise BudgetUnavailable("the judge budget's counters could not be rebuilt from SQL")

    async def resync(self) -> None:
        """SQL holds more admissions than Redis counted (OverCap): forget the source, so the
        next admission rebuilds the counters from SQL first."""
        await self.redis.delete(self.source_key)

    @property
    def day_caps(self) -> dict[str, int]:
        """Evaluations per UTC day per scope (0 = none): what SQL checks admissions against."""
        return {SHARED: self.plan.shared.per_day} | {
            r.name: r.cap.per_day for r in self.plan.rubrics
        }

    def admissions(
        self, kind: str, trace_id: str, rubrics: Sequence[str], now_s: float
    ) -> list[Admission]:
        """The SQL rows of one trace's admitted evaluations (escalating rubrics excluded:
        their escalation is charged on its own)."""
        day = day_of(now_s)
        return [
            Admission(day, kind, trace_id, r)
            for r in rubrics
            if r in self.scope_index and r not in self.escalating
        ]

    def room(self, scope: str, used_today: int, used_minute: int, now_s: float) -> int | None:
        """What `scope`'s caps admit now (None: no cap), by the script's own rules."""
        cap = self._cap(scope)
        rooms: list[int] = []
        if cap.per_minute:
            if self.plan.carry:
                rooms.append(cumulative_cap(cap.per_minute, now_s) - used_today)
                bound = _minute_bound(cap.per_minute, self.plan.burst)
                if bound:
                    rooms.append(bound - used_minute)
            else:
                rooms.append(cap.per_minute - used_minute)
        if cap.per_day:
            rooms.append(cap.per_day - used_today)
        return max(0, min(rooms)) if rooms else None

    def ledger_field_for(self, kind: str, trace_id: str, rubric: str) -> str:
        """The ledger field, '' for an evaluation no cap applies to (nothing to protect; it
        keeps the ledger as small as the caps)."""
        capped = self.plan.shared.any or self._cap(rubric).any
        return ledger_field(kind, trace_id, rubric) if capped else ""

    def _cap(self, scope: str) -> Cap:
        if scope == SHARED:
            return self.plan.shared
        return next(r.cap for r in self.plan.rubrics if r.name == scope)

    def _scope_args(self, scope: str, now_s: float) -> list[Any]:
        cap = self._cap(scope)
        minute, day = int(now_s // MINUTE_S), int(now_s // DAY_S)
        # With carry the minute's cap is checked cumulatively (against the day's counter).
        carry = self.plan.carry and cap.per_minute > 0
        return [
            f"{self.prefix}:used:{scope}:m:{minute}",
            _minute_bound(cap.per_minute, self.plan.burst) if carry else cap.per_minute,
            math.ceil((minute + 1) * MINUTE_S),
            f"{self.prefix}:used:{scope}:d:{day}",
            cap.per_day,
            math.ceil((day + 1) * DAY_S),
            cumulative_cap(cap.per_minute, now_s) if carry else 0,
        ]

    async def deferred(self) -> int:
        """How many tail traces wait for the next window."""
        return int(await cast("Awaitable[int]", self.redis.zcard(f"{self.prefix}:deferred")))

    async def defer(self, entries: Sequence[tuple[bytes, int]]) -> None:
        if entries:
            await self.redis.zadd(f"{self.prefix}:deferred", {e: w for e, w in entries})


def _kind(c: Candidate, rules: TailRules) -> str:
    """The job's kind, as the drain names it: a tail rule's trace or a rate draw."""
    return "rate" if tail_reason(c.signals, rules) is None else "tail"


def _minute_bound(per_minute: int, burst: float) -> int:
    """The most one minute may spend when unspent budget carries forward (0 = no bound)."""
    return max(per_minute, math.floor(per_minute * burst)) if burst > 0 else 0
