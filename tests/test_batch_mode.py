"""Batch mode end to end: the evaluation job parks the judge call, the batch cron job submits
it to a loopback Batch API (bench/batch_server.py), collects the result and writes the record.

Real Redis, real SQLite and PostgreSQL; the judge is the loopback server over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bench.batch_server import BatchBehaviour, BatchJudgeServer
from bench.judge_server import ServerConfig
from evaluator.cli.health import _check_database
from evaluator.config.rubrics import parse_rubric
from evaluator.config.settings import Settings
from evaluator.errors import RubricError
from evaluator.intake.enqueue import TraceEnqueuer
from evaluator.sources.ingest import ingest_traces
from evaluator.store.store import Store
from evaluator.worker.app import cron_jobs, run_burst
from evaluator.worker.batch import run_batches
from evaluator.worker.runtime import build_runtime
from judges.errors import JudgeOutputError
from judges.llm.batch import jsonl, read_results, reply_of
from judges.llm.client import JudgeClient
from judges.scorers import llm_rubric
from judges.scorers.llm_rubric import score_llm_rubric
from judges.scorers.registry import identity_for
from judges.types import EvalCase

from .conftest import (
    JUDGE_URL,
    TONE_RUBRIC,
    chat_completion,
    make_settings,
    rag_trace,
    write_rubric,
)

# TOML: top-level keys must come before the first table.
BATCH_TONE = 'mode = "batch"\n' + TONE_RUBRIC


@pytest.fixture
async def server() -> AsyncIterator[BatchJudgeServer]:
    judge = BatchJudgeServer(ServerConfig())
    await judge.start()
    yield judge
    await judge.close()


def batch_settings(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer, **sections: dict[str, Any]
) -> Settings:
    write_rubric(tmp_path / "rubrics", "tone", BATCH_TONE)
    judge = {"base_url": server.url, "model": "gpt-4o-mini", "max_retries": 0}
    judge.update(sections.pop("judge", {}))
    return make_settings(tmp_path, redis_url, judge=judge, **sections)


async def evaluate(settings: Settings, trace_ids: list[str], *, ingest: bool = True) -> Any:
    if ingest:
        store = Store(settings.database.url)
        ingest_traces(store, [rag_trace(t, answer=f"Answer {t}.") for t in trace_ids])
        store.close()
    enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
    for trace_id in trace_ids:
        enq.enqueue(trace_id)
    assert await enq.flush()
    await enq.aclose()
    return await run_burst(settings)


async def cron_run(settings: Settings) -> dict[str, Any]:
    """One run of the batch cron job in a freshly started worker runtime (as after a
    restart: nothing carried over in memory)."""
    runtime = await asyncio.to_thread(build_runtime, settings)
    try:
        return await run_batches(runtime)
    finally:
        await runtime.aclose()


def parked(settings: Settings) -> list[tuple[str, bool]]:
    """(status, has a body) of every parked request."""
    from sqlalchemy import select

    from evaluator.store.batches import BatchRequest
    from evaluator.store.models import table_of

    t = table_of(BatchRequest)
    store = Store(settings.database.url)
    try:
        with store.engine.connect() as conn:
            return [(row.status, bool(row.body)) for row in conn.execute(select(t))]
    finally:
        store.close()


def records(settings: Settings) -> list[Any]:
    store = Store(settings.database.url)
    rows = list(store.records(limit=100_000))
    store.close()
    return rows


async def test_batch_mode_writes_one_record_per_trace_and_rubric_at_half_price(
    tmp_path: Path, redis_url: str, postgres_url: str, server: BatchJudgeServer
) -> None:
    settings = batch_settings(tmp_path, redis_url, server, database={"url": postgres_url})
    ids = [f"t{i}" for i in range(20)]

    burst = await evaluate(settings, ids)
    assert burst["traces_evaluated"] == 20 and burst["jobs_failed"] == 0
    assert records(settings) == []  # parked, not judged in the job
    assert server.stats.chat_calls == 0
    assert _check_database(settings)["batch_requests_pending"] == 20
    assert set(parked(settings)) == {("pending", True)}

    first = await cron_run(settings)
    assert first == {"collected": 0, "written": 0, "submitted": 20, "rubric_changed": 0}
    assert _check_database(settings)["batches_open"] == 1
    second = await cron_run(settings)
    assert second == {"collected": 1, "written": 20, "submitted": 0, "rubric_changed": 0}

    rows = records(settings)
    assert sorted(r.trace_id for r in rows) == sorted(ids)
    assert {(r.rubric, r.rubric_version, r.status) for r in rows} == {("tone", "1", "ok")}
    # A settled request keeps no prompt (it quotes the trace): the record is what stays.
    assert set(parked(settings)) == {("done", False)}
    assert server.stats.chat_calls == 20 and server.batch_stats.batches_created == 1
    row = rows[0]
    assert row.span_id == f"{row.trace_id}-c" and row.judge_calls == 1
    assert row.details["judge_mode"] == "batch" and row.details["sampled_by"] == "rate"
    assert row.judge_input_tokens > 0
    # The weight and the trace's time travel with the parked request (trends weigh and bucket
    # batch records like online ones).
    assert {r.inclusion_probability for r in rows} == {1.0}
    assert all(r.trace_at is not None for r in rows)
    online_price = settings.cost_usd("gpt-4o-mini", row.judge_input_tokens, row.judge_output_tokens)
    assert row.judge_cost_usd == pytest.approx(online_price / 2)
    # Same epoch as the rubric in online mode: the mode does not change the verdict's identity.
    rubric = parse_rubric(BATCH_TONE, source=Path("tone.toml"))
    online = rubric.model_copy(update={"mode": "online"})
    runtime = await asyncio.to_thread(build_runtime, settings)
    try:
        assert identity_for(online, runtime.clients).epoch() == row.epoch
    finally:
        await runtime.aclose()

    # Nothing left to do; re-evaluating the same traces parks nothing and writes nothing.
    assert await cron_run(settings) == {
        "collected": 0,
        "written": 0,
        "submitted": 0,
        "rubric_changed": 0,
    }
    await evaluate(settings, ids, ingest=False)
    assert await cron_run(settings) == {
        "collected": 0,
        "written": 0,
        "submitted": 0,
        "rubric_changed": 0,
    }
    assert len(records(settings)) == 20 and server.batch_stats.batches_created == 1
    health = _check_database(settings)
    assert (health["batch_requests_pending"], health["batches_open"]) == (0, 0)


async def test_pending_batch_survives_a_worker_restart(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer
) -> None:
    # The batch stays in progress until the test finishes it (no race with the clock).
    server.behaviour = BatchBehaviour(delay_s=float("inf"))
    settings = batch_settings(tmp_path, redis_url, server)
    await evaluate(settings, ["a", "b", "c"])
    assert (await cron_run(settings))["submitted"] == 3  # this runtime is then closed

    early = await cron_run(settings)  # a new runtime: the batch is still in progress
    assert early == {"collected": 0, "written": 0, "submitted": 0, "rubric_changed": 0}
    assert records(settings) == [] and server.batch_stats.polls == 1
    (batch,) = server.batches.values()
    batch.behaviour.delay_s = 0.0  # the provider finishes the batch now
    assert (await cron_run(settings))["written"] == 3
    assert sorted(r.trace_id for r in records(settings)) == ["a", "b", "c"]
    assert server.batch_stats.batches_created == 1  # never submitted twice


async def test_a_batch_file_stays_under_the_byte_cap(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer
) -> None:
    """Each uploaded file is at most judge.batch_max_bytes; what does not fit waits for the
    next run, and every request is still sent once."""
    probe = batch_settings(tmp_path, redis_url, server)  # one request parked, to measure it
    await evaluate(probe, ["p"])
    line_bytes = len(jsonl([{"custom_id": "x" * 37, "method": "POST", "url": "/v1/chat/completions",
                             "body": (await _parked_body(probe))}]))  # fmt: skip
    cap = int(line_bytes * 2.5)  # two requests per file
    settings = batch_settings(tmp_path / "capped", redis_url, server,
                              judge={"batch_max_bytes": cap})  # fmt: skip
    ids = [f"t{i}" for i in range(5)]
    await evaluate(settings, ids)
    sent = [(await cron_run(settings))["submitted"] for _ in range(4)]
    assert sent == [2, 2, 1, 0]
    inputs = [server.files[b.body["input_file_id"]] for b in server.batches.values()]
    assert len(inputs) == 3 and all(len(c) <= cap for c in inputs)
    assert sorted(r.trace_id for r in records(settings)) == ids  # the last run collected


async def _parked_body(settings: Settings) -> dict[str, Any]:
    from evaluator.store.batches import pending

    store = Store(settings.database.url)
    try:
        return pending(store.engine, 1)[0].body
    finally:
        store.close()


async def test_a_duplicated_output_line_writes_once(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer
) -> None:
    server.behaviour = BatchBehaviour(duplicate_lines=True)
    settings = batch_settings(tmp_path, redis_url, server)
    await evaluate(settings, ["a", "b"])
    await cron_run(settings)
    assert (await cron_run(settings))["written"] == 2
    out = server.files[server.batches["batch_000001"].body["output_file_id"]]
    custom_ids = [json.loads(line)["custom_id"] for line in out.splitlines()]
    assert len(custom_ids) == 4 and len(set(custom_ids)) == 2  # each result delivered twice
    assert len(records(settings)) == 2


async def test_failed_lines_become_error_records_with_the_cause(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer
) -> None:
    server.behaviour = BatchBehaviour(error_every=3)
    settings = batch_settings(tmp_path, redis_url, server)
    await evaluate(settings, [f"t{i}" for i in range(9)])
    await cron_run(settings)
    assert (await cron_run(settings))["written"] == 9
    rows = records(settings)
    errors = [r for r in rows if r.status == "error"]
    assert len(errors) == 3 and sum(r.status == "ok" for r in rows) == 6
    assert all(
        "HTTP 400" in r.explanation and "injected line error" in r.explanation for r in errors
    )
    assert all(r.score is None and r.details["error_kind"] for r in errors)
    assert sorted(parked(settings)) == [("done", False)] * 6 + [("error", False)] * 3

    # `retry --errors` sends the failed requests again (as online mode re-runs an error
    # record); the answered ones are not re-sent, and each trace keeps one record.
    from evaluator.cli.main import main

    server.behaviour = BatchBehaviour()
    argv = ["--settings", str(tmp_path / "settings.toml"), "retry", "--errors"]
    assert await asyncio.to_thread(main, argv) == 0
    await run_burst(settings)
    assert (await cron_run(settings))["submitted"] == 3
    assert (await cron_run(settings))["written"] == 3
    rows = records(settings)
    assert len(rows) == 9 and {r.status for r in rows} == {"ok"}


@pytest.mark.parametrize(
    ("outcome", "omit_unanswered"),
    [("expired", False), ("cancelled", False), ("expired", True)],
    ids=["expired-error-file", "cancelled-error-file", "expired-lines-omitted"],
)
async def test_expired_batch_sends_unanswered_requests_again_then_gives_up(
    tmp_path: Path,
    redis_url: str,
    server: BatchJudgeServer,
    outcome: str,
    omit_unanswered: bool,
) -> None:
    """OpenAI writes the requests an expired or cancelled batch never ran into its error file
    (code batch_expired / batch_cancelled); a provider may also leave them out. Either way they
    are sent again, not recorded as errors, until batch_max_submissions."""
    server.behaviour = BatchBehaviour(
        outcome=outcome, answered_share=0.5, omit_unanswered=omit_unanswered
    )
    settings = batch_settings(tmp_path, redis_url, server, judge={"batch_max_submissions": 2})
    await evaluate(settings, [f"t{i}" for i in range(4)])
    await cron_run(settings)
    # Collects the 2 answered lines and sends the 2 others in a second batch (which ends the
    # same way, answering 1 of them).
    assert await cron_run(settings) == {
        "collected": 1,
        "written": 2,
        "submitted": 2,
        "rubric_changed": 0,
    }
    first = server.batches["batch_000001"].body  # read by the run above
    if omit_unanswered:
        assert first["error_file_id"] is None
    else:
        lines = read_results(server.files[first["error_file_id"]])
        assert [r.code for r in lines] == [f"batch_{outcome}"] * 2
    assert await cron_run(settings) == {
        "collected": 1,
        "written": 2,
        "submitted": 0,
        "rubric_changed": 0,
    }
    rows = records(settings)
    assert len(rows) == 4 and server.batch_stats.batches_created == 2
    errors = [r for r in rows if r.status == "error"]
    assert len(errors) == 1  # unanswered after batch_max_submissions = 2
    assert outcome in errors[0].explanation and "2 submissions" in errors[0].explanation
    assert errors[0].details["error_kind"] == "judge_unavailable"


async def test_failed_batch_records_its_errors(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer
) -> None:
    server.behaviour = BatchBehaviour(outcome="failed")
    settings = batch_settings(tmp_path, redis_url, server)
    await evaluate(settings, ["a", "b"])
    await cron_run(settings)
    assert await cron_run(settings) == {
        "collected": 1,
        "written": 2,
        "submitted": 0,
        "rubric_changed": 0,
    }
    rows = records(settings)
    assert {r.status for r in rows} == {"error"}
    assert all("injected batch failure" in r.explanation for r in rows)
    assert server.batch_stats.batches_created == 1  # a rejected file is not sent again


async def test_a_rubric_changed_while_batched_ends_in_an_error_record_that_retry_reruns(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer
) -> None:
    """A request whose rubric version is no longer loaded is never closed without a record:
    a submitted one becomes an error record of its version when its batch is collected, a
    pending one at submit time (not sent, not paid); `retry --errors` then evaluates the
    traces under the loaded version."""
    from evaluator.cli.main import main

    settings = batch_settings(tmp_path, redis_url, server)
    await evaluate(settings, ["a", "b", "c"])
    assert (await cron_run(settings))["submitted"] == 3
    await evaluate(settings, ["d"])  # parked while version 1 is loaded, not yet sent
    write_rubric(tmp_path / "rubrics", "tone", BATCH_TONE.replace('version = "1"', 'version = "2"'))

    run = await cron_run(settings)
    assert run == {"collected": 1, "written": 4, "submitted": 0, "rubric_changed": 4}
    assert server.batch_stats.batches_created == 1 and server.batch_stats.lines_submitted == 3
    rows = records(settings)
    assert sorted(r.trace_id for r in rows) == ["a", "b", "c", "d"]
    assert {(r.rubric_version, r.status) for r in rows} == {("1", "error")}
    assert {r.details["error_kind"] for r in rows} == {"rubric_changed"}
    assert all("is now version 2" in r.explanation for r in rows)
    assert all("evaluator retry --errors" in r.explanation for r in rows)
    health = _check_database(settings)
    assert (health["batch_requests_pending"], health["batch_requests_error"]) == (0, 4)

    argv = ["--settings", str(tmp_path / "settings.toml"), "retry", "--errors"]
    assert await asyncio.to_thread(main, [*argv, "--kind", "rubric_changed"]) == 0
    assert (await run_burst(settings))["traces_evaluated"] == 4
    assert (await cron_run(settings))["submitted"] == 4
    assert (await cron_run(settings))["written"] == 4
    rows = records(settings)
    # One record per trace and rubric version: version 1's error stays, version 2 is judged.
    assert sorted((r.trace_id, r.rubric_version, r.status) for r in rows) == sorted(
        [(t, "1", "error") for t in "abcd"] + [(t, "2", "ok") for t in "abcd"]
    )


async def test_overlapping_batch_runs_submit_once(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer
) -> None:
    """Two workers running the batch job at once (a run longer than the minute overlaps the
    next): one holds the Redis lock and submits, the other skips; one paid batch."""
    from redis.asyncio import Redis

    from evaluator.worker.batch import batch_job

    settings = batch_settings(tmp_path, redis_url, server)
    await evaluate(settings, [f"t{i}" for i in range(5)])
    runtimes = [await asyncio.to_thread(build_runtime, settings) for _ in range(2)]
    redis = Redis.from_url(redis_url)
    lock = f"{settings.redis.key_prefix}:batches:lock"
    try:
        runs = await asyncio.gather(
            *(batch_job({"runtime": rt, "redis": redis}) for rt in runtimes)
        )
        assert sorted(r.get("submitted", 0) for r in runs) == [0, 5]
        assert sum("skipped" in r for r in runs) == 1
        assert server.batch_stats.batches_created == 1
        assert await redis.exists(lock) == 0  # released by the run that held it
        # A lock held by someone else (another token) is neither taken nor deleted.
        await redis.set(lock, "other-run", px=60_000)
        assert "skipped" in await batch_job({"runtime": runtimes[0], "redis": redis})
        assert await redis.get(lock) == b"other-run"
        assert 0 < await redis.pttl(lock) <= 60_000
        await redis.delete(lock)
        assert (await batch_job({"runtime": runtimes[0], "redis": redis}))["written"] == 5
    finally:
        for rt in runtimes:
            await rt.aclose()
        await redis.aclose()


async def test_a_batch_created_but_never_recorded_is_adopted_not_sent_again(
    tmp_path: Path, redis_url: str, server: BatchJudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run dies after the provider created the batch and before it was recorded (here:
    the database write fails). The next run finds the batch by its metadata, records it with
    its requests and sends only what it did not hold; each trace gets one record."""
    from sqlalchemy.exc import OperationalError

    from evaluator.store import batches

    settings = batch_settings(tmp_path, redis_url, server)
    await evaluate(settings, ["a", "b", "c"])
    recorded = batches.record_submission

    def lost(*_args: Any, **_kwargs: Any) -> int:
        raise OperationalError("INSERT INTO judge_batches", {}, Exception("connection lost"))

    monkeypatch.setattr(batches, "record_submission", lost)
    with pytest.raises(OperationalError):
        await cron_run(settings)
    monkeypatch.setattr(batches, "record_submission", recorded)
    assert server.batch_stats.batches_created == 1
    assert _check_database(settings)["batches_open"] == 0  # unrecorded: an orphan

    await evaluate(settings, ["d"])  # parked meanwhile
    assert (await cron_run(settings))["submitted"] == 1  # d alone; a, b, c are adopted
    assert server.batch_stats.batches_created == 2
    second = server.files[server.batches["batch_000002"].body["input_file_id"]]
    assert len(second.splitlines()) == 1
    assert (await cron_run(settings))["written"] == 4
    assert sorted(r.trace_id for r in records(settings)) == ["a", "b", "c", "d"]
    assert server.batch_stats.lines_submitted == 4  # nothing sent twice


def test_batch_mode_is_offered_to_single_call_rubrics_and_runs_as_a_cron_job(
    tmp_path: Path, redis_url: str
) -> None:
    with pytest.raises(RubricError, match="mode 'batch' is available for scorer llm_rubric"):
        parse_rubric(
            'name = "f"\nversion = "1"\nscorer = "faithfulness"\nmode = "batch"\n',
            source=Path("f.toml"),
        )
    settings = make_settings(tmp_path, redis_url)
    assert any(job.name.endswith(":batches") for job in cron_jobs(settings))


@respx.mock(base_url=JUDGE_URL)
async def test_a_batch_line_is_the_online_request_and_its_reply_is_judged_the_same_way(
    respx_mock: respx.MockRouter,
) -> None:
    """The body parked for the batch is the body an online call sends; an unusable batch
    reply is an error with the raw output (no re-ask), a usable one the same verdict."""
    rubric = parse_rubric(BATCH_TONE, source=Path("tone.toml"))
    case = EvalCase(trace_id="t", span_id="s", question="Why?", answer="Because.")
    judge = JudgeClient(base_url=JUDGE_URL, model="gpt-4o-mini", max_retries=0)
    reply = chat_completion(json.dumps({"reasoning": "Fine.", "score": 4}))
    route = respx_mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=reply))
    try:
        online = await score_llm_rubric(case, rubric, judge)
        assert json.loads(route.calls[0].request.content) == llm_rubric.batch_request(
            case, rubric, judge
        )
    finally:
        await judge.aclose()

    def price(_model: str, tokens_in: int, tokens_out: int) -> float:
        return tokens_in * 1e-6 + tokens_out * 2e-6

    schema = llm_rubric.verdict_schema(rubric.scale)
    lines = [
        {"custom_id": "ok", "response": {"status_code": 200, "body": reply}, "error": None},
        {
            "custom_id": "bad",
            "response": {"status_code": 200, "body": chat_completion("Sure! {")},
            "error": None,
        },
    ]
    good, bad = read_results(jsonl(lines))
    batched = llm_rubric.score_from_reply(
        rubric, reply_of(good, schema, model="gpt-4o-mini", price=price)
    )
    assert (batched.value, batched.label, batched.explanation) == (
        online.value,
        online.label,
        online.explanation,
    )
    assert batched.usage.cost_usd == pytest.approx((120 * 1e-6 + 30 * 2e-6) / 2)
    with pytest.raises(JudgeOutputError, match="not valid JSON") as caught:
        reply_of(bad, schema, model="gpt-4o-mini", price=price)
    assert caught.value.raw_output == "Sure! {"
