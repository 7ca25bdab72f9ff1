"""`evaluator serve` end to end: the real OpenTelemetry SDK exporter posts GenAI spans to
POST /v1/traces, the completed trace is ingested and enqueued, /metrics reports it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import redis
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import decode
from evaluator.outputs.metrics import render_metrics
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.store.store import Store
from evaluator.web.server import start_in_thread


def test_sdk_spans_through_the_server_are_ingested_and_counted(
    tmp_path: Path, redis_url: str
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    rsync = redis.Redis.from_url(redis_url)
    assembler = SpanAssembler(store, rsync, key_prefix="srv", grace_s=0.0)
    server = start_in_thread(
        store,
        assembler=assembler,
        metrics=lambda: render_metrics(rsync, store, key_prefix="srv", queue_name="srv:queue"),
    )
    base = f"http://127.0.0.1:{server.server_address[1]}"
    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("POST /ask") as root:
        root.set_attribute("prompt.version", "v7")
        with tracer.start_as_current_span("chat") as chat:
            chat.set_attribute("gen_ai.operation.name", "chat")
            chat.set_attribute("gen_ai.request.model", "gpt-4o")
            chat.set_attribute(
                "gen_ai.input.messages",
                json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Q?"}]}]),
            )
            chat.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "A."}]}]),
            )
    trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()

    assert assembler.complete(now=time.time() + 1) == [trace_id]
    trace = store.get_trace(trace_id)
    assert trace is not None and trace.prompt_version == "v7"
    [entry] = rsync.lrange(intake_key("srv"), 0, -1)
    queued_id, signals = decode(entry)
    assert queued_id == trace_id and signals is not None and signals.latency_ms is not None

    metrics = httpx.get(f"{base}/metrics").text
    assert "evaluator_intake_pending 1.0" in metrics
    bad = httpx.post(f"{base}/v1/traces", content=b"not protobuf",
                     headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
    assert bad.status_code == 400
    server.shutdown()
    server.server_close()
    rsync.close()
    store.close()
