"""Retention (batched deletes with two floors) and erasure, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from evaluator.config.settings import Settings
from evaluator.store import outbox
from evaluator.store.batches import BatchRequest
from evaluator.store.erasure import erase_tenant, erase_traces
from evaluator.store.models import AlertRecord, EvalRecord, PendingSpan, TraceRecord, table_of
from evaluator.store.retention import apply_retention, regression_horizon
from evaluator.store.store import Store

from .conftest import REDIS_URL, make_settings, write_rubric

NOW = datetime(2026, 6, 1, tzinfo=UTC)
RUBRIC = """
name = "tone"
version = "1"
scorer = "faithfulness"
method = "local"
[regression]
window = "1d"
baseline = "20d"
"""


def _settings(tmp_path: Path, db_url: str, **retention: int) -> Settings:
    write_rubric(tmp_path / "rubrics", "tone", RUBRIC)
    return make_settings(
        tmp_path, REDIS_URL, database={"url": db_url},
        **{"database.retention": {"batch_rows": 7, **retention}},
    )  # fmt: skip


def _fill(store: Store, ages_days: list[int], tenant: str = "acme") -> None:
    with Session(store.engine) as s:
        for i, age in enumerate(ages_days):
            when = NOW - timedelta(days=age, hours=1)
            tid = f"{tenant}-{age}-{i}"
            s.add(
                TraceRecord(trace_id=tid, payload={"q": "secret"}, tenant=tenant, ingested_at=when)
            )
            s.add(EvalRecord(trace_id=tid, rubric="tone", rubric_version="1", scorer="x",
                             status="ok", score=1.0, tenant=tenant, created_at=when))  # fmt: skip
            s.add(outbox.EvalIntent(id=f"rate:{tid}", trace_id=tid, kind="rate", status="done",
                                    created_at=when, enqueued_at=when))  # fmt: skip
        s.commit()


def _count(store: Store, model: type, **where: str) -> int:
    t = table_of(model)
    q = select(func.count()).select_from(t)
    for k, v in where.items():
        q = q.where(t.c[k] == v)
    with store.engine.connect() as conn:
        return int(conn.scalar(q) or 0)


def test_retention_deletes_in_batches_but_keeps_baseline_and_pending(
    tmp_path: Path, db_url: str
) -> None:
    settings = _settings(tmp_path, db_url, traces_days=5, records_days=5, intents_days=5,
                         pending_spans_days=2)  # fmt: skip
    assert regression_horizon(settings) == timedelta(days=21)  # the rubric's 1d + 20d
    store = Store(db_url)
    try:
        _fill(store, [1] * 3 + [10] * 20 + [30] * 20)
        # One old trace still has a pending evaluation: it must survive.
        with Session(store.engine) as s:
            intent = s.get(outbox.EvalIntent, "rate:acme-30-30")
            assert intent is not None
            intent.status = "pending"
            s.add(
                PendingSpan(
                    trace_id="a" * 32,
                    span_id="b" * 16,
                    received_s=NOW.timestamp() - 3 * 86400,
                    payload={},
                )
            )
            s.add(
                PendingSpan(
                    trace_id="c" * 32, span_id="d" * 16, received_s=NOW.timestamp(), payload={}
                )
            )
            s.commit()
        result = apply_retention(store, settings, NOW)
        # Records: 5 days asked, but the 21-day regression horizon wins: only the 30-day-old go.
        assert result.deleted["eval_records"] == 20
        assert _count(store, EvalRecord) == 23
        # Traces: 5 days, minus the one with a pending intent.
        assert result.deleted["traces"] == 39
        assert _count(store, TraceRecord) == 4
        assert _count(store, outbox.EvalIntent, status="pending") == 1
        assert result.deleted["eval_intents"] == 39
        assert result.deleted["otlp_pending_spans"] == 1
        again = apply_retention(store, settings, NOW)
        assert sum(again.deleted.values()) == 0
    finally:
        store.close()


def test_settled_batch_requests_go_with_the_records_cutoff(tmp_path: Path, db_url: str) -> None:
    """Settled batch-mode requests older than the records' cutoff are deleted; pending and
    submitted ones (work in progress) stay whatever their age."""
    settings = _settings(tmp_path, db_url, records_days=5)
    store = Store(db_url)
    try:
        ages = {"done": [30, 30, 10], "error": [30], "pending": [30], "submitted": [30]}
        with Session(store.engine) as s:
            for status, days in ages.items():
                for i, age in enumerate(days):
                    s.add(BatchRequest(custom_id=f"{status}-{i}", trace_id=f"t-{status}-{i}",
                                       rubric="tone", rubric_version="1", status=status,
                                       created_at=NOW - timedelta(days=age, hours=1)))  # fmt: skip
            s.commit()
        result = apply_retention(store, settings, NOW)
        # The 21-day regression horizon is the records' cutoff: the 30-day-old settled go.
        assert result.deleted["batch_requests"] == 3
        with store.engine.connect() as conn:
            left = conn.execute(select(table_of(BatchRequest).c.custom_id)).scalars().all()
        assert sorted(left) == ["done-2", "pending-0", "submitted-0"]
        assert apply_retention(store, settings, NOW).deleted["batch_requests"] == 0
    finally:
        store.close()


def test_zero_days_keeps_everything(tmp_path: Path, db_url: str) -> None:
    settings = _settings(tmp_path, db_url)
    store = Store(db_url)
    try:
        _fill(store, [400, 800])
        assert apply_retention(store, settings, NOW).deleted == {}
        assert _count(store, EvalRecord) == 2
    finally:
        store.close()


def test_erase_trace_and_tenant(tmp_path: Path, db_url: str) -> None:
    store = Store(db_url)
    try:
        _fill(store, [1, 2, 3], tenant="acme")
        _fill(store, [1, 2], tenant="globex")
        with Session(store.engine) as s:
            s.add(AlertRecord(group_key="g", kind="drop", rubric="tone",
                              worst_traces=[{"trace_id": "acme-1-0"}, {"trace_id": "globex-1-0"}]))  # fmt: skip
            s.commit()
        from evaluator.sources.feedback import record_feedback

        record_feedback(store, trace_id="acme-1-0", value="down", note="my phone is 555 0100")
        from evaluator.store import batches

        parked = {"trace_id": "acme-1-0", "rubric": "tone", "rubric_version": "1", "labels": {},
                  "body": {"messages": [{"role": "user", "content": "the trace's answer"}]}}  # fmt: skip
        with store.engine.begin() as conn:
            batches.park(conn, [{**parked, "custom_id": "eval-1"}])
            batches.park(conn, [{**parked, "custom_id": "eval-2", "trace_id": "globex-1-0"}])
        one = erase_traces(store.engine, ["acme-1-0"])
        assert one.deleted == {
            "traces": 1,
            "eval_records": 1,
            "eval_intents": 1,
            "otlp_pending_spans": 0,
            "feedback": 1,
            "batch_requests": 1,  # the parked judge request quotes the trace
            "budget_offers": 0,
        }
        assert [r.trace_id for r in batches.pending(store.engine, 10)] == ["globex-1-0"]
        assert one.alerts_scrubbed == 1
        report = erase_tenant(store.engine, "acme")
        assert report.deleted["traces"] == 2 and report.deleted["eval_records"] == 2
        assert _count(store, TraceRecord, tenant="acme") == 0
        assert _count(store, EvalRecord, tenant="acme") == 0
        assert _count(store, TraceRecord, tenant="globex") == 2
        with Session(store.engine) as s:
            alert = s.exec(select(AlertRecord)).one()[0]  # type: ignore[call-overload]
            assert alert.worst_traces == [{"trace_id": "globex-1-0"}]
    finally:
        store.close()


def test_erase_cli_dry_run_then_yes(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    _settings(tmp_path, db_url)
    store = Store(db_url)
    _fill(store, [1, 2], tenant="acme")
    store.close()
    base = [
        sys.executable,
        "-m",
        "evaluator.cli",
        "--settings",
        str(tmp_path / "settings.toml"),
        "erase",
    ]
    dry = subprocess.run([*base, "--tenant", "acme"], capture_output=True, text=True, check=True)
    assert '"traces": 2' in dry.stdout and "dry run" in dry.stderr
    done = subprocess.run(
        [*base, "--tenant", "acme", "--yes"], capture_output=True, text=True, check=True
    )
    assert '"applied": true' in done.stdout
    store = Store(db_url)
    try:
        assert _count(store, TraceRecord) == 0 and _count(store, EvalRecord) == 0
    finally:
        store.close()


def test_a_spent_budget_starts_no_batch(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    settings = _settings(tmp_path, db_url, records_days=1, traces_days=1)
    store = Store(db_url)
    try:
        _fill(store, [60, 90])
        assert sum(apply_retention(store, settings, NOW, budget_s=0).deleted.values()) == 0
        assert apply_retention(store, settings, NOW).deleted["traces"] == 2
    finally:
        store.close()
