"""/metrics: counters shared by several workers through Redis, gauges from Redis and SQL,
parsed back with prometheus_client's own text parser."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from evalcore.intervals import GroupStats
from evalcore.weights import WeightedStats
from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import encode
from evaluator.outputs.metrics import MetricsRecorder, render_metrics
from evaluator.sampling import Signals, TailRules
from evaluator.store.models import AlertRecord, EvalRecord, utcnow
from evaluator.store.store import Store

from .polling import until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def rec(rubric: str, status: str, **kw: Any) -> EvalRecord:
    base: dict[str, Any] = {
        "trace_id": uuid.uuid4().hex,
        "rubric": rubric,
        "rubric_version": "1",
        "scorer": rubric,
        "status": status,
        "score": None,
        "latency_ms": 800.0,
    }
    return EvalRecord(**(base | kw))


async def test_metrics_from_two_workers_redis_and_sql(redis_url: str, tmp_path: Path) -> None:
    prefix, queue = f"t{uuid.uuid4().hex[:8]}", "q-metrics"
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    sync = redis.Redis.from_url(redis_url)
    worker_a, worker_b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        # Intake: 10 IDs, one of them an error; rate 0 so only the tail rule samples.
        entries = [encode(f"trace-{i}", Signals(error=i == 3)) for i in range(10)]
        sync.rpush(intake_key(prefix), *entries, "bad id \n")
        intake = Intake(
            worker_a,
            key_prefix=prefix,
            queue_name=queue,
            sampling=SamplingConfig(max_rate=0.0, rules=TailRules()),
        )
        await intake.drain_all(100)
        sync.rpush(intake_key(prefix), "trace-late")  # still waiting

        # Two workers count into the same hash.
        ok = rec("faithfulness", "ok", score=0.9, judge_calls=1, judge_input_tokens=800,
                 judge_output_tokens=60, judge_cost_usd=0.0003, latency_ms=1800.0)  # fmt: skip
        await MetricsRecorder(worker_a, key_prefix=prefix).observe(
            [ok, rec("faithfulness", "error")]
        )
        recorder_b = MetricsRecorder(worker_b, key_prefix=prefix)
        await recorder_b.observe([rec("faithfulness", "ok", score=0.5, latency_ms=40.0)])
        await recorder_b.judge_event("rate_limited", 2)
        await recorder_b.judge_event("retries", 3)

        # SQL: stored records (one outside the score window) and alerts.
        for r in (
            rec("faithfulness", "ok", score=0.9, prompt_version="v18"),
            rec("faithfulness", "ok", score=0.7, prompt_version="v18"),
            rec(
                "faithfulness",
                "ok",
                score=0.2,
                prompt_version="v18",
                created_at=utcnow() - timedelta(days=3),
            ),
            rec("faithfulness", "ok", score=1.0, prompt_version="v17"),
            # The same rubric and prompt under a new judge: a series of its own, not a drop.
            rec("faithfulness", "ok", score=0.3, prompt_version="v18", epoch="e-new"),
            rec("faithfulness", "ok", score=0.5, prompt_version="v18", epoch="e-new"),
            rec("faithfulness", "ok", score=0.4, prompt_version="v18", epoch="e-new"),
            rec("helpfulness", "skipped"),
        ):
            store.upsert_record(r)
        from sqlmodel import Session

        with Session(store.engine) as session:
            session.add(AlertRecord(group_key="g1", kind="drop", rubric="faithfulness"))
            session.add(AlertRecord(group_key="g2", kind="drop", rubric="faithfulness",
                                    status="resolved"))  # fmt: skip
            session.commit()

        text = render_metrics(sync, store, key_prefix=prefix, queue_name=queue).decode()
    finally:
        store.close()
        sync.close()
        await worker_a.aclose()
        await worker_b.aclose()

    m = samples(text)
    assert m[("evaluator_intake_received_total", ())] == 11
    assert m[("evaluator_intake_invalid_total", ())] == 1
    assert m[("evaluator_sampling_decisions_total", (("reason", "tail_error"),))] == 1
    assert m[("evaluator_sampling_decisions_total", (("reason", "not_sampled"),))] == 9
    assert m[("evaluator_jobs_created_total", ())] == 1
    assert m[("evaluator_queue_depth", ())] == 1
    assert m[("evaluator_intake_pending", ())] == 1

    f = (("rubric", "faithfulness"),)
    assert m[("evaluator_evaluations_total", (("rubric", "faithfulness"), ("status", "ok")))] == 2
    assert (
        m[("evaluator_evaluations_total", (("rubric", "faithfulness"), ("status", "error")))] == 1
    )
    assert m[("evaluator_judge_tokens_total", (("direction", "input"), *f))] == 800
    assert m[("evaluator_judge_cost_usd_total", f)] == 0.0003
    assert m[("evaluator_judge_calls_total", f)] == 1
    assert m[("evaluator_judge_rate_limited_total", ())] == 2
    assert m[("evaluator_judge_retries_total", ())] == 3
    hist = "evaluator_evaluation_duration_seconds"
    assert m[(f"{hist}_bucket", (("le", "0.05"), *f))] == 1
    assert m[(f"{hist}_bucket", (("le", "1.0"), *f))] == 2
    assert m[(f"{hist}_bucket", (("le", "2.5"), *f))] == 3
    assert m[(f"{hist}_bucket", (("le", "+Inf"), *f))] == 3
    assert m[(f"{hist}_count", f)] == 3
    assert abs(m[(f"{hist}_sum", f)] - 2.64) < 1e-9

    v18 = (("epoch", "legacy"), ("prompt_version", "v18"), *f)
    assert abs(m[("evaluator_score", v18)] - 0.8) < 1e-9  # the 3-day-old 0.2 is outside
    assert m[("evaluator_score_samples", v18)] == 2
    assert m[("evaluator_score", (("epoch", "legacy"), ("prompt_version", "v17"), *f))] == 1.0
    # Epochs never pool: the new judge's 0.4 does not pull the old series down.
    new = (("epoch", "e-new"), ("prompt_version", "v18"), *f)
    assert abs(m[("evaluator_score", new)] - 0.4) < 1e-9
    assert m[("evaluator_score_samples", new)] == 3
    assert m[("evaluator_score_ess", new)] == 3  # no inclusion probabilities: ESS = n
    # The interval from SQL sums equals the one from the raw scores (evalcore.intervals).
    for labels, scores in ((v18, [0.9, 0.7]), (new, [0.3, 0.5, 0.4])):
        lo, hi = GroupStats.from_scores(scores).mean_ci(0.95)
        assert abs(m[("evaluator_score_ci_lower", labels)] - lo) < 1e-9
        assert abs(m[("evaluator_score_ci_upper", labels)] - hi) < 1e-9
        assert lo < m[("evaluator_score", labels)] < hi
    assert m[("evaluator_score_ci_lower", new)] > 0.0  # a real interval, not the [0, 1] fallback
    assert "95% interval" in text
    assert m[("evaluator_records", (("status", "ok"),))] == 7
    assert m[("evaluator_records", (("status", "skipped"),))] == 1
    assert m[("evaluator_alerts_open", f)] == 1
    assert "# TYPE evaluator_evaluations_total counter" in text


async def test_a_batching_recorder_writes_the_same_counts_once_flushed(redis_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url)
    try:
        batching = MetricsRecorder(client, key_prefix=prefix, flush_interval_s=3600)
        immediate = MetricsRecorder(client, key_prefix=prefix + "x")
        batches = [
            [
                rec(
                    "faithfulness",
                    "ok",
                    score=0.9,
                    judge_calls=1,
                    judge_input_tokens=800,
                    judge_output_tokens=60,
                    judge_cost_usd=0.0003,
                    latency_ms=1800.0,
                )
            ],
            [rec("faithfulness", "error"), rec("relevance", "ok", score=0.4, latency_ms=40.0)],
        ]
        for records in batches:
            await batching.observe(records)
            await immediate.observe(records)
        key = f"{prefix}:metrics"
        assert await client.hgetall(key) == {}  # held in the process until the interval
        await batching.flush()
        written = await client.hgetall(key)
        expected = await client.hgetall(f"{prefix}x:metrics")
        assert written.keys() == expected.keys() and len(written) == 12
        for field, value in expected.items():
            assert float(written[field]) == pytest.approx(float(value))
        await batching.flush()  # nothing new: writes nothing
        assert await client.hgetall(key) == written
        await batching.aclose()
    finally:
        await client.aclose()


async def test_a_batching_recorder_flushes_on_its_own_when_the_worker_goes_idle(
    redis_url: str,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url)
    recorder = MetricsRecorder(client, key_prefix=prefix, flush_interval_s=0.05)
    try:
        await recorder.observe([rec("faithfulness", "error")])  # then no more traffic
        await until(lambda: client.hget(f"{prefix}:metrics", "evals\x1ffaithfulness\x1ferror"),
                    "the idle recorder's own flush")  # fmt: skip
        assert await client.hget(f"{prefix}:metrics", "evals\x1ffaithfulness\x1ferror") == b"1"
        await recorder.observe([rec("faithfulness", "error")])
        await recorder.aclose()  # what is left is written at shut-down
        assert await client.hget(f"{prefix}:metrics", "evals\x1ffaithfulness\x1ferror") == b"2"
    finally:
        await client.aclose()


@pytest.fixture
def any_store(store: Store) -> Store:
    return store  # conftest's store, once per database


def test_the_score_gauge_is_the_hajek_mean_with_an_ess_interval(
    any_store: Store, redis_url: str
) -> None:
    """Mixed inclusion probabilities: the gauge is Σ(score/p)/Σ(1/p), its interval uses the
    ESS, as trends do; with every p = 1 it is the plain mean and interval as before."""
    mixed = [(0.9, 1.0), (0.8, 1.0), (0.2, 0.1), (0.3, 0.25), (0.6, None)]
    certain = [(0.9, 1.0), (0.5, 1.0), (0.7, 1.0)]
    for version, rows in (("mixed", mixed), ("certain", certain)):
        for score, p in rows:
            any_store.upsert_record(rec("faithfulness", "ok", score=score, prompt_version=version,
                                        inclusion_probability=p))  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    try:
        text = render_metrics(client, any_store, key_prefix=f"t{uuid.uuid4().hex[:8]}",
                              queue_name="q-w").decode()  # fmt: skip
    finally:
        client.close()
    m = samples(text)
    labels = {v: (("epoch", "legacy"), ("prompt_version", v), ("rubric", "faithfulness"))
              for v in ("mixed", "certain")}  # fmt: skip
    w = WeightedStats.from_scores(mixed)
    assert m[("evaluator_score", labels["mixed"])] == pytest.approx(w.mean, rel=1e-9)
    assert w.mean < sum(s for s, _ in mixed) / len(mixed) - 0.1  # far from the plain mean
    assert m[("evaluator_score_ess", labels["mixed"])] == pytest.approx(w.ess, rel=1e-9)
    assert m[("evaluator_score_samples", labels["mixed"])] == 5
    lo, hi = w.mean_ci(0.95)
    assert m[("evaluator_score_ci_lower", labels["mixed"])] == pytest.approx(lo, rel=1e-9)
    assert m[("evaluator_score_ci_upper", labels["mixed"])] == pytest.approx(hi, rel=1e-9)
    plain = GroupStats.from_scores([s for s, _ in certain])
    assert m[("evaluator_score", labels["certain"])] == pytest.approx(plain.mean, rel=1e-12)
    assert m[("evaluator_score_ess", labels["certain"])] == 3
    lo, hi = plain.mean_ci(0.95)
    assert m[("evaluator_score_ci_lower", labels["certain"])] == pytest.approx(lo, rel=1e-12)
    assert m[("evaluator_score_ci_upper", labels["certain"])] == pytest.approx(hi, rel=1e-12)
