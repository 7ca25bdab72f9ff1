"""The allocation's state in Redis: what one batch's draw reads, and the flow it writes back.

Keys, under `{prefix}:budget`:

- `flow:{minute}`: per rubric the minute's arrivals (`a:`), arrivals a tail rule or a new
  stratum took (`r:`) and new-stratum arrivals no tail rule took (`n:`); the allocation
  reads the previous minute's to estimate this one's (kept 3 minutes);
- `used:{scope}:m:{minute}` and `used:{scope}:d:{day}`: the admission script's counters
  (evaluator.budget.scripts);
- `strata` and `strata:first`: per stratum key, the traces seen and the first sighting;
- `escalation:{bucket}`: per escalating rubric its runs (`r:`) and escalations (`e:`),
  counted by the worker (evaluator.budget.escalation) in buckets of ESCALATION_BUCKET_S;
- the day's ledger (evaluator.budget.source.ledger_key), read only for a batch processed
  again.

One read and one write, each a single pipeline: the allocation's round trips per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from redis.asyncio import Redis

from evaluator.budget.allocation import (
    DAY_S,
    BudgetPlan,
    RubricState,
    escalation_share,
    stratum_key,
)
from evaluator.budget.source import ledger_key
from evaluator.sampling import Labels
from evaluator.store.admissions import SHARED

# Escalating rubrics' runs and escalations are counted in buckets of this many seconds; the
# allocation reads the current bucket and the two before it (20-30 minutes of runs).
ESCALATION_BUCKET_S = 600
ESCALATION_BUCKETS = 3

Strata = dict[str, tuple[int, float | None]]  # stratum key -> (traces seen, first sighting)


def escalation_key(prefix: str, bucket: int) -> str:
    """`prefix` is the budget's (`{key_prefix}:budget`)."""
    return f"{prefix}:escalation:{bucket}"


async def read_state(
    redis: Redis,
    key_prefix: str,
    plan: BudgetPlan,
    labels: Sequence[Labels | None],
    fields: list[dict[str, str]],
    minute: int,
    now_s: float,
) -> tuple[dict[str, RubricState], Strata, dict[str, float]]:
    """Per rubric its state, per stratum its count and first sighting, and the ledger's
    probabilities of `fields` (the evaluations of a batch processed again) found there."""
    prefix = f"{key_prefix}:budget"
    keys = sorted({stratum_key(r.name, lab) for lab in labels for r in plan.rubrics})
    day = int(now_s // DAY_S)
    pipe = redis.pipeline(transaction=False)
    names = [r.name for r in plan.rubrics]
    flow = f"{prefix}:flow:{minute - 1}"
    pipe.hmget(flow, [f"{kind}:{n}" for kind in ("a", "r", "n") for n in names])
    pipe.mget([f"{prefix}:used:{s}:d:{day}" for s in (SHARED, *names)])
    pipe.mget([f"{prefix}:used:{s}:m:{minute}" for s in (SHARED, *names)])
    pipe.hmget(f"{prefix}:strata", keys or ["-"])
    pipe.hmget(f"{prefix}:strata:first", keys or ["-"])
    bucket = int(now_s // ESCALATION_BUCKET_S)
    for b in range(bucket - ESCALATION_BUCKETS + 1, bucket + 1):
        pipe.hmget(escalation_key(prefix, b), [f"{kind}:{n}" for kind in "re" for n in names])
    wanted = sorted({f for per in fields for f in per.values() if f})
    if wanted:
        pipe.hmget(ledger_key(key_prefix, now_s), wanted)
    flows, used, used_minute, counts, firsts, *rest = await pipe.execute()
    escalations, ledger = rest[:ESCALATION_BUCKETS], rest[ESCALATION_BUCKETS:]
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
    values = ledger[0] if ledger else []
    before = {f: float(v) for f, v in zip(wanted, values, strict=True) if v is not None}
    return states, strata, before


async def write_flow(
    redis: Redis,
    key_prefix: str,
    minute: int,
    arrivals: Counter[str],
    reserved: Counter[str],
    boosted: Counter[str],
    seen: Counter[str],
    now_s: float,
) -> None:
    """Add one batch's arrivals to the minute's flow and its strata's counts."""
    prefix = f"{key_prefix}:budget"
    pipe = redis.pipeline(transaction=False)
    flow = f"{prefix}:flow:{minute}"
    for name, n in arrivals.items():
        pipe.hincrby(flow, f"a:{name}", n)
    for name, n in reserved.items():
        pipe.hincrby(flow, f"r:{name}", n)
    for name, n in boosted.items():
        pipe.hincrby(flow, f"n:{name}", n)
    pipe.expire(flow, 180)
    for key, n in seen.items():
        pipe.hincrby(f"{prefix}:strata", key, n)
        pipe.hsetnx(f"{prefix}:strata:first", key, repr(now_s))
    await pipe.execute()
