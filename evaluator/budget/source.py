"""The judge budget's counters after Redis lost them: rebuilt from SQL, then admissions resume.

Every admission (evaluator.budget.scripts, ADMIT_LUA) first compares Redis's `run_id` with
the one under which the counters were last rebuilt (`{prefix}:budget:source`). A Redis that
restarted — empty, or from a snapshot older than the last admissions — has another run_id
(and, empty, no source key), so the script admits nothing and answers STALE; the caller
then rebuilds: one worker takes `{prefix}:budget:rebuild` (SET NX, 30 s), reads the day's
admitted evaluations from SQL (evaluator.store.admissions: the counts per rubric, those of
the current minute, and the ledger's fields), writes each counter as the larger of its
Redis value and the SQL count, and sets the source key to the run_id last. The other
workers poll the source key until it names the current run_id (no admission in between:
the script keeps refusing until then), then ask again.

Admissions that Redis granted before it died and whose SQL rows commit after the rebuild
read are not in the rebuilt counters; the SQL side still holds the cap, because the
transaction that writes an admission row checks the day's rows against the caps and rolls
back when over (evaluator.store.admissions.admit). Without a database (tests, benches) the
rebuild only records the run_id: there is nothing durable to rebuild from.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from evaluator.errors import BudgetUnavailable
from evaluator.store import admissions

if TYPE_CHECKING:
    from evaluator.budget.admission import BudgetGate

STALE = -2  # the admission script's answer when the counters must be rebuilt first
REBUILD_LOCK_MS = 30_000
WAIT_S = 30.0  # how long a worker waits for another's rebuild before it gives up (retried)
_POLL_S = 0.05

# KEYS: source key; ARGV: run_id, ttl (s), then (counter key, SQL count) pairs. A counter
# only grows (Redis may already count a grant whose row is not committed yet).
_REBUILD_LUA = """
for i = 3, #ARGV, 2 do
  local have = tonumber(redis.call('GET', ARGV[i]) or '0')
  if have < tonumber(ARGV[i + 1]) then
    redis.call('SET', ARGV[i], ARGV[i + 1], 'EX', tonumber(ARGV[2]))
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def ledger_key(prefix: str, now_s: float) -> str:
    """The day's admitted evaluations (scripts.ADMIT_LUA): field kind, trace, rubric."""
    return f"{prefix}:budget:ledger:{int(now_s // admissions.DAY_S)}"


def ledger_field(kind: str, trace_id: str, rubric: str) -> str:
    return "\x1f".join((kind, trace_id, rubric))


async def run_id(gate: BudgetGate) -> str:
    info = await gate.redis.info("server")
    return str(info["run_id"])


async def rebuild(gate: BudgetGate, now_s: float) -> None:
    """Rebuild the day's counters from SQL (one worker), or wait for the one that does."""
    redis = gate.redis
    lock = f"{gate.prefix}:rebuild"
    token = uuid.uuid4().hex
    if not await redis.set(lock, token, nx=True, px=REBUILD_LOCK_MS):
        await _wait_for_rebuild(gate)
        return
    try:
        current = await run_id(gate)
        day = admissions.day_of(now_s)
        minute = int(now_s // 60)
        counters: list[str | int] = []
        if gate.engine is not None:
            engine = gate.engine
            today = await asyncio.to_thread(admissions.counts, engine, day)
            this_minute = await asyncio.to_thread(
                admissions.counts, engine, day, since=admissions.start_of_minute(now_s)
            )
            fields = await asyncio.to_thread(admissions.admitted_ids, engine, day)
            ledger = ledger_key(gate.key_prefix, now_s)
            pipe = redis.pipeline(transaction=False)
            # The ledger is SQL's rows only: a field whose row was rolled back (OverCap) must
            # not admit its evaluation free again.
            pipe.delete(ledger)
            for start in range(0, len(fields), 1000):
                chunk = fields[start : start + 1000]
                pipe.hset(ledger, mapping={ledger_field(*f): "1" for f in chunk})
            pipe.expire(ledger, 172_800)
            await pipe.execute()
            for scope, n in today.items():
                counters += [f"{gate.prefix}:used:{scope}:d:{day}", n]
            for scope, n in this_minute.items():
                counters += [f"{gate.prefix}:used:{scope}:m:{minute}", n]
        script = redis.register_script(_REBUILD_LUA)
        await script(keys=[gate.source_key], args=[current, 172_800, *counters])
    finally:
        if await redis.get(lock) == token.encode():
            await redis.delete(lock)


async def _wait_for_rebuild(gate: BudgetGate) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        source = await gate.redis.get(gate.source_key)
        if source is not None and source.decode() == await run_id(gate):
            return
        await asyncio.sleep(_POLL_S)
    raise BudgetUnavailable("another worker's rebuild of the budget counters did not finish")
