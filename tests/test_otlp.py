"""OTLP/HTTP receiver: spans from the real opentelemetry-sdk exporter, sent to a running
receiver, become stored traces that sampling picks up; bad bodies get a clear 400."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from evaluator.intake.wire import decode
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.sources.otlp.decode import OtlpConfig
from evaluator.sources.otlp.receive import handle_otlp_traces
from evaluator.store.store import Store
from evaluator.traces.cases import build_case

LATER = 10_000.0  # seconds: a `now` past every grace period


class Receiver:
    """A real HTTP server on 127.0.0.1 that mounts the handler at POST /v1/traces."""

    def __init__(self, assembler: SpanAssembler) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, data, ctype = handle_otlp_traces(
                    body,
                    self.headers.get("Content-Type", ""),
                    self.headers.get("Content-Encoding"),
                    assembler=outer.assembler,
                )
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.assembler = assembler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
def assembler(store: Store, redis_url: str) -> Iterator[SpanAssembler]:
    client = redis.Redis.from_url(redis_url)
    yield SpanAssembler(
        store,
        client,
        key_prefix=f"t{uuid.uuid4().hex[:8]}",
        config=OtlpConfig(prompt_version_attribute="app.prompt_version"),
        grace_s=2.0,
        orphan_s=60.0,
    )
    client.close()


@pytest.fixture
def receiver(assembler: SpanAssembler) -> Iterator[Receiver]:
    r = Receiver(assembler)
    yield r
    r.close()


def sdk_provider(url: str, compression: Compression) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot", "feature": "support-rag"})
    )
    exporter = OTLPSpanExporter(endpoint=url, compression=compression, timeout=5)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def intake_entries(assembler: SpanAssembler) -> list[tuple[str, Any]]:
    assert assembler.redis is not None
    return [decode(e) for e in assembler.redis.lrange(assembler._intake_key, 0, -1)]


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.NoCompression])
def test_sdk_spans_become_a_trace_that_sampling_sees(
    receiver: Receiver, assembler: SpanAssembler, compression: Compression
) -> None:
    provider = sdk_provider(receiver.url, compression)
    tracer = provider.get_tracer("app")
    docs = [{"id": "doc-7", "content": "Enterprise: $50,000 per year."}]
    with tracer.start_as_current_span("POST /ask") as root:
        root.set_attribute("app.prompt_version", "v18")
        root.set_attribute("session.id", "s-1")
        with tracer.start_as_current_span("retrieve") as r:
            r.set_attribute("gen_ai.operation.name", "retrieval")
            r.set_attribute("gen_ai.retrieval.query.text", "What does enterprise cost?")
            r.set_attribute("gen_ai.retrieval.documents", json.dumps(docs))
        with tracer.start_as_current_span("chat gpt-4o") as c:
            c.set_attribute("gen_ai.operation.name", "chat")
            c.set_attribute("gen_ai.request.model", "gpt-4o")
            c.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            c.set_attribute("gen_ai.usage.input_tokens", 812)
            c.set_attribute("gen_ai.usage.output_tokens", 41)
            question = {"type": "text", "content": "What does the enterprise plan cost?"}
            answer = {"type": "text", "content": "It costs $5,000 per year."}
            c.set_attribute(
                "gen_ai.input.messages", json.dumps([{"role": "user", "parts": [question]}])
            )
            c.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "parts": [answer], "finish_reason": "stop"}]),
            )
            c.set_status(Status(StatusCode.ERROR, "upstream 502"))
    trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()

    assert assembler.pending_traces() == 1
    assert assembler.complete() == []  # root just arrived: the grace for late children runs
    assert assembler.complete(now=time.time() + LATER) == [trace_id]

    trace = assembler.store.get_trace(trace_id)
    assert trace is not None
    assert trace.prompt_version == "v18"
    assert trace.feature == "support-rag"
    assert trace.attributes["session.id"] == "s-1"
    assert trace.model == "gpt-4o-2024-08-06"
    assert trace.is_error
    chat = trace.generation_span()
    assert chat is not None and chat.attributes["gen_ai.usage.input_tokens"] == 812
    assert chat.attributes["error.message"] == "upstream 502"
    case = build_case(trace)
    assert case.question == "What does the enterprise plan cost?"
    assert case.answer == "It costs $5,000 per year."
    assert [c.text for c in case.contexts] == ["Enterprise: $50,000 per year."]

    # Handed to sampling through the intake list, with the error as a tail signal.
    [(queued_id, signals)] = intake_entries(assembler)
    assert queued_id == trace_id
    assert signals is not None and signals.error is True
    assert assembler.pending_traces() == 0


def test_late_child_merges_without_a_second_enqueue(
    receiver: Receiver, assembler: SpanAssembler
) -> None:
    provider = sdk_provider(receiver.url, Compression.Gzip)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("root") as root:
        late = tracer.start_span("tool call")
        late.set_attribute("gen_ai.operation.name", "execute_tool")
        late.set_attribute("gen_ai.tool.name", "lookup_price")
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert assembler.complete(now=time.time() + LATER) == [trace_id]
    late.end()  # the child ends after the trace was flushed
    provider.shutdown()

    # No root in this batch: it waits for the orphan timeout, then merges.
    assert assembler.complete(now=time.time() + 30) == []
    assert assembler.complete(now=time.time() + LATER) == [trace_id]
    trace = assembler.store.get_trace(trace_id)
    assert trace is not None
    assert {s.name for s in trace.spans} == {"root", "tool call"}
    assert len(intake_entries(assembler)) == 1


def otlp_json(span_attrs: list[dict[str, Any]], **span: Any) -> dict[str, Any]:
    base = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "openai.chat",
        "startTimeUnixNano": "1764000000000000000",
        "endTimeUnixNano": "1764000001200000000",
        "status": {"code": 1},
        "attributes": span_attrs,
    } | span
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [base]}]}]}


def s(key: str, value: Any) -> dict[str, Any]:
    kind = "intValue" if isinstance(value, int) else "stringValue"
    return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}


def post(receiver: Receiver, body: bytes, ctype: str, encoding: str | None) -> httpx.Response:
    headers = {"Content-Type": ctype} | ({"Content-Encoding": encoding} if encoding else {})
    return httpx.post(receiver.url, content=body, headers=headers)


def test_openllmetry_indexed_prompt_and_tool_calls_over_gzip_json(
    receiver: Receiver, assembler: SpanAssembler
) -> None:
    attrs = [
        s("llm.request.type", "chat"),
        s("gen_ai.request.model", "gpt-4o-mini"),
        s("gen_ai.usage.prompt_tokens", 120),
        s("gen_ai.usage.completion_tokens", 9),
        s("gen_ai.prompt.0.role", "system"),
        s("gen_ai.prompt.0.content", "You are terse."),
        s("gen_ai.prompt.1.role", "user"),
        s("gen_ai.prompt.1.content", "Price of plan B?"),
        s("gen_ai.completion.0.role", "assistant"),
        s("gen_ai.completion.0.content", "Checking."),
        s("gen_ai.completion.0.finish_reason", "tool_calls"),
        s("gen_ai.completion.0.tool_calls.0.id", "call_1"),
        s("gen_ai.completion.0.tool_calls.0.name", "lookup_price"),
        s("gen_ai.completion.0.tool_calls.0.arguments", '{"plan": "B"}'),
        s("app.prompt_version", "v3"),
    ]
    body = gzip.compress(json.dumps(otlp_json(attrs)).encode())
    reply = post(receiver, body, "application/json", "gzip")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {}

    [trace_id] = assembler.complete(now=time.time() + LATER)
    trace = assembler.store.get_trace(trace_id)
    assert trace is not None and trace.prompt_version == "v3"
    span = trace.spans[0]
    a = span.attributes
    assert span.operation == "chat" and span.status == "ok"
    assert a["gen_ai.usage.input_tokens"] == 120 and a["gen_ai.usage.output_tokens"] == 9
    assert a["gen_ai.input.messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Price of plan B?"},
    ]
    [out] = a["gen_ai.output.messages"]
    assert out["finish_reason"] == "tool_calls"
    assert out["parts"] == [
        {"type": "text", "content": "Checking."},
        {"type": "tool_call", "id": "call_1", "name": "lookup_price", "arguments": {"plan": "B"}},
    ]
    assert not any(k.startswith("gen_ai.prompt.") for k in a)
    assert build_case(trace).question == "Price of plan B?"


def test_json_string_prompt_completion_and_openinference_documents(
    receiver: Receiver, assembler: SpanAssembler
) -> None:
    chat = otlp_json(
        [
            s("gen_ai.system", "openai"),
            s("gen_ai.prompt", json.dumps([{"role": "user", "content": "Who wrote Emma?"}])),
            s("gen_ai.completion", "Jane Austen wrote Emma."),
        ],
        parentSpanId="aaaaaaaaaaaaaaaa",
        startTimeUnixNano="1764000000500000000",
    )
    retriever = otlp_json(
        [
            s("openinference.span.kind", "RETRIEVER"),
            s("retrieval.documents.0.document.id", "wiki-1"),
            s("retrieval.documents.0.document.content", "Emma is a novel by Jane Austen."),
        ],
        spanId="aaaaaaaaaaaaaaaa",
    )
    for doc in (chat, retriever):
        assert post(receiver, json.dumps(doc).encode(), "application/json", None).status_code == 200
    [trace_id] = assembler.complete(now=time.time() + LATER)
    trace = assembler.store.get_trace(trace_id)
    assert trace is not None
    case = build_case(trace)
    assert (case.question, case.answer) == ("Who wrote Emma?", "Jane Austen wrote Emma.")
    assert [c.text for c in case.contexts] == ["Emma is a novel by Jane Austen."]


@pytest.mark.parametrize(
    ("body", "ctype", "encoding", "status", "needle"),
    [
        (b"{", "application/json", None, 400, "not valid JSON"),
        (b"\x0a\x05junk!", "application/x-protobuf", None, 400, "ExportTraceServiceRequest"),
        (b"not gzip", "application/json", "gzip", 400, "not valid gzip"),
        (b"{}", "text/plain", None, 415, "Content-Type"),
        (b"{}", "application/json", "br", 415, "Content-Encoding"),
        (
            json.dumps(otlp_json([], traceId="xyz")).encode(),
            "application/json",
            None,
            400,
            "resourceSpans.0.scopeSpans.0.spans.0.traceId: must be 32 hex",
        ),
        (
            json.dumps({"resourceSpans": {"a": 1}}).encode(),
            "application/json",
            None,
            400,
            "resourceSpans: must be a JSON array",
        ),
    ],
)
def test_bad_bodies_are_refused_with_the_reason(
    receiver: Receiver,
    assembler: SpanAssembler,
    body: bytes,
    ctype: str,
    encoding: str | None,
    status: int,
    needle: str,
) -> None:
    reply = post(receiver, body, ctype, encoding)
    assert reply.status_code == status
    if reply.headers["content-type"] == "application/json":
        message = reply.json()["message"]
    else:  # protobuf clients get a google.rpc.Status, as the OTLP spec asks
        rpc = status_pb2.Status()
        rpc.ParseFromString(reply.content)
        message = rpc.message
    assert needle in message
    assert assembler.pending_traces() == 0


def test_gzip_bomb_is_refused(receiver: Receiver, assembler: SpanAssembler) -> None:
    assembler.config = OtlpConfig(max_body_bytes=1024)
    body = gzip.compress(b"[" + b" " * 1_000_000 + b"]")
    reply = post(receiver, body, "application/json", "gzip")
    assert reply.status_code == 413
    assert "exceeds 1024 bytes" in reply.json()["message"]


def test_resent_span_is_stored_once(receiver: Receiver, assembler: SpanAssembler) -> None:
    body = json.dumps(otlp_json([s("gen_ai.operation.name", "chat")])).encode()
    for _ in range(2):  # exporters retry on timeouts: the same span twice
        assert post(receiver, body, "application/json", None).status_code == 200
    [trace_id] = assembler.complete(now=time.time() + LATER)
    trace = assembler.store.get_trace(trace_id)
    assert trace is not None and len(trace.spans) == 1
