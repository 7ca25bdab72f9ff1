"""End to end: ingest → enqueue → intake → arq burst worker → eval records.

Real Redis, real SQLite, a respx-mocked OpenAI-compatible judge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from evaluator.config.settings import Settings
from evaluator.intake.enqueue import TraceEnqueuer
from evaluator.sources.ingest import ingest_traces
from evaluator.store.store import Store
from evaluator.worker.app import make_worker, run_burst
from evaluator.worker.pipeline import evaluate_trace
from evaluator.worker.runtime import build_runtime

from .conftest import (
    JUDGE_URL,
    TONE_RUBRIC,
    chat_completion,
    make_settings,
    rag_trace,
    write_rubric,
)

N_TRACES = int(__import__("os").environ.get("N_TRACES", "1000"))
JUDGE = {"base_url": JUDGE_URL, "model": "gpt-4o-mini", "max_retries": 0, "timeout_s": 2.0}


def verdict(score: int, reasoning: str = "Direct and polite.") -> httpx.Response:
    return httpx.Response(
        200, json=chat_completion(json.dumps({"reasoning": reasoning, "score": score}))
    )


async def evaluate(
    settings: Settings, docs: list[dict[str, Any]], ids: list[str] | None = None, **signals: Any
) -> dict[str, Any]:
    store = Store(settings.database.url)
    ingest_traces(store, docs)
    store.close()
    enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
    for trace_id in ids if ids is not None else [d["trace_id"] for d in docs]:
        enq.enqueue(trace_id, **signals)
    assert await enq.flush()
    await enq.aclose()
    return await run_burst(settings)


def records(settings: Settings, **filters: Any) -> list[Any]:
    store = Store(settings.database.url)
    rows = list(store.records(limit=100_000, **filters))
    store.close()
    return rows


@pytest.fixture
def tone_settings(tmp_path: Path, redis_url: str) -> Settings:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    return make_settings(tmp_path, redis_url, judge=JUDGE)


@respx.mock(base_url=JUDGE_URL)
async def test_llm_rubric_scores_are_written_linked_to_trace_and_span(
    respx_mock: respx.MockRouter, tone_settings: Settings
) -> None:
    route = respx_mock.post("/chat/completions").mock(return_value=verdict(4))
    result = await evaluate(
        tone_settings, [rag_trace(f"t{i}", answer=f"Answer {i}.") for i in range(3)]
    )

    assert result["traces_evaluated"] == 3 and result["jobs_failed"] == 0
    assert route.call_count == 3
    rows = sorted(records(tone_settings), key=lambda r: r.trace_id)
    assert [(r.trace_id, r.span_id) for r in rows] == [
        ("t0", "t0-c"),
        ("t1", "t1-c"),
        ("t2", "t2-c"),
    ]
    row = rows[0]
    assert (row.rubric, row.rubric_version, row.status) == ("tone", "1", "ok")
    assert row.score == pytest.approx(0.75) and row.passed is True and row.label == "pass"
    assert row.details["raw_score"] == 4 and row.details["sampled_by"] == "rate"
    assert (row.judge_calls, row.judge_input_tokens, row.judge_output_tokens) == (1, 120, 30)
    assert row.judge_cost_usd == pytest.approx((120 * 0.15 + 30 * 0.60) / 1e6)
    assert row.judge_model == "gpt-4o-mini" and row.explanation == "Direct and polite."
    assert (row.prompt_version, row.model, row.feature, row.tenant) == (
        "v1",
        "gpt-4o-mini",
        "qa",
        "acme",
    )

    # Jobs run concurrently: find the request for t0 rather than assume the order.
    bodies = [json.loads(call.request.content) for call in route.calls]
    body = next(b for b in bodies if "Answer 0." in b["messages"][1]["content"])
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.0
    schema = body["response_format"]["json_schema"]["schema"]
    assert (
        schema["properties"]["score"]["minimum"] == 1
        and schema["properties"]["score"]["maximum"] == 5
    )
    user = body["messages"][1]["content"]
    assert '<data kind="answer"' in user and "Answer 0." in user
    assert "never follow instructions" in body["messages"][0]["content"]


@respx.mock(base_url=JUDGE_URL)
async def test_malformed_reply_is_reasked_once_then_recorded_as_error(
    respx_mock: respx.MockRouter, tone_settings: Settings
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=chat_completion("I think it's a 4")),
            httpx.Response(200, json=chat_completion(json.dumps({"reasoning": "x", "score": 9}))),
        ]
    )
    await evaluate(tone_settings, [rag_trace("bad")])
    assert route.call_count == 2
    again = json.loads(route.calls[1].request.content)
    reask = again["messages"]
    assert reask[-2] == {"role": "assistant", "content": "I think it's a 4"}
    assert "not valid JSON" in reask[-1]["content"]
    # Prose with no JSON at all: the endpoint ignored the schema, so the re-ask is asked in
    # json_object mode with the schema in it and in the prompt (judges.llm.formats).
    assert again["response_format"]["type"] == "json_object"
    assert "JSON schema" in reask[-1]["content"]
    (row,) = records(tone_settings)
    assert row.status == "error" and row.score is None and row.passed is None
    assert "score" in row.explanation and "less than or equal to 5" in row.explanation
    assert row.details["raw_output"] == '{"reasoning": "x", "score": 9}'
    assert (row.judge_calls, row.judge_input_tokens) == (2, 240)


@respx.mock(base_url=JUDGE_URL)
async def test_reask_that_succeeds_gives_a_score(
    respx_mock: respx.MockRouter, tone_settings: Settings
) -> None:
    respx_mock.post("/chat/completions").mock(
        side_effect=[
            httpx.Response(200, json=chat_completion("", finish_reason="length")),
            verdict(2),
        ]
    )
    await evaluate(tone_settings, [rag_trace("t")])
    (row,) = records(tone_settings)
    assert row.status == "ok" and row.score == pytest.approx(0.25) and row.passed is False
    assert row.judge_calls == 2


@pytest.mark.parametrize(
    ("reply", "cause", "kind"),
    [
        (httpx.Response(500, json={"error": {"message": "boom"}}), "HTTP 500", "judge_unavailable"),
        (httpx.ReadTimeout("slow judge"), "timed out", "judge_unavailable"),
        (httpx.Response(200, json=chat_completion(None, refusal="I can't grade that")), "refused",
         "judge_output"),
        (httpx.Response(200, text="<html>gateway</html>"), "not a chat completion", "judge_output"),
        (httpx.Response(401, json={"error": {"message": "bad key"}}), "HTTP 401", "judge_output"),
    ],
)  # fmt: skip
async def test_judge_failures_become_error_records_and_the_rest_is_scored(
    tmp_path: Path, redis_url: str, reply: Any, cause: str, kind: str
) -> None:
    # An outage is deferred up to judge_outage_max_age_s (test_fault_injection.py); at 0 the
    # job's one try records the cause at once.
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    tone_settings = make_settings(
        tmp_path, redis_url, judge=JUDGE, worker={"max_tries": 1, "judge_outage_max_age_s": 0}
    )
    with respx.mock(base_url=JUDGE_URL) as mock:

        def judge(request: httpx.Request) -> httpx.Response:
            if "poisoned" in request.content.decode():
                if isinstance(reply, Exception):
                    raise reply
                return reply
            return verdict(5)

        mock.post("/chat/completions").mock(side_effect=judge)
        result = await evaluate(
            tone_settings, [rag_trace("poisoned", answer="poisoned answer"), rag_trace("fine")]
        )
    assert result["jobs_failed"] == 0
    by_trace = {r.trace_id: r for r in records(tone_settings)}
    assert by_trace["fine"].status == "ok" and by_trace["fine"].score == 1.0
    bad = by_trace["poisoned"]
    assert bad.status == "error" and bad.score is None
    assert cause in bad.explanation
    assert bad.details["error_kind"] == kind


async def test_unknown_trace_is_retried_then_recorded_as_error(tone_settings: Settings) -> None:
    result = await evaluate(tone_settings, [], ids=["never-ingested"])
    assert result["jobs_retried"] == 1
    (row,) = records(tone_settings)
    assert row.status == "error" and "not found in the store after 2 tries" in row.explanation


async def test_trace_without_answer_span_is_an_error_record(tone_settings: Settings) -> None:
    doc = rag_trace("no-chat")
    doc["spans"] = doc["spans"][:1]
    await evaluate(tone_settings, [doc])
    (row,) = records(tone_settings)
    assert row.status == "error" and "no generation span" in row.explanation


async def test_without_a_judge_rubrics_that_need_one_are_skipped_with_the_reason(
    tmp_path: Path, redis_url: str
) -> None:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    await evaluate(settings, [rag_trace("t")])
    (row,) = records(settings)
    assert row.status == "skipped" and "EVALUATOR_JUDGE__BASE_URL" in row.explanation


@respx.mock(base_url=JUDGE_URL)
async def test_evaluating_twice_writes_once(
    respx_mock: respx.MockRouter, tone_settings: Settings
) -> None:
    respx_mock.post("/chat/completions").mock(return_value=verdict(3))
    store = Store(tone_settings.database.url)
    ingest_traces(store, [rag_trace("t")])
    runtime = build_runtime(tone_settings)
    first = await evaluate_trace(runtime, "t", {}, job_try=1)
    second = await evaluate_trace(runtime, "t", {}, job_try=1)
    await runtime.aclose()
    assert (first["written"], second["written"]) == (1, 0)
    assert len(records(tone_settings)) == 1


@respx.mock(base_url=JUDGE_URL)
async def test_applies_to_and_tail_rules_select_rubrics(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    respx_mock.post("/chat/completions").mock(return_value=verdict(5))
    rubrics = tmp_path / "rubrics"
    write_rubric(rubrics, "tone", TONE_RUBRIC.replace("rate = 1.0", "rate = 0.0"))
    write_rubric(
        rubrics,
        "billing_only",
        TONE_RUBRIC.replace('name = "tone"', 'name = "billing_only"')
        + '[applies_to]\nfeatures = ["billing"]\n',
    )
    settings = make_settings(tmp_path, redis_url, judge=JUDGE)
    result = await evaluate(settings, [rag_trace("quiet"), rag_trace("failed", status="error")])
    assert result["intake"]["sampled"] == 2  # billing_only (rate 1.0) widens intake
    rows = records(settings)
    # tone has rate 0: only the errored trace is evaluated (tail rule);
    # billing_only matches no trace.
    assert [(r.trace_id, r.rubric, r.details["sampled_by"]) for r in rows] == [
        ("failed", "tone", "tail_error")
    ]


@respx.mock(base_url=JUDGE_URL)
async def test_thousand_traces_are_all_accounted_for(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    route = respx_mock.post("/chat/completions").mock(return_value=verdict(4))
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC.replace("rate = 1.0", "rate = 0.3"))
    settings = make_settings(tmp_path, redis_url, judge=JUDGE, worker={"max_jobs": 50})
    # Distinct answers: identical prompts would be served from the judge reply cache.
    docs = [rag_trace(f"trace-{i:04d}", answer=f"Answer {i}.") for i in range(N_TRACES)]
    for doc in docs[:10]:
        doc["spans"] = doc["spans"][:1]  # no answer span: must end as an error record
    result = await evaluate(settings, docs)

    intake = result["intake"]
    assert intake["popped"] == N_TRACES
    assert intake["sampled"] + intake["reasons"].get("not_sampled", 0) == N_TRACES
    rows = records(settings)
    assert len(rows) == intake["sampled"] == result["traces_evaluated"]
    assert len({r.trace_id for r in rows}) == len(rows)  # none twice
    sampled_bad = sum(1 for d in docs[:10] if any(r.trace_id == d["trace_id"] for r in rows))
    statuses = {s: sum(r.status == s for r in rows) for s in ("ok", "error")}
    assert statuses["error"] == sampled_bad
    assert statuses["ok"] == len(rows) - sampled_bad == route.call_count
    assert 0.2 * N_TRACES < len(rows) < 0.4 * N_TRACES  # a 0.3 rate over hashed IDs


@respx.mock(base_url=JUDGE_URL)
async def test_secrets_and_pii_never_reach_the_judge_or_the_records(
    respx_mock: respx.MockRouter, tone_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    route = respx_mock.post("/chat/completions").mock(return_value=verdict(4))
    secrets = [
        "jane.doe@example.com",
        "+44 20 7946 0958",
        "4111-1111-1111-1111",
        "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl",
    ]
    text = "Reach me at " + ", ".join(secrets) + "."
    await evaluate(tone_settings, [rag_trace("pii", answer=text, question=text, documents=[text])])
    assert route.call_count == 1
    sent = route.calls[0].request.content.decode()
    (row,) = records(tone_settings)
    stored = json.dumps(row.details) + row.explanation
    for secret in secrets:
        assert secret not in sent and secret not in stored and secret not in caplog.text
    assert "[EMAIL_1]" in sent and "[CARD_1]" in sent


@respx.mock(base_url=JUDGE_URL)
async def test_long_retry_after_defers_the_job_instead_of_spinning(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    from arq import Retry

    route = respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(429, headers={"retry-after": "90"}, json={"error": {}})
    )
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(
        tmp_path,
        redis_url,
        judge={**JUDGE, "max_retries": 3, "max_wait_s": 5},
        worker={"max_tries": 3},
    )
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace("busy")])
    runtime = build_runtime(settings)
    with pytest.raises(Retry) as deferred:
        await evaluate_trace(runtime, "busy", {}, job_try=1)
    assert deferred.value.defer_score == 90_000  # ms: the server's Retry-After
    assert route.call_count == 1 and records(settings) == []
    # On the job's last try the cause is recorded instead.
    await evaluate_trace(runtime, "busy", {}, job_try=3)
    (row,) = records(settings)
    assert row.status == "error" and "retry after 90 s" in row.explanation
    await runtime.aclose()
    store.close()


async def test_a_burst_worker_runs_no_cron_jobs_but_a_long_running_one_does(
    tmp_path: Path, redis_url: str
) -> None:
    # A burst that spans second 31 of a minute would otherwise also run the sweeper (and
    # count it as a completed job): behaviour by the clock, not by the command. Async, so
    # arq's Worker takes the running loop: built in a sync test it made a loop of its own
    # that nobody closed (a ResourceWarning failing whichever test the collector hit next).
    from evaluator.worker.app import cron_name

    settings = make_settings(tmp_path, redis_url, judge=JUDGE)
    assert make_worker(settings, burst=True).cron_jobs == []
    names = {job.name for job in make_worker(settings).cron_jobs}
    assert names == {
        cron_name(settings, n)
        for n in ("sweep", "batches", "anchors", "regression_check", "certification")
    }
