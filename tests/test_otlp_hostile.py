"""POST /v1/traces through the running server: a hostile span beside valid ones is refused
alone (partial_success naming span, field and reason), the valid ones are stored, the
refusal is counted with its cause, on SQLite and PostgreSQL; the real SDK exporter too."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from evaluator.intake.drain import stats_key
from evaluator.outputs.metrics import render_metrics
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.store.store import Store
from evaluator.web.server import BoundedServer, start_in_thread

LATER = 10_000.0
DEEP = json.dumps([{"role": "user", "content": json.loads("[" * 600 + "]" * 600)}])

# (name, attribute value in OTLP/JSON, cause); the other spans of the request are valid.
HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("nan", {"key": "score", "value": {"doubleValue": "NaN"}}, "nan_inf"),
    ("inf", {"key": "score", "value": {"doubleValue": "Infinity"}}, "nan_inf"),
    ("-inf", {"key": "score", "value": {"doubleValue": "-Infinity"}}, "nan_inf"),
    ("nul", {"key": "note", "value": {"stringValue": "a\u0000b"}}, "nul"),
    ("surrogate", {"key": "note", "value": {"stringValue": "a\ud800b"}}, "surrogate"),
    ("deep", {"key": "gen_ai.input.messages", "value": {"stringValue": DEEP}}, "depth"),
    ("label", {"key": "prompt.version", "value": {"stringValue": "v" * 300}}, "oversize"),
    ("model", {"key": "gen_ai.request.model", "value": {"stringValue": "m" * 300}}, "oversize"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path / 'otlp.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    s = Store(url)
    yield s
    s.close()


@pytest.fixture
def served(store: Store, redis_url: str) -> Iterator[tuple[SpanAssembler, str]]:
    client = redis.Redis.from_url(redis_url)
    assembler = SpanAssembler(store, client, key_prefix=f"h{uuid.uuid4().hex[:8]}", grace_s=0.0)
    server: BoundedServer = start_in_thread(
        store,
        assembler=assembler,
        metrics=lambda: render_metrics(
            client, store, key_prefix=assembler.key_prefix, queue_name="q"
        ),
    )
    yield assembler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    client.close()


def span(i: int, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.input.messages", "value": {"stringValue": '[{"role":"user","content":"Q?"}]'}},
        {"key": "gen_ai.output.messages", "value": {"stringValue": '[{"role":"assistant","content":"A."}]'}},
    ]  # fmt: skip
    attrs = [a for a in attrs if a["key"] not in {e["key"] for e in extra or []}]
    return {
        "traceId": f"{i + 1:032x}",
        "spanId": f"{i + 1:016x}",
        "name": "chat",
        "startTimeUnixNano": str(1_700_000_000_000_000_000 + i),
        "endTimeUnixNano": str(1_700_000_001_000_000_000 + i),
        "attributes": attrs + (extra or []),
    }


def body(spans: list[dict[str, Any]]) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()


@pytest.mark.parametrize(("name", "attr", "cause"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_span_is_refused_alone(
    served: tuple[SpanAssembler, str], name: str, attr: dict[str, Any], cause: str
) -> None:
    assembler, base = served
    spans = [span(i) for i in range(50)]
    spans[25] = span(25, [attr])
    reply = httpx.post(f"{base}/v1/traces", content=body(spans),
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    partial = reply.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert f"span {25 + 1:032x}/{25 + 1:016x}" in partial["errorMessage"]
    assert set(assembler.complete(now=time.time() + LATER)) == {
        f"{i + 1:032x}" for i in range(50) if i != 25
    }
    assert assembler.store.count_traces() == 49
    assert assembler.complete(now=time.time() + 2 * LATER) == []  # nothing left to retry
    assert assembler.redis is not None
    stats = assembler.redis.hgetall(stats_key(assembler.key_prefix))
    assert stats[f"quarantined:otlp:{cause}".encode()] == b"1"
    metrics = httpx.get(f"{base}/metrics").text
    assert f'evaluator_quarantined_total{{cause="{cause}",source="otlp"}} 1.0' in metrics


def test_impossible_times_are_refused(served: tuple[SpanAssembler, str]) -> None:
    _assembler, base = served
    late = span(0) | {"startTimeUnixNano": "5000", "endTimeUnixNano": "4000"}
    negative = span(1) | {"startTimeUnixNano": "-5"}
    huge = span(2) | {"endTimeUnixNano": str(2**64)}
    for bad in (late, negative, huge):
        reply = httpx.post(f"{base}/v1/traces", content=body([bad]),
                           headers={"Content-Type": "application/json"})  # fmt: skip
        assert reply.status_code == 400, reply.text
        assert "time_unix_nano" in reply.json()["message"]
    mixed = httpx.post(f"{base}/v1/traces", content=body([span(5), late]),
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert mixed.status_code == 200 and mixed.json()["partialSuccess"]["rejectedSpans"] == "1"


def test_sdk_exporter_nan_span_beside_valid_ones(served: tuple[SpanAssembler, str]) -> None:
    assembler, base = served
    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    ids = []
    for i in range(4):
        with tracer.start_as_current_span("chat") as s:
            s.set_attribute("gen_ai.operation.name", "chat")
            s.set_attribute("gen_ai.input.messages", '[{"role":"user","content":"Q?"}]')
            s.set_attribute("gen_ai.output.messages", '[{"role":"assistant","content":"A."}]')
            if i == 1:
                s.set_attribute("gen_ai.request.temperature", float("nan"))
            ids.append(format(s.get_span_context().trace_id, "032x"))
    provider.shutdown()
    done = assembler.complete(now=time.time() + LATER)
    assert sorted(done) == sorted(ids[:1] + ids[2:])
    assert assembler.store.get_trace(ids[1]) is None


def test_partial_success_in_protobuf(served: tuple[SpanAssembler, str]) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    for i in range(3):
        with tracer.start_as_current_span("chat") as s:
            s.set_attribute("gen_ai.operation.name", "chat")
            s.set_attribute("note", "ok" if i != 2 else "bad\x00")
    provider.shutdown()
    data = encode_spans(memory.get_finished_spans()).SerializeToString()
    _assembler, base = served
    reply = httpx.post(f"{base}/v1/traces", content=data,
                       headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
    assert reply.status_code == 200
    parsed = ExportTraceServiceResponse.FromString(reply.content)
    assert parsed.partial_success.rejected_spans == 1
    assert "NUL" in parsed.partial_success.error_message
