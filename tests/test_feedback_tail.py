"""Late negative feedback feeds the tail rules: a thumbs-down by POST /api/feedback or on an
OTLP span, for a trace the rate sampled out, gets it evaluated — once — by the real intake
and a real arq burst worker (real Redis, real SQLite, a respx-mocked judge)."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import respx
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from sqlmodel import Session

from evaluator.analytics.rollups import refresh_rollups
from evaluator.analytics.trends import TrendQuery, trend
from evaluator.config.settings import Settings
from evaluator.sources.feedback import feedback_id, record_feedback
from evaluator.sources.feedback_tail import FeedbackIntake, feed_tail_rules
from evaluator.sources.ingest import ingest_traces
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.store.models import EvalRecord, TraceRecord
from evaluator.store.store import Store, as_utc
from evaluator.store.tail import mark_negative_feedback
from evaluator.web.server import start_in_thread
from evaluator.worker.app import run_burst

from .conftest import JUDGE_URL, TONE_RUBRIC, make_settings, rag_trace, write_rubric
from .services import free_port
from .test_worker_e2e import JUDGE, evaluate, records, verdict

SAMPLED = otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED)  # the SDK drops unsampled
IDS = ["a" * 32, "b" * 32, "c" * 32]  # OTLP-shaped, so an SDK span can join the stored trace


def _settings(tmp_path: Path, redis_url: str, rate: float) -> Settings:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC.replace("rate = 1.0", f"rate = {rate}"))
    return make_settings(tmp_path, redis_url, judge=JUDGE)


def _stored_signal(settings: Settings, trace_id: str) -> float | None:
    store = Store(settings.database.url)
    try:
        from sqlmodel import Session

        with Session(store.engine) as session:
            row = session.get(TraceRecord, trace_id)
            return None if row is None else row.feedback
    finally:
        store.close()


class _Served:
    def __init__(self, settings: Settings, *, otlp: bool = False) -> None:
        self.store = Store(settings.database.url)
        self.redis = redis.Redis.from_url(settings.redis.url)
        prefix = settings.redis.key_prefix
        self.assembler = SpanAssembler(self.store, self.redis, key_prefix=prefix) if otlp else None
        self.server = start_in_thread(
            self.store,
            assembler=self.assembler,
            feedback_intake=None if otlp else FeedbackIntake(self.redis, prefix, True),
        )
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def post(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        # urllib, not httpx: respx intercepts every httpx request in these tests.
        request = urllib.request.Request(f"{self.base}/api/feedback", json.dumps(items).encode())
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200
            return dict(json.loads(r.read()))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.redis.close()
        self.store.close()


@pytest.mark.parametrize("rate", [0.0, 1.0], ids=["rate_sampled_out", "rate_sampled_in"])
@respx.mock(base_url=JUDGE_URL)
async def test_a_posted_thumbs_down_gets_the_trace_evaluated_once(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str, rate: float
) -> None:
    judge = respx_mock.post("/chat/completions").mock(return_value=verdict(2))
    settings = _settings(tmp_path, redis_url, rate)
    first = await evaluate(settings, [rag_trace(t) for t in IDS])
    before = len(records(settings))
    assert before == (3 if rate else 0)  # out: the rate took none of them

    served = _Served(settings)
    try:
        out = served.post(
            [
                {"trace_id": IDS[0], "value": "down", "id": "fb-1"},
                {"trace_id": IDS[1], "value": "up", "id": "fb-2"},  # a thumbs-up: nothing
                {"trace_id": IDS[2], "note": "a note says nothing", "id": "fb-3"},
                {"trace_id": "never-stored", "value": "down", "id": "fb-4"},
            ]
        )
        assert out["inserted"] == 4
        assert out["tail"] == {"marked": 1, "enqueued": 1, "skipped": None}
        # The same feedback id again, and a second thumbs-down on the same trace: no push.
        again = served.post([{"trace_id": IDS[0], "value": "down", "id": "fb-1"}])
        assert again["duplicates"] == 1 and again["tail"]["enqueued"] == 0
        second = served.post([{"trace_id": IDS[0], "value": 0.1, "kind": "score"}])
        assert second["inserted"] == 1 and second["tail"]["enqueued"] == 0
    finally:
        served.close()

    assert _stored_signal(settings, IDS[0]) == -1.0
    assert _stored_signal(settings, IDS[1]) is None
    calls_before = judge.call_count
    result = await run_burst(settings)
    assert result["jobs_failed"] == 0
    rows = records(settings)
    mine = [r for r in rows if r.trace_id == IDS[0]]
    assert len(mine) == 1  # exactly one record per trace and rubric version, either way
    assert {r.trace_id for r in rows} == (set(IDS) if rate else {IDS[0]})
    if not rate:
        assert mine[0].details["sampled_by"] == "tail_feedback"
        assert result["jobs_complete"] == 1 and judge.call_count == calls_before + 1
    assert (await run_burst(settings))["jobs_complete"] == 0  # nothing left to do
    assert first["jobs_failed"] == 0


@respx.mock(base_url=JUDGE_URL)
async def test_a_thumbs_down_on_an_otlp_span_gets_the_stored_trace_evaluated(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    judge = respx_mock.post("/chat/completions").mock(return_value=verdict(2))
    settings = _settings(tmp_path, redis_url, 0.0)
    await evaluate(settings, [rag_trace(t) for t in IDS])
    assert records(settings) == []

    served = _Served(settings, otlp=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "app"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{served.base}/v1/traces", timeout=5))
    )
    tracer = provider.get_tracer("app")
    try:
        # A small span of the app's own, in the stored trace, sent after it; twice (a retry).
        for trace_id, attrs in (
            (IDS[0], {"evaluator.feedback.value": "down", "evaluator.feedback.id": "otlp-1"}),
            (IDS[0], {"evaluator.feedback.value": "down", "evaluator.feedback.id": "otlp-1"}),
            (IDS[1], {"evaluator.feedback.value": "up"}),
        ):
            parent = otel_trace.NonRecordingSpan(
                otel_trace.SpanContext(
                    int(trace_id, 16), 0x1234, is_remote=True, trace_flags=SAMPLED
                )
            )
            ctx = otel_trace.set_span_in_context(parent)
            with tracer.start_as_current_span("user_feedback", context=ctx) as s:
                for key, value in attrs.items():
                    s.set_attribute(key, value)
        provider.shutdown()
    finally:
        served.close()

    assert _stored_signal(settings, IDS[0]) == -1.0
    assert _stored_signal(settings, IDS[1]) is None
    result = await run_burst(settings)
    assert result["jobs_complete"] == 1 and result["jobs_failed"] == 0
    rows = records(settings)
    assert [(r.trace_id, r.details["sampled_by"]) for r in rows] == [(IDS[0], "tail_feedback")]
    assert judge.call_count == 1


def test_a_failed_push_leaves_the_signal_unmarked_and_the_next_thumbs_down_enqueues(
    tmp_path: Path, redis_url: str
) -> None:

    settings = _settings(tmp_path, redis_url, rate=0.0)
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace("t-down")])
    # A real client to a port nothing listens on: the push fails as in a Redis outage.
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    out = feed_tail_rules(store, ["t-down"], FeedbackIntake(dead, "x", True))
    assert out.to_json() == {"marked": 0, "enqueued": 0, "skipped": "redis_error"}
    assert _stored_signal(settings, "t-down") is None  # rolled back with the failed push
    live = redis.Redis.from_url(settings.redis.url)
    prefix = settings.redis.key_prefix
    # The same feedback sent again (its row already stored) retries the push.
    item = {"trace_id": "t-down", "value": "down", "id": "fb-1"}
    assert record_feedback(store, intake=FeedbackIntake(dead, "x", True), **item)[1]
    assert _stored_signal(settings, "t-down") is None
    assert record_feedback(store, intake=FeedbackIntake(live, prefix, True), **item) == (
        feedback_id("t-down", None, "api", "fb-1"),
        False,
    )
    assert _stored_signal(settings, "t-down") == -1.0
    assert live.llen(f"{prefix}:intake") == 1
    again = feed_tail_rules(store, ["t-down"], FeedbackIntake(live, prefix, True))
    assert again.to_json() == {"marked": 0, "enqueued": 0, "skipped": None}
    assert mark_negative_feedback(store.engine, ["t-down"], -1.0) == []  # already negative
    live.close()
    dead.close()
    store.close()


@pytest.fixture
def any_store(store: Store) -> Store:
    return store  # conftest's store, once per database


def test_a_thumbs_down_makes_the_traces_records_certain_and_refolds_their_hour(
    any_store: Store,
) -> None:
    """The negative-feedback rule takes every negative trace: its inclusion probability is
    1, so a record the rate sampled at p = 0.1 must weigh 1 in trends once it is marked."""
    store = any_store
    now = datetime.now(UTC)
    then = now - timedelta(hours=3)
    ingest_traces(store, [rag_trace(t) for t in ("t-bad", "t-ok1", "t-ok2")])
    with Session(store.engine) as session:
        session.add_all(
            EvalRecord(trace_id=t, rubric="tone", rubric_version="1", scorer="llm_rubric",
                       status="ok", score=s, passed=s >= 0.75, prompt_version="v1",
                       created_at=then, trace_at=then, inclusion_probability=p)
            for t, s, p in (("t-bad", 0.0, 0.1), ("t-ok1", 1.0, 1.0), ("t-ok2", 1.0, None))
        )  # fmt: skip
        session.commit()
    q = TrendQuery.parse("tone", by="none", since="1d", bucket="1h")
    refresh_rollups(store, now)
    before = trend(store, q, now=now, refresh=False)["groups"][0]["total"]
    assert before["mean"] == pytest.approx(2 / 12)  # Hájek: weights 10, 1, 1
    assert before["ess"] == pytest.approx(144 / 102)

    assert feed_tail_rules(store, ["t-bad"], None).marked == ["t-bad"]
    (row,) = [r for r in store.records(limit=10) if r.trace_id == "t-bad"]
    assert row.inclusion_probability == 1.0
    assert as_utc(row.trace_at) == then  # still counted in its trace's hour
    refresh_rollups(store, now + timedelta(minutes=1))  # the cron's next pass
    after = trend(store, q, now=now, refresh=False)["groups"][0]["total"]
    assert after["mean"] == pytest.approx(2 / 3) and after["ess"] == pytest.approx(3.0)
    assert after["count"] == before["count"] == 3
