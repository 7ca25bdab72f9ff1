"""Batch jobs: the intake packs sampled traces into arq jobs of up to worker.traces_per_job.
Real Redis and SQLite; the judge is respx's mock. The invariant is the usual one: every
sampled trace ends as one record per rubric version, none lost, none twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import respx
from redis.asyncio import Redis

from evaluator.config.settings import Settings
from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import SyncTraceEnqueuer
from evaluator.intake.jobs import EVALUATE_BATCH_JOB, EVALUATE_JOB, QueuedTrace, batch_marker_prefix
from evaluator.intake.serialization import deserialize
from evaluator.sampling import TailRules
from evaluator.sources.ingest import ingest_traces
from evaluator.store import outbox
from evaluator.store.store import Store
from evaluator.worker.app import evaluate_traces_job, run_burst
from evaluator.worker.runtime import build_runtime

from .conftest import (
    JUDGE_URL,
    TONE_RUBRIC,
    chat_completion,
    make_settings,
    queued_members,
    rag_trace,
    write_rubric,
)
from .services import RedisServer, private_redis

__all__ = ["private_redis"]  # a fixture

FAST_JUDGE = {"model": "gpt-4o-mini", "max_retries": 0, "timeout_s": 2.0, "max_wait_s": 0.0}


async def _queued(client: Redis, queue: str) -> dict[str, dict[str, Any]]:
    ids = [i.decode() for i in await client.zrange(queue, 0, -1)]
    return {i: deserialize(await client.get(f"arq:job:{i}")) for i in ids}


async def test_intake_packs_traces_and_no_trace_is_queued_twice(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q",
                    sampling=SamplingConfig(1.0, TailRules()), traces_per_job=4)  # fmt: skip
    traces = [QueuedTrace(f"t{i}", {"e": True} if i == 0 else {}, "rate") for i in range(9)]
    # Listed twice in one drain: queued once.
    assert len(await intake._queue([*traces, traces[3]], 1)) == 9
    jobs = await _queued(client, "q")
    # 9 traces at 4 per job: two batch jobs of 4 and a job of its own for the last one.
    assert sorted(len(j["a"][0]) for j in jobs.values() if j["f"] == EVALUATE_BATCH_JOB) == [4, 4]
    assert jobs["evaluate:rate:t8"]["a"] == ["t8", {}, "rate"]
    members = [m for j in jobs.values() if j["f"] == EVALUATE_BATCH_JOB for m in j["a"][0]]
    assert ["t0", {"e": True}, "rate"] in members  # each member's own signals
    assert sorted(m[0] for m in members) == [f"t{i}" for i in range(8)]

    # Enqueued again while queued (in a batch or alone): nothing new, by the drain or the
    # sweeper; the same batch built again (a parked intake batch processed again) is the
    # same job.
    assert await intake._queue(traces[:3] + traces[8:], 2) == []
    assert await intake.create_jobs(traces) == set()
    assert len(await _queued(client, "q")) == 3
    markers = [k async for k in client.scan_iter(match=f"{batch_marker_prefix('app')}*")]
    assert len(markers) == 8
    await client.delete(*markers)  # only the batch job's own id can stop it now
    assert await intake._queue(traces[:4], 3) == []
    assert len(await _queued(client, "q")) == 3

    # A batch job that is gone (finished or failed) no longer covers its members: the
    # sweeper queues them again (packed the same way).
    gone = next(i for i, j in jobs.items() if j["f"] == EVALUATE_BATCH_JOB)
    gone_members = sorted(m[0] for m in jobs[gone]["a"][0])
    await client.delete(f"arq:job:{gone}")
    await client.zrem("q", gone)
    assert await intake.create_jobs(traces) == {f"evaluate:rate:{t}" for t in gone_members}
    members_now = sorted(m[0] for m in await queued_members(client, "q"))
    assert members_now == sorted(f"t{i}" for i in range(9))
    assert len(await _queued(client, "q")) == 3  # the gone batch's 4 in a new batch job
    assert gone_members[0] in members_now
    for t in gone_members:  # each re-queued member names its new batch
        assert await client.get(f"{batch_marker_prefix('app')}evaluate:rate:{t}") is not None
    await client.aclose()


def _settings(
    tmp_path: Path, redis_url: str, judge_timeout_s: float = 2.0, **worker: Any
) -> Settings:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    judge = {**FAST_JUDGE, "base_url": JUDGE_URL, "timeout_s": judge_timeout_s}
    # A member starts only while its job has time left for two worst-case judge calls: 60 s
    # leaves 56 s to find a slot (5 s left 1 s, which a loaded machine overran: members were
    # handed on to jobs of their own and the job counts changed).
    return make_settings(
        tmp_path, redis_url, judge=judge,
        worker={"job_timeout_s": 60, "max_jobs": 4, **worker},
    )  # fmt: skip


def _mock_judge(respx_mock: respx.MockRouter) -> respx.Route:
    return respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(
            200, json=chat_completion(json.dumps({"reasoning": "r", "score": 4}))
        )
    )


def _enqueue(settings: Settings, ids: list[str], ingested: list[str]) -> None:
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace(t, answer=f"answer of {t}") for t in ingested])
    store.close()
    enq = SyncTraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
    enq.enqueue_many(ids)
    enq.close()


def _outcome(settings: Settings) -> tuple[list[Any], dict[str, str]]:
    store = Store(settings.database.url)
    records = list(store.records(limit=10_000))
    intents = {i.id: i.status for i in outbox.list_intents(store.engine, limit=10_000)}
    store.close()
    return records, intents


@respx.mock(base_url=JUDGE_URL)
async def test_batched_traces_each_end_as_one_record_and_a_retried_member_goes_on_alone(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    route = _mock_judge(respx_mock)
    settings = _settings(tmp_path, redis_url, traces_per_job=8, trace_not_found_tries=2)
    ingested = [f"t{i}" for i in range(30)]
    ids = [*ingested[:13], "missing-a", *ingested[13:], "missing-b"]
    _enqueue(settings, ids, ingested)

    result = await run_burst(settings)

    # 32 traces in 4 batch jobs; the two not ingested asked for a retry and went on in a job
    # of their own each (their second and last try: an error record saying why).
    # Not retried: the single jobs carry the try their batch spent (else arq would retry
    # each once more before the "not found" record).
    assert result["jobs_complete"] == 6 and result["jobs_failed"] == 0
    assert result["jobs_retried"] == 0
    records, intents = _outcome(settings)
    by_trace = {r.trace_id: r for r in records}
    assert len(records) == len(by_trace) == 32  # one record per trace, none twice
    assert all(by_trace[t].status == "ok" and by_trace[t].score == 0.75 for t in ingested)
    for t in ("missing-a", "missing-b"):
        assert by_trace[t].status == "error" and "after 2 tries" in (by_trace[t].explanation or "")
    assert set(intents.values()) == {"done"} and len(intents) == 32
    assert route.call_count == 30  # no trace judged twice


@respx.mock(base_url=JUDGE_URL)
async def test_members_with_no_slot_in_time_are_handed_on(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    """Members wait for one of the worker's max_jobs trace slots; one still waiting when too
    little of the job's timeout is left for two worst-case judge calls (here 2 - 2 x 0.5 =
    1 s) goes to a job of its own rather than letting the batch time out."""
    _mock_judge(respx_mock)
    settings = _settings(tmp_path, redis_url, judge_timeout_s=0.5, job_timeout_s=2)
    _enqueue(settings, ["a", "b"], ["a", "b"])
    runtime = build_runtime(settings)
    client = Redis.from_url(redis_url)
    from evaluator.intake.drain import build_intake
    from evaluator.worker.runtime import sampling_config

    intake = build_intake(client, settings, sampling=sampling_config(settings, runtime.rubrics),
                          engine=runtime.store.engine)  # fmt: skip
    await intake.drain_all(100)  # the intents, and a batch job of both
    (batch,) = (await _queued(client, settings.redis.queue_name)).values()
    assert batch["f"] == EVALUATE_BATCH_JOB
    ctx = {"runtime": runtime, "job_try": 1, "intake": intake, "trace_slots": asyncio.Semaphore(0)}

    out = await evaluate_traces_job(ctx, batch["a"][0])

    assert out == {"traces": 2, "handed_on": 2, "failed": 0}
    singles = {
        j["a"][0]: j["a"]
        for j in (await _queued(client, settings.redis.queue_name)).values()
        if j["f"] == EVALUATE_JOB
    }
    # Not a try spent: the single job's first try is the member's first.
    assert singles == {"a": ["a", {}, "rate"], "b": ["b", {}, "rate"]}
    assert set(_outcome(settings)[1].values()) == {"pending"}
    await runtime.aclose()
    await client.aclose()
    await run_burst(settings)
    records, intents = _outcome(settings)
    assert sorted(r.trace_id for r in records) == ["a", "b"]
    assert set(intents.values()) == {"done"}


@respx.mock(base_url=JUDGE_URL)
async def test_a_malformed_member_of_a_hand_written_batch_job_spoils_only_itself(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    _mock_judge(respx_mock)
    settings = _settings(tmp_path, redis_url)
    _enqueue(settings, ["ok"], ["ok"])
    runtime = build_runtime(settings)
    client = Redis.from_url(redis_url)
    ctx = {"runtime": runtime, "job_try": 1, "intake": None}
    members: list[Any] = [["ok", {}, "rate"], ["short"], None, ["x", "not a dict", "rate"]]
    out = await evaluate_traces_job(ctx, members)
    assert out == {"traces": 4, "handed_on": 0, "failed": 3}
    assert [r.trace_id for r in _outcome(settings)[0]] == ["ok"]
    await runtime.aclose()
    await client.aclose()


async def test_a_worker_runs_at_most_max_jobs_traces_at_once_however_they_are_packed(
    tmp_path: Path, redis_url: str
) -> None:
    """24 traces in 3 batch jobs of 8, max_jobs 3, a judge (a real loopback server) that
    takes 50 ms: never more than 3 judge requests at once, and all 24 judged once."""
    from .judge_stub import JudgeStub

    with JudgeStub(hang_first=10_000, hang_s=0.05) as stub:
        write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
        settings = make_settings(
            tmp_path, redis_url, judge={**FAST_JUDGE, "base_url": stub.url, "max_concurrency": 32},
            worker={"max_jobs": 3, "traces_per_job": 8},
        )  # fmt: skip
        ids = [f"t{i}" for i in range(24)]
        _enqueue(settings, ids, ids)
        result = await run_burst(settings)
    assert result["traces_evaluated"] == 24 and result["jobs_complete"] == 3
    assert stub.calls == 24 and stub.max_in_flight == 3
    records, intents = _outcome(settings)
    assert sorted(r.trace_id for r in records) == sorted(ids)
    assert set(intents.values()) == {"done"}


async def test_a_worker_does_not_ask_redis_about_jobs_it_is_running_itself(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    """arq re-reads the queue's head on every poll with a free slot, the jobs running here
    included, and checks each with WATCH/EXISTS/ZSCORE; the worker skips its own. On a Redis
    of this test's own, WATCH is called once per job started and no more: 12 jobs of one
    trace, 4 at a time, held 50-200 ms by the judge (so they finish apart: every poll finds
    a backlog behind jobs still running)."""
    from .judge_stub import JudgeStub

    with JudgeStub(delays=(0.05, 0.2, 0.1, 0.15, 0.08)) as stub:
        write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
        settings = make_settings(
            tmp_path, private_redis.url, judge={**FAST_JUDGE, "base_url": stub.url},
            worker={"max_jobs": 4, "traces_per_job": 1},
        )  # fmt: skip
        ids = [f"w{i}" for i in range(12)]
        _enqueue(settings, ids, ids)
        client = private_redis.client()
        client.config_resetstat()
        result = await run_burst(settings)
        watches = client.info("commandstats").get("cmdstat_watch", {}).get("calls", 0)
        client.close()
    assert result["jobs_complete"] == 12 and stub.calls == 12
    assert watches == 12


@respx.mock(base_url=JUDGE_URL, assert_all_called=False)
async def test_a_batch_job_run_again_hands_on_only_its_unfinished_members(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    """arq runs a batch job again (its worker died, it was cancelled): members whose
    intents are done are not evaluated again; the rest go on in jobs of their own from
    their first try, except one that has its own job already."""
    from evaluator.intake.drain import build_intake
    from evaluator.worker.runtime import sampling_config

    route = _mock_judge(respx_mock)
    settings = _settings(tmp_path, redis_url)
    ids = ["r0", "r1", "r2", "r3"]
    _enqueue(settings, ids, ids)
    runtime = build_runtime(settings)
    client = Redis.from_url(redis_url)
    intake = build_intake(client, settings, sampling=sampling_config(settings, runtime.rubrics),
                          engine=runtime.store.engine)  # fmt: skip
    await intake.drain_all(100)
    (batch,) = (await _queued(client, settings.redis.queue_name)).values()
    outbox.finish(runtime.store.engine, "rate:r0", status=outbox.DONE)
    await intake.follow_up([(QueuedTrace("r3", {}, "rate", tried=1), 1)])  # handed on before
    ctx = {"runtime": runtime, "job_try": 2, "intake": intake}

    out = await evaluate_traces_job(ctx, batch["a"][0])

    assert out == {"traces": 4, "done_before": 1, "handed_on": 3, "failed": 0}
    assert route.call_count == 0  # nothing judged in the re-run itself
    singles = {
        j["a"][0]: j["a"]
        for j in (await _queued(client, settings.redis.queue_name)).values()
        if j["f"] == EVALUATE_JOB
    }
    # r1, r2 from their first try; r3 keeps the job it had (with its try).
    assert singles == {
        "r1": ["r1", {}, "rate"], "r2": ["r2", {}, "rate"], "r3": ["r3", {}, "rate", 1],
    }  # fmt: skip
    await runtime.aclose()
    await client.aclose()


def test_a_worker_claims_about_twice_the_batches_its_slots_take() -> None:
    from evaluator.worker.app import arq_max_jobs

    assert arq_max_jobs(32, 8) == 8  # 64 traces claimed for 32 slots; the rest stay queued
    assert arq_max_jobs(32, 1) == 32  # a job per trace: as arq's max_jobs always was
    assert arq_max_jobs(3, 8) == 2


async def test_the_sweeper_leaves_a_trace_in_a_live_batch_and_its_clock_alone(
    redis_url: str, tmp_path: Path
) -> None:
    """A due intent whose trace is in a batch job that still exists is not queued again and
    its intent's clock is not reset (it is due again at the next sweep); once that job is
    gone without finishing it, the next sweep queues it."""
    from evaluator.intake.sweeper import requeue

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q", engine=store.engine,
                    sampling=SamplingConfig(1.0, TailRules()), traces_per_job=4)  # fmt: skip
    ids = ["a", "b", "c", "d"]
    outbox.record_intents(store.engine, [outbox.Intent(t, "rate", {}) for t in ids])
    assert len(await intake._queue([QueuedTrace(t, {}, "rate") for t in ids], 1)) == 4
    before = {i.id: i.enqueued_at for i in outbox.intents_of(store.engine, ids)}

    assert await requeue(intake, store.engine, outbox.intents_of(store.engine, ids)) == 0
    assert {i.id: i.enqueued_at for i in outbox.intents_of(store.engine, ids)} == before

    (batch,) = (await _queued(client, "q")).keys()
    await client.delete(f"arq:job:{batch}")
    await client.zrem("q", batch)
    assert await requeue(intake, store.engine, outbox.intents_of(store.engine, ids)) == 4
    after = {i.id: i.enqueued_at for i in outbox.intents_of(store.engine, ids)}
    assert all(after[k] > before[k] for k in before)
    await client.aclose()
    store.close()


async def test_hostile_trace_ids_and_signals_survive_the_batch_payload(redis_url: str) -> None:
    """The batch job's payload is built by string concatenation in Lua from each member's
    JSON: quotes, backslashes, braces and non-ASCII in IDs, lone surrogates in signal values,
    come back exactly as they went in, and the payload is one valid job. (An ID with a lone
    surrogate never gets here: the wire check refuses it and the entry is quarantined.)"""
    from evaluator.intake.wire import check_trace_id

    assert check_trace_id("lone\udc80x") is not None
    client = Redis.from_url(redis_url)
    intake = Intake(client, key_prefix="app", queue_name="q",
                    sampling=SamplingConfig(1.0, TailRules()), traces_per_job=8)  # fmt: skip
    ids = ['q"uote', "back\\slash", "br]}ace", "ünï©ødé", "a,b", "x" * 256]
    assert all(check_trace_id(t) is None for t in ids)
    traces = [QueuedTrace(t, {"f": t + "\udc80", "n": 1.5}, "rate") for t in ids]
    assert len(await intake._queue(traces, 1)) == len(ids)
    (job,) = (await _queued(client, "q")).values()
    assert job["f"] == EVALUATE_BATCH_JOB
    assert job["a"][0] == [[t, {"f": t + "\udc80", "n": 1.5}, "rate"] for t in ids]
    await client.aclose()
