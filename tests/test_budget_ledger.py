"""The judge budget charges an evaluation once per UTC day, however often its batch is
processed: a drain that meets a dead database (PostgreSQL stopped, for real) charges nothing
and leaves its batch parked; the drain after recovery admits its tail traces once and offers
its rate draws to their cap window, whose close admits them (evaluator.budget.windows); the
admission script's ledger keeps a batch processed again from being charged twice."""

from __future__ import annotations

import time

import pytest
import redis
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from evaluator.budget.admission import BudgetGate, Candidate
from evaluator.budget.allocation import DAY_S, BudgetPlan, Cap, RubricPlan
from evaluator.budget.escalation import charge_escalation
from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import intake_key
from evaluator.intake.serialization import deserialize
from evaluator.intake.wire import encode
from evaluator.sampling import Labels, Signals, TailRules
from evaluator.store import admissions, outbox
from evaluator.store.admissions import SHARED
from evaluator.store.store import Store
from tests.services import PostgresCluster, private_postgres

__all__ = ["private_postgres"]

RULES = TailRules(on_error=True, on_negative_feedback=True)
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY_S  # the start of a UTC day
PLAN = BudgetPlan(
    rubrics=(RubricPlan("faith", 1.0), RubricPlan("rel", 1.0)),
    shared=Cap(per_minute=100),
    boost_first_traces=0,
    boost_hours=0,
)


def _entries(n: int) -> list[str]:
    # Signalled entries (latency, labels): the drain needs no stored-trace read before the
    # allocation, so the charge happens and the intent write is what meets the dead database.
    # Every 25th is an error trace: tail groups (all rubrics or none) go through it too; most
    # of the cap goes to rate draws at p = 1, which the next minute draws at a lower p.
    return [
        encode(
            f"t{i}",
            Signals(latency_ms=12.0, error=i % 25 == 0),
            Labels(feature=f"f{i % 3}"),
        )
        for i in range(n)
    ]


async def _used_today(client: Redis, now_s: float) -> int:
    return int(await client.get(f"app:budget:used:{SHARED}:d:{int(now_s // DAY_S)}") or 0)


async def _jobs(client: Redis) -> dict[str, dict[str, float]]:
    """{job id: {rubric: p}} of every job in the queue."""
    out = {}
    for key in await client.zrange("q", 0, -1):
        job = deserialize(await client.get(f"arq:job:{key.decode()}"))
        out[key.decode()] = job["a"][1]["pi"]
    return out


async def test_failed_drain_then_recovery_charges_each_evaluation_once(
    private_postgres: PostgresCluster, redis_url: str
) -> None:
    store = Store(private_postgres.url)
    client = Redis.from_url(redis_url)
    sync = redis.Redis.from_url(redis_url)
    sync.rpush(intake_key("app"), *_entries(300))  # 600 evaluations wanted, the cap is 100
    intake = Intake(
        client,
        key_prefix="app",
        queue_name="q",
        sampling=SamplingConfig(1.0, RULES, budget=PLAN),
        engine=store.engine,
    )
    private_postgres.stop("immediate")
    with pytest.raises(OperationalError):
        await intake.drain_once(1000, now_s=T0 + 5)
    # Nothing is charged while the database that holds the admissions is down.
    assert await _used_today(client, T0 + 5) == 0 and await client.zcard("q") == 0
    private_postgres.start()
    # The parked batch again: tail traces are admitted now (all rubrics, charged once),
    # rate draws are offered to the minute's cap window.
    result = await intake.drain_all(1000, now_s=T0 + 5)
    assert result.popped == 300 and await client.llen(intake_key("app")) == 0
    tails = 2 * len(range(0, 300, 25))
    assert await _used_today(client, T0 + 5) == tails
    # Once more (as a drain whose intents failed would): the offers and tails are not doubled.
    await intake.drain_once(1000, now_s=T0 + 6)
    # The next minute closes the window: the room (cumulative cap 200 less the tails) is
    # admitted by random key.
    later = T0 + 65
    await intake.drain_once(1000, now_s=later)
    jobs = await _jobs(client)
    admitted = {(job.split(":")[1], job.split(":")[2], r) for job, pi in jobs.items() for r in pi}
    assert await _used_today(client, later) == len(admitted) == 200
    assert admissions.counts(store.engine, admissions.day_of(later))["*"] == 200
    assert admissions.pending_offers(store.engine) == 0
    # Intents and jobs exactly once, one per admitted (trace, kind), carrying the same {rubric: p}.
    table = outbox.EvalIntent.__table__  # type: ignore[attr-defined]
    with store.engine.connect() as conn:
        rows = conn.execute(select(table.c.trace_id, table.c.kind, table.c.signals)).all()
        assert conn.execute(select(func.count()).select_from(table)).scalar_one() == len(jobs)
    assert {f"evaluate:{kind}:{trace}": s["pi"] for trace, kind, s in rows} == jobs
    # The batch is done: one more drain pops and charges nothing.
    again = await intake.drain_once(1000, now_s=later)
    assert again.popped == 0 and await _used_today(client, later) == len(admitted)
    sync.close()
    await client.aclose()
    store.close()


async def test_the_same_batch_allocated_twice_charges_once(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    gate = BudgetGate(client, key_prefix="app", plan=PLAN)
    candidates = [
        Candidate(e.encode(), f"t{i}", Signals(error=i % 4 == 0), Labels(feature="f"))
        for i, e in enumerate(_entries(80))
    ]
    first = await gate.allocate(candidates, RULES, T0 + 5)
    used = await _used_today(client, T0 + 5)
    assert used == sum(len(pi) for _, _, pi in first.admitted) == 100
    # Again (the drain's parked batch): the same decisions, nothing charged twice.
    second = await gate.allocate(candidates, RULES, T0 + 30, again=True)
    assert await _used_today(client, T0 + 30) == used
    assert sorted(second.admitted) == sorted(first.admitted)  # same traces, rubrics and p
    # Drawn afresh (the same IDs enqueued again, or a dead worker's batch recovered to the
    # intake): a new run of the judge for whatever is drawn, charged again, so the spent
    # cap admits nothing (a free ride would call the judge past the cap).
    third = await gate.allocate(candidates, RULES, T0 + 40)
    assert await _used_today(client, T0 + 40) == used
    assert third.admitted == []
    assert third.refused_evaluations + len(third.deferred) > 0
    # Outside the intake (backfill, retry) a charge is a new judge run: always counted.
    assert await gate.charge([["faith"]], T0 + 30) != [0]  # the cap is spent
    assert await gate.charge([["faith", "rel"]], T0 + 65) == [0]
    assert await _used_today(client, T0 + 65) == used + 2
    await client.aclose()


async def test_an_escalation_is_charged_once_per_trace_and_rubric_a_day(redis_url: str) -> None:
    """A job retried (a judge outage, a 429 on another rubric) escalates its cascade again:
    the second ask of the same (trace, rubric) that day is admitted free, another trace's
    is charged, and the next UTC day starts a new ledger."""
    client = Redis.from_url(redis_url)
    gate = BudgetGate(client, key_prefix="app", plan=PLAN)
    assert await charge_escalation(gate, "t1", "faith", T0 + 5) == 0
    assert await charge_escalation(gate, "t1", "faith", T0 + 50) == 0  # the retry
    assert await _used_today(client, T0 + 50) == 1
    assert await charge_escalation(gate, "t2", "faith", T0 + 50) == 0
    assert await charge_escalation(gate, "t1", "rel", T0 + 50) == 0
    assert await _used_today(client, T0 + 50) == 3
    tomorrow = T0 + DAY_S + 5
    assert await charge_escalation(gate, "t1", "faith", tomorrow) == 0
    assert await _used_today(client, tomorrow) == 1
    await client.aclose()


async def test_retry_leaves_escalating_rubrics_to_their_escalation(redis_url: str) -> None:
    """`evaluator retry` charges the rubrics an intent's allocation names, except those its
    job charges itself when the cascade escalates: one charge per judge call, not two."""
    from evaluator.intake.sweeper import _charge

    client = Redis.from_url(redis_url)
    sampling = SamplingConfig(max_rate=1.0, rules=RULES, budget=PLAN)
    intake = Intake(client, key_prefix="app", queue_name="q", sampling=sampling)
    signals = {"pi": {"faith": 0.5, "rel": 0.5}, "escalate": ["faith"]}
    intents = [
        outbox.EvalIntent(id="rate:t1", trace_id="t1", kind="rate", signals=signals),
        outbox.EvalIntent(id="rate:t2", trace_id="t2", kind="rate", signals={"pi": {"faith": 1}}),
    ]
    admitted, retried, rows = await _charge(intake, intents, ["t1", "t2", "t3"])
    assert sorted((a.trace_id, a.rubric) for a in rows) == [
        ("t1", "rel"),
        ("t2", "faith"),
        ("t3", "faith"),
        ("t3", "rel"),
    ]
    assert admitted == ["t1", "t2", "t3"] and retried.waiting == 0
    # t1: rel only (faith is charged if it escalates); t2: faith; t3 (no intent): every rubric.
    assert await _used_today(client, time.time()) == 1 + 1 + 2
    await client.aclose()
