"""Langfuse trace source (evaluator.sources) and score sink (evaluator.outputs) against the
documented public API shapes (respx)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import respx

from evaluator.errors import LangfuseError, SettingsError
from evaluator.outputs.langfuse import LangfuseScoreSink, score_id
from evaluator.outputs.metrics import SEP, metrics_key
from evaluator.sources.langfuse import LangfuseTraceSource
from evaluator.store import outbox
from evaluator.store.models import EvalRecord
from evaluator.traces.cases import build_case
from evaluator.worker.pipeline import evaluate_trace
from evaluator.worker.runtime import build_runtime, trace_source
from tests.conftest import JUDGE_URL, TONE_RUBRIC, chat_completion, make_settings, write_rubric

BASE = "https://langfuse.test"
AUTH = "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-1").decode()


def langfuse_trace(trace_id: str = "tr-1") -> dict[str, Any]:
    """A TraceWithFullDetails body as GET /api/public/traces/{traceId} returns it."""
    return {
        "id": trace_id,
        "timestamp": "2026-11-22T10:00:00.000Z",
        "name": "support-answer",
        "input": {"question": "What does the enterprise plan cost?"},
        "output": "It costs $5,000 per year.",
        "sessionId": "s-1",
        "userId": "u-9",
        "release": "2026.11.2",
        "version": "app-7",
        "metadata": {"feature": "support-rag", "tenant": "acme"},
        "tags": ["prod"],
        "public": False,
        "environment": "production",
        "htmlPath": f"/project/p1/traces/{trace_id}",
        "latency": 1.3,
        "totalCost": 0.0042,
        "scores": [],
        "observations": [
            {
                "id": "obs-retrieve",
                "traceId": trace_id,
                "type": "SPAN",
                "name": "vector-search",
                "startTime": "2026-11-22T10:00:00.000Z",
                "endTime": "2026-11-22T10:00:00.120Z",
                "input": {"query": "enterprise plan price"},
                "output": [
                    {"page_content": "Enterprise: $50,000 per year.", "metadata": {"id": "doc-7"}},
                    {"page_content": "Team: $5,000 per year.", "metadata": {"id": "doc-8"}},
                ],
                "level": "DEFAULT",
                "statusMessage": None,
                "parentObservationId": None,
                "metadata": {},
            },
            {
                "id": "obs-gen",
                "traceId": trace_id,
                "type": "GENERATION",
                "name": "chat",
                "startTime": "2026-11-22T10:00:00.130Z",
                "endTime": "2026-11-22T10:00:01.300Z",
                "completionStartTime": "2026-11-22T10:00:00.400Z",
                "model": "gpt-4o-2024-08-06",
                "modelParameters": {"temperature": 0.2, "max_tokens": 256},
                "input": [
                    {"role": "system", "content": "Answer from the documents."},
                    {"role": "user", "content": "What does the enterprise plan cost?"},
                ],
                "output": {"role": "assistant", "content": "It costs $5,000 per year."},
                "usage": {"input": 812, "output": 41, "total": 853, "unit": "TOKENS"},
                "usageDetails": {"input": 812, "output": 41, "total": 853},
                "level": "WARNING",
                "parentObservationId": None,
                "promptName": "support-answer",
                "promptVersion": 18,
            },
            {
                "id": "obs-tool",
                "traceId": trace_id,
                "type": "TOOL",
                "name": "lookup_price",
                "startTime": "2026-11-22T10:00:00.050Z",
                "endTime": "2026-11-22T10:00:00.060Z",
                "input": {"plan": "enterprise"},
                "output": {"error": "timeout"},
                "level": "ERROR",
                "statusMessage": "price service timed out",
                "parentObservationId": "obs-gen",
            },
        ],
    }


@respx.mock
def test_trace_source_maps_observations_to_spans() -> None:
    route = respx.get(f"{BASE}/api/public/traces/tr-1").respond(200, json=langfuse_trace())
    source = LangfuseTraceSource(BASE, "pk-lf-1", "sk-lf-1")
    trace = source.get_trace("tr-1")
    source.close()

    assert route.call_count == 1
    assert route.calls[0].request.headers["authorization"] == AUTH
    assert trace is not None
    assert trace.prompt_version == "support-answer@18"
    assert (trace.feature, trace.tenant) == ("support-rag", "acme")
    assert trace.attributes["session.id"] == "s-1" and trace.cost_usd == 0.0042
    assert trace.is_error  # the tool observation failed
    by_id = {s.span_id: s for s in trace.spans}
    assert by_id["obs-retrieve"].operation == "retrieval"
    assert by_id["obs-tool"].operation == "execute_tool"
    assert by_id["obs-tool"].parent_span_id == "obs-gen"
    assert by_id["obs-tool"].attributes["error.message"] == "price service timed out"
    gen = by_id["obs-gen"].attributes
    assert gen["gen_ai.usage.input_tokens"] == 812 and gen["gen_ai.request.temperature"] == 0.2
    assert trace.model == "gpt-4o-2024-08-06"

    case = build_case(trace)
    assert case.span_id == "obs-gen"
    assert case.question == "What does the enterprise plan cost?"
    assert case.answer == "It costs $5,000 per year."
    assert [(c.id, c.text) for c in case.contexts] == [
        ("doc-7", "Enterprise: $50,000 per year."),
        ("doc-8", "Team: $5,000 per year."),
    ]


@respx.mock
def test_trace_without_generation_uses_trace_input_and_output() -> None:
    body = langfuse_trace("tr-2") | {"observations": [], "metadata": {"prompt.version": "v3"}}
    respx.get(f"{BASE}/api/public/traces/tr-2").respond(200, json=body)
    trace = LangfuseTraceSource(BASE, "pk-lf-1", "sk-lf-1").get_trace("tr-2")
    assert trace is not None and trace.prompt_version == "v3"
    assert build_case(trace).answer == "It costs $5,000 per year."


@respx.mock
def test_unknown_trace_is_none_and_bad_keys_say_so() -> None:
    respx.get(f"{BASE}/api/public/traces/missing").respond(404, json={"message": "not found"})
    respx.get(f"{BASE}/api/public/traces/tr-1").respond(401, json={"message": "Invalid creds"})
    source = LangfuseTraceSource(BASE, "pk-lf-1", "wrong")
    assert source.get_trace("missing") is None
    with pytest.raises(LangfuseError, match=r"HTTP 401 \(check the public/secret key pair\)"):
        source.get_trace("tr-1")


def record(**kw: Any) -> EvalRecord:
    base: dict[str, Any] = {
        "trace_id": "tr-1",
        "span_id": "obs-gen",
        "rubric": "faithfulness",
        "rubric_version": "2",
        "scorer": "faithfulness",
        "method": "judge",
        "status": "ok",
        "score": 0.5,
        "passed": False,
        "explanation": "1 of 2 claims supported.",
        "judge_model": "gpt-4o-mini",
    }
    return EvalRecord(**(base | kw))


@respx.mock
async def test_score_sink_posts_linked_idempotent_scores() -> None:
    route = respx.post(f"{BASE}/api/public/scores").respond(200, json={"id": "x"})
    sink = LangfuseScoreSink(BASE, "pk-lf-1", "sk-lf-1")
    ok = record()
    trace_level = record(span_id="", rubric="helpfulness", score=0.75, passed=True, label="4")
    failed = record(rubric="relevance", status="error", score=None, explanation="judge down")
    assert await sink.send([ok, trace_level, failed]) == 2
    assert await sink.send([ok]) == 1  # a re-send carries the same id: Langfuse upserts
    await sink.aclose()

    bodies = [json.loads(c.request.content) for c in route.calls]
    assert all(c.request.headers["authorization"] == AUTH for c in route.calls)
    first = bodies[0]
    assert first == {
        "id": score_id(ok),
        "traceId": "tr-1",
        "observationId": "obs-gen",
        "name": "faithfulness",
        "value": 0.5,
        "dataType": "NUMERIC",
        "comment": "1 of 2 claims supported.",
        "metadata": {
            "rubric_version": "2",
            "scorer": "faithfulness",
            "method": "judge",
            "label": None,
            "passed": False,
            "judge_model": "gpt-4o-mini",
            "evaluator_record_id": str(ok.id),
        },
    }
    assert "observationId" not in bodies[1] and bodies[1]["value"] == 0.75
    assert len(bodies) == 3 and bodies[2]["id"] == first["id"]


@respx.mock
async def test_score_sink_raises_with_the_api_reason() -> None:
    respx.post(f"{BASE}/api/public/scores").mock(
        side_effect=[httpx.Response(400, json={"message": "value must be a number"})]
    )
    sink = LangfuseScoreSink(BASE, "pk-lf-1", "sk-lf-1")
    with pytest.raises(LangfuseError, match=r"HTTP 400.*value must be a number"):
        await sink.send([record()])
    await sink.aclose()


@respx.mock
async def test_worker_reads_from_langfuse_and_hands_new_records_to_every_sink(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline end to end with Langfuse as source and sink and an OTLP export: a re-run
    writes nothing new, so nothing is sent twice, while metrics count both runs; a sink that
    fails (Langfuse answers 500) costs its copy, never the job."""
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-1")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-1")
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(
        tmp_path,
        redis_url,
        judge={"base_url": JUDGE_URL, "model": "gpt-4o-mini", "max_retries": 0},
        langfuse={"base_url": BASE, "trace_source": True, "write_scores": True},
        otel_export={"endpoint": "http://otel.test:4318"},
    )
    source = respx.get(f"{BASE}/api/public/traces/tr-1").respond(200, json=langfuse_trace())
    judge = respx.post(f"{JUDGE_URL}/chat/completions").respond(
        200, json=chat_completion(json.dumps({"reasoning": "Polite.", "score": 4}))
    )
    scores = respx.post(f"{BASE}/api/public/scores").mock(
        side_effect=[httpx.Response(500, text="down"), httpx.Response(200, json={"id": "x"})]
    )
    otlp = respx.post("http://otel.test:4318/v1/logs").respond(200)
    runtime = build_runtime(settings)
    outbox.record_intents(runtime.store.engine, [outbox.Intent("tr-1", "rate", {})])

    first = await evaluate_trace(runtime, "tr-1", {}, job_try=1, intent_id="rate:tr-1")
    again = await evaluate_trace(runtime, "tr-1", {}, job_try=1)
    [record] = runtime.store.records(trace_id="tr-1")
    [intent] = outbox.list_intents(runtime.store.engine)
    await runtime.aclose()

    assert first == {"trace_id": "tr-1", "written": 1, "statuses": {"ok": 1}}
    assert again == {"trace_id": "tr-1", "written": 0, "statuses": {"ok": 1}}
    assert (record.span_id, record.prompt_version) == ("obs-gen", "support-answer@18")
    assert source.call_count == 2 and judge.call_count >= 1
    assert scores.call_count == 1  # the new record's score (refused); the re-run sent none
    assert json.loads(scores.calls[0].request.content)["id"] == score_id(record)
    assert otlp.call_count == 1
    counts = redis.Redis.from_url(redis_url).hgetall(metrics_key(settings.redis.key_prefix))
    assert counts[f"evals{SEP}tone{SEP}ok".encode()] == b"2"  # work done: both runs
    assert intent.status == outbox.DONE


def test_langfuse_without_both_keys_is_refused_at_start(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY", raising=False)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-1")
    settings = make_settings(tmp_path, redis_url, langfuse={"base_url": BASE, "trace_source": True})
    with pytest.raises(SettingsError, match="LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY"):
        trace_source(settings)
