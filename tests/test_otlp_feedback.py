"""Human feedback on OTLP spans: the real SDK exports spans with `evaluator.feedback.*`
attributes to the running receiver; they become feedback rows through the same rules and
writer as POST /api/feedback (one identity: a retried span, or the same trace, rubric, source
and id by POST, writes once), and a hostile feedback value refuses its span alone with partial_success."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from evaluator.intake.drain import stats_key
from evaluator.sources.feedback import feedback_id
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.store.trust_models import FeedbackRecord
from tests.test_feedback import feedback_rows
from tests.test_otlp_hostile import LATER, body, served, span, store  # noqa: F401

pytestmark = pytest.mark.usefixtures("store")


def _export(base: str, spans: list[dict[str, Any]]) -> list[str]:
    """Each dict: attributes of one chat span in its own trace; returns the trace IDs."""
    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    ids = []
    for attrs in spans:
        with tracer.start_as_current_span("chat") as s:
            s.set_attribute("gen_ai.operation.name", "chat")
            s.set_attribute("gen_ai.input.messages", '[{"role":"user","content":"Q?"}]')
            s.set_attribute("gen_ai.output.messages", '[{"role":"assistant","content":"A."}]')
            for key, value in attrs.items():
                s.set_attribute(key, value)
            ids.append(format(s.get_span_context().trace_id, "032x"))
    provider.shutdown()
    return ids


def test_sdk_spans_with_feedback_become_rows(served: tuple[SpanAssembler, str]) -> None:  # noqa: F811
    assembler, base = served
    ids = _export(
        base,
        [
            {"evaluator.feedback.value": "down", "evaluator.feedback.comment": "wrong date",
             "evaluator.feedback.rubric": "faithfulness"},
            {"evaluator.feedback.label": "hallucinated", "evaluator.feedback.source": "support",
             "evaluator.feedback.id": "fb-42"},
            {"evaluator.feedback.value": 0.75},
            {"feedback": -1},  # the tail-rule signal: a thumbs down
            {"feedback": 0},  # says nothing: no row
            {},
        ],
    )  # fmt: skip
    rows = {r.trace_id: r for r in feedback_rows(assembler.store)}
    assert set(rows) == set(ids[:4])
    down, label, score, legacy = (rows[t] for t in ids[:4])
    assert (down.kind, down.value, down.note, down.rubric) == ("thumbs", 0.0, "wrong date",
                                                               "faithfulness")  # fmt: skip
    assert (down.source, len(down.span_id)) == ("otlp", 16)
    assert (label.id, label.kind, label.label, label.value, label.source) == (
        feedback_id(ids[1], None, "support", "fb-42"), "label", "hallucinated", 0.0, "support")  # fmt: skip
    assert (score.kind, score.value) == ("score", 0.75)
    assert (legacy.kind, legacy.value) == ("thumbs", 0.0)
    # the spans are still traces like any others
    assert set(assembler.complete(now=time.time() + LATER)) == set(ids)

    # One identity with POST /api/feedback: the same trace, rubric, source and client id is
    # the same piece of feedback (an identical one writes nothing, a changed one updates)
    same = {"trace_id": ids[1], "label": "hallucinated", "id": "fb-42", "source": "support",
            "span_id": label.span_id}  # fmt: skip
    again = httpx.post(f"{base}/api/feedback", json=same)
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    changed = httpx.post(f"{base}/api/feedback", json={**same, "label": "faithful"})
    assert changed.status_code == 200 and changed.json()["updated"] == 1
    assert len(feedback_rows(assembler.store)) == 4
    # and a re-sent span (the exporter retrying the same body) writes once too
    raw = span(7, [{"key": "evaluator.feedback.note", "value": {"stringValue": "late"}},
                   {"key": "evaluator.feedback.id", "value": {"stringValue": "fb-7"}}])  # fmt: skip
    for _ in range(2):
        reply = httpx.post(f"{base}/v1/traces", content=body([raw]),
                           headers={"Content-Type": "application/json"})  # fmt: skip
        assert reply.status_code == 200, reply.text
    notes = [r for r in feedback_rows(assembler.store) if r.note == "late"]
    assert len(notes) == 1 and len(feedback_rows(assembler.store)) == 5


# (name, feedback attributes in OTLP/JSON, cause); NaN/NUL are the span checks' own refusals
HOSTILE: list[tuple[str, list[dict[str, Any]], str]] = [
    ("nan", [{"key": "evaluator.feedback.value", "value": {"doubleValue": "NaN"}}], "nan_inf"),
    ("nul", [{"key": "evaluator.feedback.comment", "value": {"stringValue": "a\u0000b"}}], "nul"),
    ("oversize", [{"key": "evaluator.feedback.comment", "value": {"stringValue": "x" * 10_001}}],
     "oversize"),
    ("range", [{"key": "evaluator.feedback.value", "value": {"doubleValue": 3.0}}], "format"),
    ("label", [{"key": "evaluator.feedback.label", "value": {"stringValue": "sideways"}}],
     "format"),
    ("kind", [{"key": "evaluator.feedback.kind", "value": {"stringValue": "vibes"}},
              {"key": "evaluator.feedback.value", "value": {"stringValue": "up"}}], "format"),
    ("nul source", [{"key": "evaluator.feedback.source", "value": {"stringValue": "s\u0000"}},
                     {"key": "evaluator.feedback.value", "value": {"stringValue": "up"}}], "nul"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "attrs", "cause"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_feedback_refuses_its_span_alone(
    served: tuple[SpanAssembler, str],  # noqa: F811
    name: str,
    attrs: list[dict[str, Any]],
    cause: str,
) -> None:
    assembler, base = served
    good = [{"key": "evaluator.feedback.value", "value": {"stringValue": "up"}}]
    spans = [span(i, good) for i in range(6)]
    spans[3] = span(3, attrs)
    reply = httpx.post(f"{base}/v1/traces", content=body(spans),
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    partial = reply.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert f"span {4:032x}/{4:016x}" in partial["errorMessage"]
    rows = feedback_rows(assembler.store)
    assert sorted(r.trace_id for r in rows) == [f"{i + 1:032x}" for i in range(6) if i != 3]
    assert all(isinstance(r, FeedbackRecord) and r.value == 1.0 for r in rows)
    assert assembler.redis is not None
    stats = assembler.redis.hgetall(stats_key(assembler.key_prefix))
    assert stats[f"quarantined:otlp:{cause}".encode()] == b"1"
