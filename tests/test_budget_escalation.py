"""The judge budget's second stage: a cascade is drawn at intake and charged only when it
escalates to the judge. Real Redis, real SQLite, the real local scorer; the judge is respx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import respx
from arq import Retry

from evaluator.budget.allocation import (
    DAY_S,
    BudgetPlan,
    Cap,
    RubricPlan,
    RubricState,
    escalation_share,
    rubric_rates,
)
from evaluator.budget.state import ESCALATION_BUCKET_S
from evaluator.config.settings import Settings
from evaluator.intake.drain import build_intake, stats_key
from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import encode
from evaluator.sampling import Signals
from evaluator.sources.ingest import ingest_traces
from evaluator.store.admissions import SHARED
from evaluator.store.store import Store
from evaluator.worker.pipeline import evaluate_trace
from evaluator.worker.runtime import Runtime, build_runtime
from tests.cascade_support import (
    GROUNDED,
    INVENTED,
    JUDGE,
    cascade_rubric,
    certify,
    grounded_case,
    mock_judge,
    stratum_for,
    trace,
)
from tests.conftest import make_settings, queued_members

pytest.importorskip("judges.scorers.local")


def settings_with(
    tmp_path: Path, redis_url: str, per_day: int, audit_rate: float = 0.0
) -> Settings:
    """No calibration draw by default: which traces escalate is then the certification's."""
    rubrics = tmp_path / "rubrics"
    rubrics.mkdir(parents=True, exist_ok=True)
    (rubrics / "faithfulness.toml").write_text(cascade_rubric(audit_rate))
    # usd_per_evaluation 1: usd_per_day is the day's cap in evaluations.
    budget = {"usd_per_day": float(per_day), "usd_per_evaluation": 1.0}
    return make_settings(tmp_path, redis_url, judge=JUDGE, budget=budget)


def certify_grounded(runtime: Runtime) -> str:
    """Certify the stratum GROUNDED falls in at 0.5: its local score passes it."""
    stratum = stratum_for(grounded_case("g0"))
    return certify(runtime, stratum, 0.5, prompt_version="v1")  # rag_trace's prompt version


async def drawn_jobs(
    runtime: Runtime, settings: Settings, entries: list[str]
) -> dict[str, dict[str, Any]]:
    """Run the budgeted intake over `entries`; {trace id: its job's wire signals}."""
    assert runtime.redis is not None
    await runtime.redis.rpush(intake_key(settings.redis.key_prefix), *entries)
    intake = build_intake(runtime.redis, settings, sampling=runtime.sampling, engine=None)
    await intake.drain_all(batch=1000)
    members = await queued_members(runtime.redis, settings.redis.queue_name)
    return {m[0]: m[1] for m in members}


def used_today(client: redis.Redis, settings: Settings, scope: str = SHARED) -> int:
    day = int(time.time() // DAY_S)
    return int(client.get(f"{settings.redis.key_prefix}:budget:used:{scope}:d:{day}") or 0)


def counters(client: redis.Redis, settings: Settings) -> dict[str, int]:
    bucket = int(time.time() // ESCALATION_BUCKET_S)
    raw = client.hgetall(f"{settings.redis.key_prefix}:budget:escalation:{bucket}")
    return {k.decode(): int(v) for k, v in raw.items()}


def stats(client: redis.Redis, settings: Settings) -> dict[str, int]:
    raw = client.hgetall(stats_key(settings.redis.key_prefix))
    return {k.decode(): int(v) for k, v in raw.items()}


def records(settings: Settings) -> dict[str, Any]:
    store = Store(settings.database.url)
    rows = {r.trace_id: r for r in store.records(limit=1000)}
    store.close()
    return rows


@pytest.fixture
def judge_api() -> Iterator[respx.Route]:
    yield from mock_judge()


async def test_only_escalated_evaluations_are_charged(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    settings = settings_with(tmp_path, redis_url, per_day=1000)
    store = Store(settings.database.url)
    docs = [trace(f"g{i}", GROUNDED) for i in range(3)] + [
        trace(f"x{i}", INVENTED) for i in range(3)
    ]
    ingest_traces(store, docs)
    store.close()
    runtime = build_runtime(settings)
    cert = certify_grounded(runtime)
    client = redis.Redis.from_url(redis_url)
    jobs = await drawn_jobs(runtime, settings, [d["trace_id"] for d in docs])
    # Drawn with p = 1 (rate 1, room to spare), and not charged at intake.
    assert set(jobs) == {d["trace_id"] for d in docs}
    assert all(w["pi"] == {"faithfulness": 1.0} for w in jobs.values())
    assert all(w["escalate"] == ["faithfulness"] for w in jobs.values())
    assert used_today(client, settings) == 0
    for trace_id, wire in jobs.items():
        await evaluate_trace(runtime, trace_id, wire, job_try=1)
    rows = records(settings)
    # The charge equals the judge calls made: the three escalations, not the six draws.
    assert judge_api.call_count == 3
    assert used_today(client, settings) == used_today(client, settings, "faithfulness") == 3
    for i in range(3):
        local, judged = rows[f"g{i}"], rows[f"x{i}"]
        assert local.details["cascade"]["decided_by"] == "local_certified"
        assert local.details["cascade"]["certification"] == cert and local.judge_calls == 0
        assert judged.details["cascade"]["decided_by"] == "judge" and judged.judge_calls == 1
        assert local.inclusion_probability == judged.inclusion_probability == 1.0
    # Every run and every escalation counted, for the rate fitting.
    assert counters(client, settings) == {"r:faithfulness": 6, "e:faithfulness": 3}
    client.close()
    await runtime.aclose()


async def test_a_refused_escalation_of_a_rate_trace_writes_no_record_and_is_counted(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    settings = settings_with(tmp_path, redis_url, per_day=4)
    store = Store(settings.database.url)
    docs = [trace("g0", GROUNDED)] + [trace(f"x{i}", INVENTED) for i in range(10)]
    ingest_traces(store, docs)
    store.close()
    runtime = build_runtime(settings)
    certify_grounded(runtime)
    client = redis.Redis.from_url(redis_url)
    jobs = await drawn_jobs(runtime, settings, [d["trace_id"] for d in docs])
    assert len(jobs) == 11  # all drawn: intake charged none of them against the cap of 4
    # All at once: the ten escalations race for the cap of 4.
    await asyncio.gather(*(evaluate_trace(runtime, t, w, job_try=1) for t, w in jobs.items()))
    rows = records(settings)
    assert judge_api.call_count == 4 == used_today(client, settings)  # the cap, not one more
    judged = {t for t, r in rows.items() if r.details["cascade"]["decided_by"] == "judge"}
    assert len(judged) == 4 and set(rows) == judged | {"g0"}  # the refused: no record at all
    assert rows["g0"].judge_calls == 0  # a certified local pass still costs nothing
    counted = stats(client, settings)
    assert counted["budget_refused_evaluations"] == 6
    assert counted["not_sampled_budget"] == 6
    client.close()
    await runtime.aclose()


async def test_a_refused_escalation_of_a_tail_trace_waits_for_the_next_window(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    settings = settings_with(tmp_path, redis_url, per_day=1)
    store = Store(settings.database.url)
    ingest_traces(store, [trace("x0", INVENTED), trace("err", INVENTED)])
    store.close()
    runtime = build_runtime(settings)
    client = redis.Redis.from_url(redis_url)
    jobs = await drawn_jobs(runtime, settings, ["x0", encode("err", Signals(error=True))])
    await evaluate_trace(runtime, "x0", jobs["x0"], job_try=1)  # spends the day's cap
    assert judge_api.call_count == 1
    with pytest.raises(Retry) as deferred:
        await evaluate_trace(runtime, "err", jobs["err"], job_try=1)
    # Retried when the day's window ends, not dropped and not recorded from the local step.
    day_end = (int(time.time() // DAY_S) + 1) * DAY_S
    assert deferred.value.defer_score == pytest.approx((day_end - time.time()) * 1000, abs=5000)
    assert set(records(settings)) == {"x0"} and judge_api.call_count == 1
    assert used_today(client, settings) == 1
    # On its last try (no intent to hand to the sweeper) the cause is stored, never a score.
    await evaluate_trace(runtime, "err", jobs["err"], job_try=settings.worker.max_tries)
    row = records(settings)["err"]
    assert row.status == "error" and row.score is None and "budget" in row.explanation
    assert "not_sampled_budget" not in stats(client, settings)
    client.close()
    await runtime.aclose()


async def test_a_refused_tail_escalation_out_of_tries_waits_for_the_window_however_old(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    """With an intent, the last try hands the trace to the sweeper until the budget's window
    ends — not the outage back-off, and not an error record even when the intent is older
    than judge_outage_max_age_s (a window ends; an outage may not)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from evaluator.store import outbox
    from evaluator.store.models import table_of

    settings = settings_with(tmp_path, redis_url, per_day=1)
    store = Store(settings.database.url)
    ingest_traces(store, [trace("x0", INVENTED), trace("err", INVENTED)])
    runtime = build_runtime(settings)
    jobs = await drawn_jobs(runtime, settings, ["x0", encode("err", Signals(error=True))])
    await evaluate_trace(runtime, "x0", jobs["x0"], job_try=1)  # spends the day's cap
    outbox.record_intents(store.engine, [outbox.Intent("err", "tail", jobs["err"])])
    intents = table_of(outbox.EvalIntent)
    old = datetime.now(UTC) - timedelta(seconds=settings.worker.judge_outage_max_age_s + 60)
    with store.engine.begin() as conn:
        conn.execute(update(intents).where(intents.c.id == "tail:err").values(created_at=old))

    out = await evaluate_trace(
        runtime, "err", jobs["err"], job_try=settings.worker.max_tries, intent_id="tail:err"
    )

    assert out["written"] == 0 and "err" not in records(settings)
    [intent] = [i for i in outbox.list_intents(store.engine) if i.id == "tail:err"]
    day_end = datetime.fromtimestamp((int(time.time() // DAY_S) + 1) * DAY_S, UTC)
    due_at = (
        intent.enqueued_at if intent.enqueued_at.tzinfo else intent.enqueued_at.replace(tzinfo=UTC)
    )
    assert intent.status == outbox.PENDING and intent.attempts == 0
    assert abs((due_at - day_end).total_seconds()) < 5
    assert "budget" in intent.last_error
    store.close()
    await runtime.aclose()


async def test_a_calibration_draw_is_judged_without_being_charged(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    """Every cluster in the draw (audit_rate 1): judged whatever the local score, even a
    certified pass, and not charged to the cap (a cap of 1 would refuse the second)."""
    settings = settings_with(tmp_path, redis_url, per_day=1, audit_rate=1.0)
    store = Store(settings.database.url)
    docs = [trace("g0", GROUNDED)] + [trace(f"x{i}", INVENTED) for i in range(3)]
    ingest_traces(store, docs)
    store.close()
    runtime = build_runtime(settings)
    cert = certify_grounded(runtime)
    client = redis.Redis.from_url(redis_url)
    jobs = await drawn_jobs(runtime, settings, [d["trace_id"] for d in docs])
    for trace_id, wire in jobs.items():
        await evaluate_trace(runtime, trace_id, wire, job_try=1)
    rows = records(settings)
    assert set(rows) == {"g0", "x0", "x1", "x2"} and judge_api.call_count == 4
    assert used_today(client, settings) == 0
    for row in rows.values():
        trail = row.details["cascade"]
        assert trail["decided_by"] == "judge" and trail["calibration"] is True
        assert trail["audit_rate"] == 1.0 and row.judge_calls == 1
    # The certified stratum's draw is an audit: the certification it would have used is named.
    assert rows["g0"].details["cascade"]["certification"] == cert
    assert counters(client, settings) == {"r:faithfulness": 4}  # runs, no charged escalation
    client.close()
    await runtime.aclose()


def test_the_rate_fitting_divides_the_room_by_the_escalation_share() -> None:
    def base(escalates: bool, share: float) -> float:
        plan = BudgetPlan(
            rubrics=(RubricPlan("faithfulness", 1.0, escalates=escalates),),
            shared=Cap(per_minute=10),
            carry=False,
        )
        state = RubricState(arrivals=100, escalation=share)
        return rubric_rates(plan, {"faithfulness": state}, 600.0)["faithfulness"].base

    assert base(False, 1.0) == base(True, 1.0) == 10 / 100
    # Half the draws call the judge: the room / 0.625 (the share with its headroom, 0.5 / 0.8).
    assert base(True, 0.5) == pytest.approx(10 / 0.625 / 100)
    assert base(True, 0.9) == base(True, 1.0)  # the headroom never takes the share above 1
    assert base(False, 0.5) == 10 / 100  # a rubric charged at intake is not refitted
    assert base(True, 0.05) == 1.0  # never above the rubric's rate
    # The share is the prior 1 until 50 runs are seen.
    assert escalation_share(49, 0) == 1.0 and escalation_share(50, 10) == 0.2
