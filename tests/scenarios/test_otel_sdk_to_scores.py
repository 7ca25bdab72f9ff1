"""An app instrumented with the real OpenTelemetry SDK sends GenAI spans to `evaluator
serve` (a real process); the receiver assembles the trace, enqueues it with its signals, and a
burst worker scores it. The user reads the result with `evaluator scores`."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from evaluator.config.settings import SHIPPED_RUBRICS_DIR
from tests.conftest import make_settings
from tests.scenarios.cli import evaluator_command, run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Generous: `evaluator serve` took over 30 s to listen under a CPU hog (4 busy processes, 2 cores).
def _wait_for_port(port: int, proc: subprocess.Popen[str], deadline_s: float = 180) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}: {proc.communicate()[0]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {deadline_s} s")


def _send_rag_trace(endpoint: str) -> str:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("POST /ask") as root:
        root.set_attribute("prompt.version", "v18")
        with tracer.start_as_current_span("retrieve") as retrieve:
            retrieve.set_attribute("gen_ai.operation.name", "retrieval")
            retrieve.set_attribute(
                "gen_ai.retrieval.documents",
                json.dumps([{"id": "doc-7", "content": "Enterprise: $50,000 per year."}]),
            )
        with tracer.start_as_current_span("chat gpt-4o") as chat:
            chat.set_attribute("gen_ai.operation.name", "chat")
            chat.set_attribute("gen_ai.request.model", "gpt-4o")
            chat.set_attribute(
                "gen_ai.input.messages",
                json.dumps([{"role": "user", "parts": [{"type": "text",
                             "content": "What does the enterprise plan cost?"}]}]),
            )  # fmt: skip
            chat.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "parts": [{"type": "text",
                             "content": "It costs $50,000 per year."}]}]),
            )  # fmt: skip
    provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def test_sdk_spans_through_serve_are_scored(tmp_path: Path, redis_url: str) -> None:
    rubrics = tmp_path / "rubrics"
    rubrics.mkdir()
    shutil.copy(SHIPPED_RUBRICS_DIR / "faithfulness.toml", rubrics)
    text = (rubrics / "faithfulness.toml").read_text().replace("rate = 0.5", "rate = 1.0")
    (rubrics / "faithfulness.toml").write_text(text)
    make_settings(tmp_path, redis_url, otlp={"grace_s": 0.2, "sweep_interval_s": 0.1})
    settings = tmp_path / "settings.toml"
    port = _free_port()
    serve = subprocess.Popen(
        [*evaluator_command(), "--settings", str(settings), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for_port(port, serve)
        trace_id = _send_rag_trace(f"http://127.0.0.1:{port}/v1/traces")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the receiver completes the trace after grace_s
            run("worker", "--burst", settings=settings)
            out = run("scores", "--trace", trace_id, "--json", settings=settings).stdout
            records = json.loads(out)
            records = records["records"] if isinstance(records, dict) else records
            if records:
                break
            time.sleep(0.3)
    finally:
        serve.terminate()
        serve.communicate(timeout=30)
    [record] = [r for r in records if r["rubric"] == "faithfulness"]
    assert record["status"] == "ok" and record["passed"] is True, record
    assert record["prompt_version"] == "v18"
