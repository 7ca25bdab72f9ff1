"""The judge budget's source of truth is SQL: after a real redis-server is killed (-9) and
restarted empty, admissions wait until the counters are rebuilt from the admission rows,
and the day's cap holds across the restart; a Redis whose counters are behind SQL's rows
(a grant committed after the rebuild read) cannot push SQL over the cap. SQLite and
PostgreSQL (the `db_url` fixture runs each test on both)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from redis.asyncio import Redis

from evaluator.budget.admission import BudgetGate
from evaluator.budget.allocation import DAY_S, BudgetPlan, Cap, RubricPlan
from evaluator.budget.escalation import charge_escalation
from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import encode
from evaluator.sampling import Signals, TailRules
from evaluator.store import admissions
from evaluator.store.admissions import SHARED, Admission
from evaluator.store.store import Store
from tests.services import RedisServer, private_redis

__all__ = ["private_redis"]

CAP = 10
PLAN = BudgetPlan(rubrics=(RubricPlan("faith", 1.0),), shared=Cap(per_day=CAP))
NOON = 1_830_000_000.0 - 1_830_000_000.0 % DAY_S + 43_200.0
DAY = admissions.day_of(NOON)


async def _used(client: Redis) -> int:
    return int(await client.get(f"app:budget:used:{SHARED}:d:{DAY}") or 0)


async def _charge(gate: BudgetGate, traces: list[str]) -> list[int]:
    return [await charge_escalation(gate, t, "faith", NOON) for t in traces]


async def test_counters_are_rebuilt_from_sql_after_redis_restarts_empty(
    private_redis: RedisServer, db_url: str
) -> None:
    store = Store(db_url)
    client = Redis.from_url(private_redis.url)
    gate = BudgetGate(client, key_prefix="app", plan=PLAN, engine=store.engine)
    assert await _charge(gate, [f"a{i}" for i in range(6)]) == [0] * 6
    assert await _used(client) == 6 == admissions.counts(store.engine, DAY)[SHARED]
    before = (await client.info("server"))["run_id"]

    private_redis.stop(signal.SIGKILL)  # no persistence: every counter is gone
    private_redis.start()
    await client.connection_pool.disconnect()
    assert (await client.info("server"))["run_id"] != before
    assert await client.get(gate.source_key) is None and await _used(client) == 0

    # Two gates (two workers) ask at once after the restart: one rebuilds, the other waits
    # for it; only the 4 evaluations the day has left are admitted, by SQL's count.
    other = BudgetGate(client, key_prefix="app", plan=PLAN, engine=store.engine)
    waits = await asyncio.gather(
        _charge(gate, [f"b{i}" for i in range(5)]), _charge(other, [f"c{i}" for i in range(5)])
    )
    admitted = sum(w == 0 for per in waits for w in per)
    assert admitted == CAP - 6
    assert admissions.counts(store.engine, DAY)[SHARED] == CAP == await _used(client)
    source = await client.get(gate.source_key)
    assert source is not None and source.decode() == (await client.info("server"))["run_id"]
    # A retry of an evaluation admitted before the restart is free (the ledger was rebuilt).
    assert await _charge(gate, ["a0"]) == [0]
    assert admissions.counts(store.engine, DAY)[SHARED] == CAP
    await client.aclose()
    store.close()


async def test_a_redis_restored_from_an_older_snapshot_is_rebuilt_too(
    private_redis: RedisServer, db_url: str
) -> None:
    """Another run_id with counters present (a snapshot older than the last admissions):
    the counters are raised to SQL's count before anything is admitted."""
    store = Store(db_url)
    client = Redis.from_url(private_redis.url)
    gate = BudgetGate(client, key_prefix="app", plan=PLAN, engine=store.engine)
    assert await _charge(gate, [f"a{i}" for i in range(8)]) == [0] * 8
    # As if restored: the counter from an older snapshot, the source from another run.
    await client.set(f"app:budget:used:{SHARED}:d:{DAY}", 3)
    await client.set(gate.source_key, "0" * 40)
    assert await _charge(gate, ["n1", "n2", "n3"]) == [0, 0, NOON - NOON % DAY_S + DAY_S]
    assert admissions.counts(store.engine, DAY)[SHARED] == CAP == await _used(client)
    await client.aclose()
    store.close()


async def test_sql_refuses_what_a_redis_behind_it_would_admit(
    private_redis: RedisServer, db_url: str
) -> None:
    """Grants made before a restart whose rows commit after the rebuild read leave Redis
    behind SQL: the SQL check in the admission's transaction refuses past the cap, and the
    counters are rebuilt before the next admission."""
    store = Store(db_url)
    client = Redis.from_url(private_redis.url)
    gate = BudgetGate(client, key_prefix="app", plan=PLAN, engine=store.engine)
    assert await _charge(gate, [f"a{i}" for i in range(6)]) == [0] * 6
    late = [Admission(DAY, "tail", f"late{i}", "faith") for i in range(4)]
    with store.engine.begin() as conn:  # the late commits: SQL now holds the whole cap
        admissions.admit(conn, late, gate.day_caps)
    assert await _used(client) == 6  # Redis does not know
    refused = await _charge(gate, ["x1"])
    assert refused != [0]
    assert admissions.counts(store.engine, DAY)[SHARED] == CAP
    assert await client.get(gate.source_key) is None  # forgotten: rebuilt on the next ask
    assert await _charge(gate, ["x2"]) != [0]
    assert await _used(client) == CAP == admissions.counts(store.engine, DAY)[SHARED]
    await client.aclose()
    store.close()


async def test_a_drain_that_sql_refuses_is_retried_against_rebuilt_counters(
    redis_url: str, db_url: str
) -> None:
    """Tail traces Redis admits but SQL refuses (its rows hold the cap already): the drain
    fails and keeps its batch; the retry, after the counters and the ledger are rebuilt
    from SQL, defers them to the next window instead of admitting them free."""
    store = Store(db_url)
    client = Redis.from_url(redis_url)
    rules = TailRules(on_error=True)
    intake = Intake(client, key_prefix="app", queue_name="q", engine=store.engine,
                    sampling=SamplingConfig(1.0, rules, budget=PLAN))  # fmt: skip
    assert intake.budget is not None
    await client.rpush(intake_key("app"), encode("t0", Signals(error=True)))
    await intake.drain_once(100, now_s=NOON)
    late = [Admission(DAY, "tail", f"late{i}", "faith") for i in range(CAP - 1)]
    with store.engine.begin() as conn:  # committed after Redis counted: SQL is at the cap
        admissions.admit(conn, late, intake.budget.day_caps)
    entries = [encode(f"t{i}", Signals(error=True)) for i in (1, 2)]
    await client.rpush(intake_key("app"), *entries)
    with pytest.raises(admissions.OverCap):
        await intake.drain_once(100, now_s=NOON + 1)
    result = await intake.drain_once(100, now_s=NOON + 2)  # the parked batch, again
    assert result.popped == 2 and result.reasons["budget_deferred"] == 2
    assert await intake.budget.deferred() == 2
    assert admissions.counts(store.engine, DAY)[SHARED] == CAP == await _used(client)
    await client.aclose()
    store.close()
