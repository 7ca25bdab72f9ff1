"""The store against real SQLite and real PostgreSQL: upserts and concurrency differ."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from evaluator.store.models import EvalRecord
from evaluator.store.store import Store


def record(status: str = "ok", score: float | None = 0.9, **kw: object) -> EvalRecord:
    values: dict[str, object] = {
        "trace_id": "t1",
        "span_id": "s1",
        "rubric": "faithfulness",
        "rubric_version": "1",
        "scorer": "faithfulness",
        "method": "judge",
        "status": status,
        "score": score,
        "explanation": f"{status} record",
        "details": {"claims": [{"claim": "x", "verdict": "supported"}]},
        "judge_input_tokens": 100,
        "judge_output_tokens": 20,
        "judge_cost_usd": 0.0001,
    }
    values.update(kw)
    return EvalRecord(**values)  # type: ignore[arg-type]


def test_second_write_of_the_same_evaluation_writes_nothing(store: Store) -> None:
    assert store.upsert_record(record()) is True
    assert store.upsert_record(record(score=0.1, explanation="late duplicate")) is False
    rows = store.records(trace_id="t1")
    assert len(rows) == 1
    assert rows[0].score == 0.9 and rows[0].details["claims"][0]["verdict"] == "supported"
    assert rows[0].created_at.tzinfo is not None


def test_error_record_is_replaced_by_a_later_success(store: Store) -> None:
    assert store.upsert_record(record(status="error", score=None, explanation="judge 500"))
    assert store.upsert_record(record(status="ok", score=0.5))
    (row,) = store.records(trace_id="t1")
    assert (row.status, row.score) == ("ok", 0.5)


def test_a_written_record_carries_the_id_it_is_stored_under(store: Store) -> None:
    # Sinks (OTLP export, Langfuse) publish record.id: it must name the stored row.
    first = record(status="error", score=None)
    store.upsert_record(first)
    (row,) = store.records(trace_id="t1")
    assert first.id == row.id
    replacement = record(status="ok", score=0.5)
    assert replacement.id != row.id
    store.upsert_record(replacement)  # replaces the error row, which keeps its id
    (row,) = store.records(trace_id="t1")
    assert (row.status, replacement.id) == ("ok", row.id)


def test_new_rubric_version_is_a_new_record(store: Store) -> None:
    store.upsert_record(record())
    store.upsert_record(record(rubric_version="2"))
    assert len(store.records(trace_id="t1")) == 2
    assert store.status_counts() == {"ok": 2}


def test_concurrent_writers_leave_exactly_one_row(store: Store) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        inserted = list(pool.map(lambda i: store.upsert_record(record(score=i / 100)), range(40)))
    assert sum(inserted) == 1
    assert len(store.records(trace_id="t1")) == 1


def test_a_built_record_is_the_record_init_makes(store: Store) -> None:
    """EvalRecord.built (the worker's fast constructor) gives what EvalRecord(...) gives:
    the same fields and defaults, assignable, and storable through an ORM session too."""
    from datetime import UTC, datetime

    from sqlmodel import Session, select

    from evaluator.store.models import EvalRecord

    values: dict[str, Any] = {
        "trace_id": "built-1",
        "span_id": "s",
        "rubric": "faithfulness",
        "rubric_version": "1",
        "scorer": "faithfulness",
        "method": "judge",
        "status": "ok",
        "score": 0.25,
        "details": {"sampled_by": "rate"},
        "inclusion_probability": 0.5,
        "trace_at": datetime(2026, 11, 30, tzinfo=UTC),
    }
    made, built = EvalRecord(**values), EvalRecord.built(**values)
    moving = {"id", "created_at"}  # fresh per instance by their default factories
    assert built.model_dump(exclude=moving) == made.model_dump(exclude=moving)
    assert built.model_fields_set == made.model_fields_set
    assert built.id != made.id and built.created_at >= made.created_at
    with pytest.raises(TypeError, match="no field"):
        EvalRecord.built(**values, scroe=1.0)
    built.score = 0.75  # instrumented assignment works on a built record
    with Session(store.engine) as session:
        session.add(built)
        session.commit()
    with Session(store.engine) as session:
        row = session.exec(select(EvalRecord).where(EvalRecord.trace_id == "built-1")).one()
    assert (row.score, row.details, row.inclusion_probability) == (
        0.75,
        {"sampled_by": "rate"},
        0.5,
    )
    assert store.upsert_records([EvalRecord.built(**{**values, "trace_id": "built-2"})]) == [True]


def test_a_built_record_works_as_the_first_record_of_a_process() -> None:
    """In a fresh process (a worker) `built` may come before any EvalRecord(...), which is
    what configures SQLAlchemy's mappers: it must configure them itself."""
    import subprocess
    import sys

    code = (
        "from evaluator.store.models import EvalRecord\n"
        "r = EvalRecord.built(trace_id='t', span_id='s', rubric='f', rubric_version='1',"
        " scorer='f', status='ok')\n"
        "print(r.span_id, r.status, r.epoch)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["s", "ok", "legacy"]
