"""The judge budget's Redis side: allocation state, the hard cap, and deferred tail traces.

One batch of the intake costs three round trips: a pipelined read of the allocation state
(last minute's arrivals per rubric, today's use, the strata's counts and first sighting), one
Lua call that admits evaluations against every cap at once, and a pipelined write of this
minute's flow. The Lua call is atomic, so the caps hold across any number of workers: a
request that does not fit is refused whole, never admitted in part. With carry (the default)
a per-minute cap is checked as "today's evaluations ≤ cap × minutes elapsed today" against
the day's counter, so budget a quiet minute left is spent later and the total never exceeds
what the minutes so far allowed; one minute still spends at most `burst` x its cap.

Tail-rule traces the cap refuses wait in `{prefix}:budget:deferred` (a sorted set scored by
the end of the window that refused them) and go back on the intake list when it ends;
`release_due` runs before every drain. Nothing here decides probabilities:
evaluator.intake.allocation does, purely.

An escalating rubric (the faithfulness cascade) is drawn at intake but not charged there: the
worker charges its judge call when the cascade escalates (`charge_escalation`, the same
script), and counts its runs and escalations in `{prefix}:budget:escalation:{bucket}`
(10-minute hashes; the last three give the escalation share the allocation fits the rate to).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from evaluator.intake.allocation import (
    DAY_S,
    MINUTE_S,
    BudgetPlan,
    Cap,
    RubricState,
    applies,
    cumulative_cap,
    escalation_share,
    inclusion_probability,
    is_new,
    rubric_rates,
    stratum_key,
)
from evaluator.intake.sampling import Labels, Signals, TailRules, hash_point, tail_reason

SHARED = "*"  # the scope of the settings' [budget]: every rubric's evaluations together
# Escalating rubrics' runs and escalations are counted in buckets of this many seconds; the
# allocation reads the current bucket and the two before it (20-30 minutes of runs).
ESCALATION_BUCKET_S = 600
ESCALATION_BUCKETS = 3

# ARGV: nscopes, per scope (minute key, minute cap, minute end, day key, day cap, day end,
# cumulative cap: today's evaluations by the end of this minute, 0 = none; refused until the
# minute ends), ngroups, per group (m, m scope indexes). Returns per group 0 (admitted) or
# the end of the latest window that refused it (epoch seconds): a group is admitted whole or
# not at all.
_ADMIT_LUA = """
local ns = tonumber(ARGV[1])
local scopes = {}
local i = 2
for s = 1, ns do
  scopes[s] = {mk = ARGV[i], mc = tonumber(ARGV[i + 1]), me = tonumber(ARGV[i + 2]),
               dk = ARGV[i + 3], dc = tonumber(ARGV[i + 4]), de = tonumber(ARGV[i + 5]),
               cc = tonumber(ARGV[i + 6]),
               mu = tonumber(redis.call('GET', ARGV[i]) or '0'),
               du = tonumber(redis.call('GET', ARGV[i + 3]) or '0'), n = 0}
  i = i + 7
end
local ng = tonumber(ARGV[i])
i = i + 1
local out = {}
for g = 1, ng do
  local m = tonumber(ARGV[i])
  i = i + 1
  local need = {}
  for k = 1, m do
    local s = tonumber(ARGV[i])
    need[s] = (need[s] or 0) + 1
    i = i + 1
  end
  local wait = 0
  for s, n in pairs(need) do
    local sc = scopes[s]
    if sc.mc > 0 and sc.mu + n > sc.mc then wait = math.max(wait, sc.me) end
    if sc.dc > 0 and sc.du + n > sc.dc then wait = math.max(wait, sc.de) end
    if sc.cc > 0 and sc.du + n > sc.cc then wait = math.max(wait, sc.me) end
  end
  if wait == 0 then
    for s, n in pairs(need) do
      local sc = scopes[s]
      sc.mu = sc.mu + n
      sc.du = sc.du + n
      sc.n = sc.n + n
    end
  end
  out[g] = wait
end
for s = 1, ns do
  local sc = scopes[s]
  if sc.n > 0 then
    redis.call('INCRBY', sc.mk, sc.n)
    redis.call('EXPIRE', sc.mk, 180)
    redis.call('INCRBY', sc.dk, sc.n)
    redis.call('EXPIRE', sc.dk, 172800)
  end
end
return out
"""

# KEYS: deferred zset, intake list; ARGV: now (s), limit. Due entries go back on the intake.
_RELEASE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('RPUSH', KEYS[2], unpack(due))
end
return #due
"""


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


class BudgetGate:
    def __init__(self, redis: Redis, *, key_prefix: str, plan: BudgetPlan) -> None:
        self.redis = redis
        self.plan = plan
        self.prefix = f"{key_prefix}:budget"
        self.intake_key = f"{key_prefix}:intake"
        self._admit = redis.register_script(_ADMIT_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._scope_index = {SHARED: 1} | {r.name: i + 2 for i, r in enumerate(plan.rubrics)}
        self.escalating = frozenset(r.name for r in plan.rubrics if r.escalates)

    async def release_due(self, now_s: float, limit: int = 10_000) -> int:
        """Put deferred tail traces whose window has ended back on the intake list."""
        keys = [f"{self.prefix}:deferred", self.intake_key]
        return int(await self._release(keys=keys, args=[now_s, limit]))

    async def allocate(
        self, candidates: Sequence[Candidate], rules: TailRules, now_s: float
    ) -> Allocation:
        plan = self.plan
        minute = int(now_s // MINUTE_S)
        states, strata = await self._read_state(candidates, minute, now_s)
        rates = rubric_rates(plan, states, now_s)
        seen: Counter[str] = Counter()  # strata seen earlier in this batch
        arrivals: Counter[str] = Counter()
        reserved: Counter[str] = Counter()
        boosted: Counter[str] = Counter()  # new-stratum arrivals that no tail rule took
        # (candidate index, tail, {rubric: p}); tail traces are offered to the cap first.
        drawn: list[tuple[int, bool, dict[str, float]]] = []
        result = Allocation()
        for index, c in enumerate(candidates):
            tail = tail_reason(c.signals, rules)
            point = hash_point(c.trace_id)
            chosen: dict[str, float] = {}
            for rubric in plan.rubrics:
                if not applies(rubric, c.labels):
                    continue
                key = stratum_key(rubric.name, c.labels)
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
                if point < p:
                    chosen[rubric.name] = p
            if chosen:
                drawn.append((index, tail is not None, chosen))
            else:
                result.not_sampled += 1
        # Offered to the cap tail first, then new strata (the highest probability), then in
        # intake order (a stable sort).
        drawn.sort(key=lambda d: (not d[1], -max(d[2].values())))
        # Escalating rubrics are drawn, not charged: the worker charges their judge calls.
        charged = [
            (i, tail, {r: p for r, p in chosen.items() if r not in self.escalating})
            for i, tail, chosen in drawn
        ]
        waits = await self._admit_groups(charged, now_s)
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
        await self._write_flow(minute, arrivals, reserved, boosted, seen, now_s)
        return result

    async def _admit_groups(
        self, drawn: list[tuple[int, bool, dict[str, float]]], now_s: float
    ) -> list[Any]:
        """Per drawn trace: for a tail trace one wait (all rubrics or none), for a rate
        trace one wait per rubric (each evaluation stands alone)."""
        if not drawn:
            return []
        groups: list[list[int]] = []
        for _index, tail, chosen in drawn:
            scopes = [[1, self._scope_index[r]] for r in chosen]
            if tail:
                groups.append([s for pair in scopes for s in pair])
            else:
                groups.extend(scopes)
        args: list[Any] = [len(self._scope_index)]
        for scope in self._scope_index:
            args.extend(self._scope_args(scope, now_s))
        args.append(len(groups))
        for group in groups:
            args.append(len(group))
            args.extend(group)
        raw = [int(w) for w in await self._admit(args=args)]
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

    async def charge_escalation(self, trace_id: str, rubric: str, now_s: float) -> int:
        """Charge the judge call of an escalating rubric's run (the worker, when the cascade
        asks its judge): one evaluation against the rubric's and the shared caps, through
        the script intake admits with. Returns 0 (charged: ask the judge) or the end of the
        window that refused it (epoch seconds). `trace_id` names the charge for an admission
        ledger keyed by trace (it must not collide with the trace's intake admission)."""
        waits = await self._admit_groups([(0, False, {rubric: 1.0})], now_s)
        return int(waits[0][0])

    async def count_escalations(
        self, runs: Sequence[str], escalated: Sequence[str], now_s: float
    ) -> None:
        """Count one job's runs of escalating rubrics and which of them asked the judge."""
        if not runs:
            return
        key = f"{self.prefix}:escalation:{int(now_s // ESCALATION_BUCKET_S)}"
        pipe = self.redis.pipeline(transaction=False)
        for name in runs:
            pipe.hincrby(key, f"r:{name}", 1)
        for name in escalated:
            pipe.hincrby(key, f"e:{name}", 1)
        pipe.expire(key, ESCALATION_BUCKET_S * (ESCALATION_BUCKETS + 1))
        await pipe.execute()

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

    async def _read_state(
        self, candidates: Sequence[Candidate], minute: int, now_s: float
    ) -> tuple[dict[str, RubricState], dict[str, tuple[int, float | None]]]:
        keys = sorted(
            {stratum_key(r.name, c.labels) for c in candidates for r in self.plan.rubrics}
        )
        day = int(now_s // DAY_S)
        pipe = self.redis.pipeline(transaction=False)
        names = [r.name for r in self.plan.rubrics]
        flow = f"{self.prefix}:flow:{minute - 1}"
        pipe.hmget(flow, [f"{kind}:{n}" for kind in ("a", "r", "n") for n in names])
        pipe.mget([f"{self.prefix}:used:{s}:d:{day}" for s in (SHARED, *names)])
        pipe.mget([f"{self.prefix}:used:{s}:m:{minute}" for s in (SHARED, *names)])
        pipe.hmget(f"{self.prefix}:strata", keys or ["-"])
        pipe.hmget(f"{self.prefix}:strata:first", keys or ["-"])
        bucket = int(now_s // ESCALATION_BUCKET_S)
        for b in range(bucket - ESCALATION_BUCKETS + 1, bucket + 1):
            pipe.hmget(
                f"{self.prefix}:escalation:{b}", [f"{kind}:{n}" for kind in "re" for n in names]
            )
        flows, used, used_minute, counts, firsts, *escalations = await pipe.execute()
        k = len(names)
        counted = [sum(int(e[i] or 0) for e in escalations) for i in range(2 * k)]
        states = {
            n: RubricState(
                arrivals=int(flows[i] or 0),
                reserved=int(flows[k + i] or 0),
                new=int(flows[2 * k + i] or 0),
                used_today=int(used[i + 1] or 0),
                shared_used_today=int(used[0] or 0),
                used_this_minute=int(used_minute[i + 1] or 0),
                shared_used_this_minute=int(used_minute[0] or 0),
                escalation=escalation_share(counted[i], counted[k + i]),
            )
            for i, n in enumerate(names)
        }
        strata = {
            k: (int(cnt or 0), None if first is None else float(first))
            for k, cnt, first in zip(keys, counts, firsts, strict=False)
        }
        return states, strata

    async def _write_flow(
        self,
        minute: int,
        arrivals: Counter[str],
        reserved: Counter[str],
        boosted: Counter[str],
        seen: Counter[str],
        now_s: float,
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        flow = f"{self.prefix}:flow:{minute}"
        for name, n in arrivals.items():
            pipe.hincrby(flow, f"a:{name}", n)
        for name, n in reserved.items():
            pipe.hincrby(flow, f"r:{name}", n)
        for name, n in boosted.items():
            pipe.hincrby(flow, f"n:{name}", n)
        pipe.expire(flow, 180)
        for key, n in seen.items():
            pipe.hincrby(f"{self.prefix}:strata", key, n)
            pipe.hsetnx(f"{self.prefix}:strata:first", key, repr(now_s))
        await pipe.execute()

    async def deferred(self) -> int:
        """How many tail traces wait for the next window."""
        return int(await cast("Awaitable[int]", self.redis.zcard(f"{self.prefix}:deferred")))

    async def defer(self, entries: Sequence[tuple[bytes, int]]) -> None:
        if entries:
            await self.redis.zadd(f"{self.prefix}:deferred", {e: w for e, w in entries})


def _minute_bound(per_minute: int, burst: float) -> int:
    """The most one minute may spend when unspent budget carries forward (0 = no bound)."""
    return max(per_minute, math.floor(per_minute * burst)) if burst > 0 else 0
