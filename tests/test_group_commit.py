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


async def test_jobs_finishing_a_few_ms_apart_share_a_transaction_and_a_lone_one_still_commits(
    store: Store,
) -> None:
    """With a slow judge, jobs finish spread out: the writes of 8 jobs 1 ms apart wait for
    each other (linger_s) and commit together; a lone write commits after the linger."""
    ids = [f"s{i}" for i in range(9)]
    outbox.record_intents(store.engine, [outbox.Intent(t, "rate", {}) for t in ids])
    writer = GroupCommit(store, linger_s=0.05)

    async def job(i: int, trace_id: str) -> list[bool]:
        # Timers fire in deadline order, and every job's (i ms) precedes the linger's (50 ms
        # after the first job): a stalled loop cannot split them, whatever the machine's speed.
        await asyncio.sleep(0.001 * i)
        return await writer.write(records_of(trace_id), f"rate:{trace_id}")

    assert await asyncio.gather(*(job(i, t) for i, t in enumerate(ids[:8]))) == [[True] * 2] * 8
    assert writer.transactions == 1
    assert await writer.write(records_of(ids[8]), f"rate:{ids[8]}") == [True, True]
    assert writer.transactions == 2
    assert intent_status(store) == dict.fromkeys(ids, outbox.DONE)
    # Without the linger, jobs that arrive turns of the loop apart commit apart: the first
    # flush takes the first job alone (counted in turns, not ms, so load cannot merge them).
    apart = GroupCommit(store, linger_s=0.0)
    more = [f"u{i}" for i in range(8)]
    outbox.record_intents(store.engine, [outbox.Intent(t, "rate", {}) for t in more])

    async def spread(i: int, trace_id: str) -> list[bool]:
        for _ in range(3 * i):
            await asyncio.sleep(0)  # one turn of the loop
        return await apart.write(records_of(trace_id), f"rate:{trace_id}")

    await asyncio.gather(*(spread(i, t) for i, t in enumerate(more)))
    assert apart.transactions > 1


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


def _record(trace_id: str, span_id: str, rubric: str, status: str, score: float) -> EvalRecord:
    return EvalRecord(
        trace_id=trace_id,
        span_id=span_id,
        rubric=rubric,
        rubric_version="1",
        scorer="faithfulness",
        method="judge",
        status=status,
        score=score if status == "ok" else None,
    )


def _state(store: Store) -> list[tuple[str, str, str, str, float | None]]:
    with Session(store.engine) as session:
        rows = session.exec(select(EvalRecord)).all()
        return sorted((r.trace_id, r.span_id, r.rubric, r.status, r.score) for r in rows)


def test_one_multi_row_upsert_equals_writing_one_by_one(store: Store, db_url: str) -> None:
    """Random streams with duplicate identities, final and non-final rows, and span-less
    errors: one upsert_records call per batch leaves exactly the rows, ids and per-record
    results that writing the same records one at a time does (span-less flags aside: in a
    batch they go after the records with a span, so the stored rows agree, their flags may
    not)."""
    import random

    reference = Store(db_url.replace("store.db", "reference.db")) if "sqlite" in db_url else None
    for seed in range(25):
        rng = random.Random(seed)
        batches = [
            [
                _record(
                    f"s{seed}-t{rng.randrange(3)}",
                    span,
                    rng.choice(["faithfulness", "answer_relevance"]),
                    "error" if not span else rng.choice(["ok", "error"]),
                    round(rng.random(), 3),
                )
                for span in (rng.choice(["a", "a", ""]) for _ in range(rng.randrange(1, 9)))
            ]
            for _ in range(4)
        ]
        together = [store.upsert_records(batch) for batch in batches]
        prefix = f"s{seed}-"
        got = [row for row in _state(store) if row[0].startswith(prefix)]
        # The reference: copies of the same records, one call each, in a second SQLite file,
        # or on PostgreSQL under other trace ids in the same schema.
        one_by_one_rows: list[list[bool]] = []
        target = reference if reference is not None else store
        ref_prefix = prefix if reference is not None else f"r{seed}-"
        for batch in batches:
            flags = []
            for r in batch:
                copy = _record(
                    r.trace_id.replace(prefix, ref_prefix, 1),
                    r.span_id,
                    r.rubric,
                    r.status,
                    r.score if r.score is not None else 0.0,
                )
                flags.extend(target.upsert_records([copy]))
            one_by_one_rows.append(flags)
        expected = [
            (t.replace(ref_prefix, prefix, 1), s, ru, st, sc)
            for t, s, ru, st, sc in _state(target)
            if t.startswith(ref_prefix)
        ]
        assert got == expected, f"seed {seed}"
        for batch, mine, theirs in zip(batches, together, one_by_one_rows, strict=True):
            for r, a, b in zip(batch, mine, theirs, strict=True):
                if r.span_id:
                    assert a == b, f"seed {seed}: {r.trace_id} {r.rubric} {r.status}"
    if reference is not None:
        reference.close()


def test_a_duplicate_identity_in_one_group_commit_is_written_once(store: Store) -> None:
    """Two jobs of one trace (a rate and a tail run) finishing together: the first final
    record wins, the second reports 'not written', and nothing raises (PostgreSQL refuses a
    statement that updates one row twice; the rounds keep them apart)."""
    first = _record("dup", "a", "faithfulness", "ok", 0.9)
    second = _record("dup", "a", "faithfulness", "ok", 0.1)
    error_then_ok = [
        _record("dup2", "a", "faithfulness", "error", 0.0),
        _record("dup2", "a", "faithfulness", "ok", 0.4),
    ]
    assert store.upsert_records([first, second, *error_then_ok]) == [True, False, True, True]
    assert _state(store) == [
        ("dup", "a", "faithfulness", "ok", 0.9),
        ("dup2", "a", "faithfulness", "ok", 0.4),
    ]
    assert error_then_ok[1].id == error_then_ok[0].id  # the replaced row keeps its id


async def test_concurrent_reads_share_a_hop_and_a_bad_payload_fails_its_job_alone(
    store: Store,
) -> None:
    """GroupRead: the jobs that start together count their attempts and read their traces
    in one flush; a missing trace reads None; a stored payload that no longer validates
    fails that job alone, after its attempt was counted (so it can reach the dead letter)."""
    from sqlalchemy import update

    from evaluator.store.models import TraceRecord, table_of
    from evaluator.traces.model import Trace
    from evaluator.worker.group_commit import GroupRead
    from tests.conftest import rag_trace

    ids = [f"r{i}" for i in range(12)]
    store.save_traces(Trace.model_validate(rag_trace(t)) for t in ids)
    traces = table_of(TraceRecord)
    with store.engine.begin() as conn:  # corrupt one stored payload behind the store's back
        conn.execute(update(traces).where(traces.c.trace_id == "r3").values(payload={"x": 1}))
    outbox.record_intents(store.engine, [outbox.Intent(t, "rate", {}) for t in [*ids, "gone"]])
    reader = GroupRead(store)
    flushes = 0
    original = reader._flush

    async def counting(batch):  # type: ignore[no-untyped-def]
        nonlocal flushes
        flushes += 1
        await original(batch)

    reader._flush = counting  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(reader.begin(t, f"rate:{t}") for t in [*ids, "gone"]), return_exceptions=True
    )

    assert flushes == 1
    by_id = dict(zip([*ids, "gone"], results, strict=True))
    assert by_id["gone"] is None
    assert isinstance(by_id["r3"], Exception) and "validation" in str(by_id["r3"]).lower()
    for t in ids:
        if t != "r3":
            assert isinstance(by_id[t], Trace) and by_id[t].trace_id == t
    with Session(store.engine) as session:
        attempts = {i.trace_id: i.attempts for i in session.exec(select(outbox.EvalIntent))}
    assert attempts == {t: 1 for t in [*ids, "gone"]}


def test_identities_are_compared_as_stored(store: Store) -> None:
    """Two records whose trace ids differ only by a NUL (which the store drops) are one
    identity: they go in separate rounds (PostgreSQL would refuse one statement touching
    the row twice) and the written one is reported written, with its stored id."""
    plain = _record("nul-1", "a", "faithfulness", "ok", 0.3)
    with_nul = _record("nul\x00-1", "a", "faithfulness", "ok", 0.6)
    assert store.upsert_records([with_nul, plain]) == [True, False]
    assert _state(store) == [("nul-1", "a", "faithfulness", "ok", 0.6)]


def test_two_jobs_of_one_intent_in_one_group_count_two_attempts(store: Store) -> None:
    """The group's one UPDATE … IN counts an intent once per statement: an intent whose two
    jobs start together (the sweeper re-made one while the first still ran) counts two."""
    outbox.record_intents(store.engine, [outbox.Intent("twice", "rate", {})])
    with store.engine.begin() as conn:
        outbox.start_attempts(conn, ["rate:twice", "rate:twice"])
    with Session(store.engine) as session:
        assert [i.attempts for i in session.exec(select(outbox.EvalIntent))] == [2]
