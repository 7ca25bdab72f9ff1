"""Hostile or old trace times: a span claiming 1970 is clamped to at most TRACE_AT_MAX_LAG
before its evaluation (the claim kept in details), and a late record never makes the rollup
re-fold further back than ROLLUP_REFOLD_MAX — hours whose records retention deleted keep
their rollups. Real arq worker + Redis + SQLite; the rollup on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import respx
from sqlalchemy import delete
from sqlmodel import Session, col, select

from evaluator.analytics.rollups import refresh_rollups
from evaluator.store.models import ROLLUP_REFOLD_MAX, TRACE_AT_MAX_LAG, EvalRecord, EvalRollup
from evaluator.store.store import Store, as_utc

from .conftest import JUDGE_URL, TONE_RUBRIC, make_settings, rag_trace, write_rubric
from .test_worker_e2e import JUDGE, evaluate, records, verdict

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


@respx.mock(base_url=JUDGE_URL)
async def test_a_1970_span_is_clamped_and_the_claim_kept(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    respx_mock.post("/chat/completions").mock(return_value=verdict(2))
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(tmp_path, redis_url, judge=JUDGE)
    doc = rag_trace("t-1970")
    for span in doc["spans"]:  # what OTLP start_time_unix_nano=1 decodes to
        span["start_time"] = "1970-01-01T00:00:00.000000001Z"
        span["end_time"] = "1970-01-01T00:00:01Z"
    fresh = rag_trace("t-now")
    for span in fresh["spans"]:
        span["start_time"] = span["end_time"] = datetime.now(UTC).isoformat()
    assert (await evaluate(settings, [doc, fresh]))["jobs_failed"] == 0
    rows = {r.trace_id: r for r in records(settings)}
    old, now = rows["t-1970"], rows["t-now"]
    # Clamped when the evaluation began; the record is written once the judge answered.
    lag = as_utc(old.created_at) - as_utc(old.trace_at)
    assert TRACE_AT_MAX_LAG <= lag < TRACE_AT_MAX_LAG + timedelta(minutes=1)
    assert old.details["trace_at_claimed"].startswith("1970-01-01")
    assert "trace_at_claimed" not in now.details  # an honest time is kept as it is
    assert as_utc(now.trace_at) <= as_utc(now.created_at)


def _add(store: Store, created: datetime, score: float, trace_at: datetime | None) -> None:
    with Session(store.engine) as session:
        session.add(
            EvalRecord(
                trace_id=f"t-{uuid.uuid4().hex}",
                rubric="faith",
                rubric_version="1",
                scorer="faithfulness",
                status="ok",
                score=score,
                created_at=created,
                trace_at=trace_at,
            )
        )
        session.commit()


def _cells(store: Store) -> dict[datetime, tuple[int, float]]:
    with Session(store.engine) as session:
        rows = session.exec(select(EvalRollup).order_by(col(EvalRollup.bucket))).all()
        return {as_utc(r.bucket): (r.n, r.total) for r in rows}


def test_a_late_1970_record_refolds_a_bounded_range_and_keeps_old_hours(store: Store) -> None:
    old_hour = NOW.replace(minute=0) - timedelta(days=10)
    for s in (0.2, 0.4, 0.6):
        _add(store, old_hour + timedelta(minutes=5), s, None)
    _add(store, NOW - timedelta(hours=2), 0.5, None)
    refresh_rollups(store, NOW)
    before = _cells(store)
    assert before[old_hour] == (3, pytest.approx(1.2))

    # Retention deletes two of the old hour's records (its rollup stays: trends read it).
    with store.engine.begin() as conn:
        conn.execute(delete(EvalRecord).where(col(EvalRecord.score).in_([0.2, 0.4])))
    # Written now: one record claiming 1970 (stored before the pipeline clamped), one
    # honestly late by 3 days (deferred) — within the bound, so its hour is re-folded.
    later = NOW + HOUR
    _add(store, later, 0.9, datetime(1970, 1, 1, tzinfo=UTC))
    three_days = NOW.replace(minute=0) - timedelta(days=3)
    _add(store, later, 0.7, three_days + timedelta(minutes=10))
    written = refresh_rollups(store, later)

    after = _cells(store)
    assert after[old_hour] == before[old_hour]  # not overwritten with the one row left
    assert datetime(1970, 1, 1, tzinfo=UTC) not in after
    assert after[three_days] == (1, pytest.approx(0.7))  # the late record's hour, folded
    # The re-fold covered at most ROLLUP_REFOLD_MAX of hours, not 56 years of them.
    refolded = [b for b in after if b >= later.replace(minute=0) - ROLLUP_REFOLD_MAX - HOUR]
    assert written == len(refolded) and min(after) == old_hour
