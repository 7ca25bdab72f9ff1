"""Group commit (evaluator.worker.group_commit) against real SQLite and PostgreSQL: concurrent
jobs share transactions, and each job's records land with its intent's "done" or not at all."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from evaluator.store import outbox
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.worker.group_commit import GroupCommit


def records_of(trace_id: str, *, rubric: str | None = "faithfulness") -> list[EvalRecord]:
    return [
        EvalRecord(
            trace_id=trace_id,
            span_id="s1",
            rubric=name,
            rubric_version="1",
            scorer="faithfulness",
            method="judge",
            status="ok",
            score=0.5,
        )
        for name in (rubric, "answer_relevance")
    ]


def intent_status(store: Store) -> dict[str, str]:
    with Session(store.engine) as session:
        rows = session.exec(select(outbox.EvalIntent)).all()
        return {r.trace_id: r.status for r in rows}


def stored(store: Store) -> list[tuple[str, str]]:
    with Session(store.engine) as session:
        return sorted((r.trace_id, r.rubric) for r in session.exec(select(EvalRecord)).all())


async def test_concurrent_jobs_share_transactions_and_each_settles_its_intent(
    store: Store,
) -> None:
    ids = [f"t{i}" for i in range(40)]
    outbox.record_intents(store.engine, [outbox.Intent(t, "rate", {}) for t in ids])
    writer = GroupCommit(store)

    async def job(trace_id: str) -> list[bool]:
        await asyncio.sleep(0)  # jobs finish at different turns of the loop
        return await writer.write(records_of(trace_id), f"rate:{trace_id}")

    results = await asyncio.gather(*(job(t) for t in ids))

    assert results == [[True, True]] * len(ids)
    assert stored(store) == sorted(
        (t, r) for t in ids for r in ("answer_relevance", "faithfulness")
    )
    assert intent_status(store) == dict.fromkeys(ids, outbox.DONE)
    assert 1 <= writer.transactions < len(ids)  # grouped, not one per job
    # A second run of the same jobs writes nothing new (the unique record decides).
    again = await asyncio.gather(*(writer.write(records_of(t), f"rate:{t}") for t in ids))
    assert again == [[False, False]] * len(ids)


async def test_a_job_the_database_refuses_fails_alone_and_its_intent_stays_pending(
    store: Store,
) -> None:
    ids = ["good1", "bad", "good2"]
    outbox.record_intents(store.engine, [outbox.Intent(t, "rate", {}) for t in ids])
    writer = GroupCommit(store)
    writes = [
        writer.write(records_of(t, rubric=None if t == "bad" else "faithfulness"), f"rate:{t}")
        for t in ids
    ]

    results = await asyncio.gather(*writes, return_exceptions=True)

    assert isinstance(results[1], IntegrityError)  # rubric is NOT NULL
    assert results[0] == results[2] == [True, True]
    assert {t for t, _ in stored(store)} == {"good1", "good2"}  # nothing of the bad job
    assert intent_status(store) == {"good1": "done", "bad": "pending", "good2": "done"}
