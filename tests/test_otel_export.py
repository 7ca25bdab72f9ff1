"""Eval records exported as `gen_ai.evaluation.result` events to a local OTLP/HTTP receiver
round-trip: same scores, parented to the evaluated span, IDs mapped back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from evaluator.outputs.otel import EVENT_NAME, EvaluationExporter, decode_events, otel_ids
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store


class LogsReceiver:
    """POST /v1/logs on 127.0.0.1; answers the queued statuses first, then 200."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.requests = 0
        self.statuses: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                outer.bodies.append(body)
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    assert self.path == "/v1/logs"
                    assert self.headers["Content-Type"] == "application/x-protobuf"
                    outer.events.extend(decode_events(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[LogsReceiver]:
    r = LogsReceiver()
    yield r
    r.close()


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OTEL_TRACE = "5b8efff798038103d269b633813fc60c"
OTEL_SPAN = "eee19b7ec3c1b174"


def stored_records(tmp_path: Path) -> list[EvalRecord]:
    """Records as the worker writes and reads them (through real SQLite)."""
    common = {"rubric_version": "2", "prompt_version": "v18", "judge_model": "gpt-4o-mini"}
    rows = [
        EvalRecord(
            trace_id=OTEL_TRACE,
            span_id=OTEL_SPAN,
            rubric="faithfulness",
            scorer="faithfulness",
            method="judge",
            status="ok",
            score=0.5,
            passed=False,
            explanation="1 of 2 claims supported.",
            epoch="0123456789abcdef",
            provenance={"implementation": "faithfulness:1", "endpoint": "http://judge/v1"},
            **common,
        ),
        EvalRecord(
            trace_id="4bf92f3577b34da6",
            span_id="c1",
            rubric="helpfulness",
            scorer="llm_rubric",
            status="ok",
            score=0.75,
            label="4",
            passed=True,
            explanation="Direct and polite.",
            **common,
        ),
        EvalRecord(
            trace_id="order-8812",
            span_id="",
            rubric="faithfulness",
            scorer="faithfulness",
            status="error",
            explanation="judge reply unusable after one re-ask",
            details={"error_type": "JudgeMalformedOutput"},
            **common,
        ),
        EvalRecord(
            trace_id="order-8813",
            span_id="c1",
            rubric="faithfulness",
            scorer="faithfulness",
            status="skipped",
            explanation="no contexts",
            **common,
        ),
    ]
    store = Store(f"sqlite:///{tmp_path / 'export.db'}")
    for row in rows:
        store.upsert_record(row)
    records = list(store.records())
    store.close()
    return records


async def test_records_round_trip_as_evaluation_events(
    receiver: LogsReceiver, tmp_path: Path
) -> None:
    records = stored_records(tmp_path)
    exporter = EvaluationExporter(receiver.endpoint)
    assert await exporter.export(records) == 3  # the skipped record is not a result
    await exporter.aclose()

    by_id = {e["attributes"]["evaluator.record.id"]: e for e in receiver.events}
    assert len(by_id) == 3
    for record in records:
        event = by_id.get(str(record.id))
        if record.status == "skipped":
            assert event is None
            continue
        assert event is not None
        a = event["attributes"]
        # Mapped back through the attributes, and the IDs the event is parented to.
        assert a["evaluator.trace_id"] == record.trace_id
        assert a.get("evaluator.span_id", "") == record.span_id
        tid, sid = otel_ids(record.trace_id, record.span_id)
        assert (event["trace_id"], event["span_id"]) == (tid.hex(), sid.hex())
        assert a["gen_ai.evaluation.name"] == record.rubric
        assert a.get("gen_ai.evaluation.score.value") == record.score
        assert a.get("gen_ai.evaluation.explanation") == record.explanation
        assert a["evaluator.rubric.version"] == "2" and a["prompt.version"] == "v18"
        created = record.created_at.replace(tzinfo=UTC)
        assert event["time_unix_nano"] == (created - EPOCH) // timedelta(microseconds=1) * 1000

    events = {e["attributes"]["evaluator.trace_id"]: e for e in receiver.events}
    # Span IDs the OTLP receiver stored export unchanged: the score sits on the real span.
    assert (events[OTEL_TRACE]["trace_id"], events[OTEL_TRACE]["span_id"]) == (
        OTEL_TRACE,
        OTEL_SPAN,
    )
    assert events[OTEL_TRACE]["attributes"]["gen_ai.evaluation.score.label"] == "fail"
    # 64-bit hex trace IDs widen with zeros; other IDs hash, stably.
    assert events["4bf92f3577b34da6"]["trace_id"] == "0" * 16 + "4bf92f3577b34da6"
    assert events["4bf92f3577b34da6"]["attributes"]["gen_ai.evaluation.score.label"] == "4"
    error = events["order-8812"]
    assert error["attributes"]["error.type"] == "JudgeMalformedOutput"
    assert "gen_ai.evaluation.score.value" not in error["attributes"]
    assert error["span_id"] == ""  # no evaluated span: an event on the trace only
    assert error["trace_id"] == otel_ids("order-8812", "")[0].hex()
    assert "error.type" not in events[OTEL_TRACE]["attributes"]
    # Who produced the verdict (semantic-conventions-genai PR #359): epoch, version, type.
    judged = events[OTEL_TRACE]["attributes"]
    assert judged["gen_ai.evaluation.evaluator.id"] == "0123456789abcdef"
    assert judged["gen_ai.evaluation.evaluator.version"] == "2+faithfulness:1"
    assert judged["gen_ai.evaluation.evaluator.type"] == "llm_judge"
    legacy = events["4bf92f3577b34da6"]["attributes"]  # written before epochs
    assert legacy["gen_ai.evaluation.evaluator.id"] == "legacy"
    assert legacy["gen_ai.evaluation.evaluator.version"] == "2"
    assert legacy["gen_ai.evaluation.evaluator.type"] == "llm_judge"  # it names a judge model
    assert {e["severity_number"] for e in receiver.events} == {9, 13}


def test_hashed_ids_are_stable_and_distinct() -> None:
    a = otel_ids("order-8812", "c1")
    assert a == otel_ids("order-8812", "c1")
    assert a[1] != otel_ids("order-8813", "c1")[1]  # "c1" in another trace is another span
    assert len(a[0]) == 16 and len(a[1]) == 8
    assert otel_ids("0" * 32, "")[0] != bytes(16)  # the all-zero ID is invalid in OTel


async def test_retries_retryable_statuses_then_gives_up_without_raising(
    receiver: LogsReceiver, tmp_path: Path
) -> None:
    records = stored_records(tmp_path)
    exporter = EvaluationExporter(receiver.endpoint, max_attempts=3, backoff_s=0.01)
    receiver.statuses = [503, 429]
    assert await exporter.export(records) == 3
    assert receiver.requests == 3

    receiver.statuses = [400]  # not retryable: one attempt, reported, not raised
    assert await exporter.export(records) == 0
    assert receiver.requests == 4
    await exporter.aclose()

    down = EvaluationExporter("http://127.0.0.1:9/", max_attempts=2, backoff_s=0.01)
    assert await down.export(records) == 0
    await down.aclose()
    assert all(e["attributes"]["gen_ai.evaluation.name"] for e in receiver.events)
    assert EVENT_NAME == "gen_ai.evaluation.result"
