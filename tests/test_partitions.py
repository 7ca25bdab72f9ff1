"""Migration 0006 on a real PostgreSQL: an existing database's traces and records become
hash-partitioned by trace_id, keep every row, keep the record identity enforced, and go
back to plain tables on downgrade."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from evaluator.store.erasure import erase_traces
from evaluator.store.models import EvalRecord
from evaluator.store.retention import delete_in_batches
from evaluator.store.schema import alembic_config, current_revision, head_revision, upgrade
from evaluator.store.store import Store, make_engine

pytestmark = pytest.mark.postgres

BEFORE = "0005_trace_signals"
PARTITIONS = 16  # migrations/versions/0006_partitions.py PARTITIONS
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
# The columns at 0005: what must survive (a later revision may add more).
TRACE_COLUMNS = "trace_id, payload::text, prompt_version, model, feature, tenant, is_error, "
TRACE_COLUMNS += "feedback, cost_usd, latency_ms, ingested_at"
RECORD_COLUMNS = "id, trace_id, span_id, rubric, rubric_version, scorer, method, status, "
RECORD_COLUMNS += "score, label, passed, explanation, details::text, judge_model, judge_calls, "
RECORD_COLUMNS += "judge_input_tokens, judge_output_tokens, judge_cost_usd, latency_ms, "
RECORD_COLUMNS += "prompt_version, model, feature, tenant, created_at, epoch, provenance::text"

FILL_TRACES = """
INSERT INTO traces (trace_id, payload, prompt_version, model, feature, tenant, is_error,
  feedback, cost_usd, latency_ms, ingested_at)
SELECT 'tr-' || g, json_build_object('trace_id', 'tr-' || g, 'spans', json_build_array()),
  'v' || (g % 3), 'gpt-4o', 'qa', CASE WHEN g % 10 = 0 THEN 'acme' END, g % 7 = 0,
  CASE WHEN g % 5 = 0 THEN 0.5 END, 0.001 * g, 100.0 + g, :now - g * interval '1 hour'
FROM generate_series(1, 300) AS g
"""
# Two rubrics per trace; a third of the 'tone' records are errors (not final).
FILL_RECORDS = """
INSERT INTO eval_records (id, trace_id, span_id, rubric, rubric_version, scorer, method,
  status, score, passed, explanation, details, judge_calls, judge_input_tokens,
  judge_output_tokens, judge_cost_usd, latency_ms, prompt_version, model, feature, tenant,
  created_at, epoch, provenance)
SELECT md5(g::text || r)::uuid, 'tr-' || g, 's1', r, '1', 'llm_rubric', 'judge',
  CASE WHEN r = 'tone' AND g % 3 = 0 THEN 'error' ELSE 'ok' END,
  CASE WHEN r = 'tone' AND g % 3 = 0 THEN NULL ELSE (g % 100) / 100.0 END, g % 2 = 0,
  'why ' || g, json_build_object('n', g), 1, 800, 40, 0.0001, 900, 'v' || (g % 3), 'gpt-4o',
  'qa', CASE WHEN g % 10 = 0 THEN 'acme' END, :now - g * interval '1 hour', 'legacy',
  CASE WHEN g % 4 = 0 THEN json_build_object('model', 'm') END
FROM generate_series(1, 300) AS g, unnest(ARRAY['tone', 'faithfulness']) AS r
"""


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    eng = make_engine(postgres_url)
    upgrade(eng, BEFORE)
    with eng.begin() as conn:
        conn.execute(text(FILL_TRACES), {"now": NOW})
        conn.execute(text(FILL_RECORDS), {"now": NOW})
    yield eng
    eng.dispose()


def fingerprint(engine: Engine) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over every row's 0005 columns, per table."""
    out = {}
    with engine.connect() as conn:
        for table, cols, key in (
            ("traces", TRACE_COLUMNS, "trace_id"),
            ("eval_records", RECORD_COLUMNS, "id"),
        ):
            count, digest = conn.execute(
                text(
                    f"SELECT count(*), md5(string_agg(r::text, '|' ORDER BY r.{key})) "
                    f"FROM (SELECT {cols} FROM {table}) r"
                )
            ).one()
            out[table] = (int(count), str(digest))
    return out


def partitions(engine: Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_partitioned_table p ON p.partrelid = i.inhparent "
                    "WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"
                ),
                {"t": table},
            )
        )


def primary_key(engine: Engine, table: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = to_regclass(:t) AND contype = 'p'"
                ),
                {"t": table},
            ).scalar_one()
        )


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), revision)


def test_upgrade_partitions_an_existing_database_and_downgrade_restores_it(
    engine: Engine,
) -> None:
    before = fingerprint(engine)
    assert before["traces"][0] == 300 and before["eval_records"][0] == 600
    assert partitions(engine, "eval_records") == []

    assert upgrade(engine).after == head_revision()

    assert fingerprint(engine) == before
    for table in ("traces", "eval_records"):
        parts = partitions(engine, table)
        assert len(parts) == PARTITIONS
        with engine.connect() as conn:
            used = conn.execute(text(f"SELECT count(DISTINCT tableoid) FROM {table}")).scalar_one()
        assert used > PARTITIONS // 2  # rows spread by the hash, not all in one partition
    assert primary_key(engine, "eval_records") == "PRIMARY KEY (id, trace_id)"
    assert primary_key(engine, "traces") == "PRIMARY KEY (trace_id)"

    # A later revision's new column (0007 adds some): the conversion reads the table's
    # shape, so the column and its values travel both ways.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE eval_records ADD COLUMN later int NOT NULL DEFAULT 7"))
        conn.execute(text("UPDATE eval_records SET later = 8 WHERE trace_id = 'tr-5'"))

    downgrade(engine, BEFORE)

    assert current_revision(engine) == BEFORE
    assert partitions(engine, "eval_records") == partitions(engine, "traces") == []
    with engine.connect() as conn:
        leftovers = conn.scalars(
            # This test's schema only: other runs' schemas on the shared server are not ours.
            text(
                "SELECT relname FROM pg_class WHERE relname ~ '_p[0-9]+$|__new$' "
                "AND relnamespace = current_schema()::regnamespace"
            )
        ).all()
    assert [n for n in leftovers if n.startswith(("traces", "eval_records"))] == []
    assert primary_key(engine, "eval_records") == "PRIMARY KEY (id)"
    assert fingerprint(engine) == before
    assert upgrade(engine).before == BEFORE  # and it converts again
    assert fingerprint(engine) == before
    with engine.connect() as conn:
        later = conn.execute(text("SELECT later, count(*) FROM eval_records GROUP BY 1"))
        assert sorted(later.all()) == [(7, 598), (8, 2)]


def _record(trace_id: str, rubric: str, *, status: str, score: float | None) -> EvalRecord:
    return EvalRecord(
        trace_id=trace_id,
        span_id="s1",
        rubric=rubric,
        rubric_version="1",
        scorer="llm_rubric",
        status=status,
        score=score,
    )


def test_identity_upserts_retention_and_erasure_work_on_partitions(
    engine: Engine, postgres_url: str
) -> None:
    upgrade(engine)
    assert len(partitions(engine, "eval_records")) == PARTITIONS
    store = Store(postgres_url)
    try:
        # A duplicate identity is refused by the database itself, across partitions.
        identity = r"Key \(trace_id, span_id, rubric, rubric_version\)=\(tr-1, s1, tone, 1\)"
        with pytest.raises(IntegrityError, match=identity), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO eval_records (id, trace_id, span_id, rubric, rubric_version, "
                    "scorer, method, status, explanation, details, judge_calls, "
                    "judge_input_tokens, judge_output_tokens, judge_cost_usd, latency_ms, "
                    "created_at, epoch) VALUES (gen_random_uuid(), 'tr-1', 's1', 'tone', '1', "
                    "'llm_rubric', '', 'ok', '', '{}', 0, 0, 0, 0, 0, now(), 'legacy')"
                )
            )
        # The store's upsert: a final record is kept, a non-final one (tr-3 tone is an
        # error) is replaced in place, a new identity is inserted.
        written = store.upsert_records(
            [
                _record("tr-1", "tone", status="ok", score=0.0),
                _record("tr-3", "tone", status="ok", score=0.9),
                _record("tr-new", "tone", status="ok", score=0.4),
            ]
        )
        assert written == [False, True, True]
        assert [r.score for r in store.records(trace_id="tr-1", rubric="tone")] == [0.01]
        assert [(r.status, r.score) for r in store.records(trace_id="tr-3", rubric="tone")] == [
            ("ok", 0.9)
        ]
        assert store.status_counts() == {"ok": 502, "error": 99}

        # Retention: records and traces older than 100 hours go, in batches.
        cutoff = NOW - timedelta(hours=100, minutes=30)
        assert delete_in_batches(engine, "eval_records", cutoff, 37) == 400
        assert delete_in_batches(engine, "traces", cutoff, 37) == 200
        with engine.connect() as conn:
            oldest = conn.execute(text("SELECT min(created_at) FROM eval_records")).scalar_one()
        assert oldest >= cutoff

        # Erasure of one trace reaches its rows in whichever partition holds them.
        report = erase_traces(engine, ["tr-7"])
        assert report.deleted["traces"] == 1 and report.deleted["eval_records"] == 2
        assert store.records(trace_id="tr-7") == [] and store.get_trace("tr-7") is None
    finally:
        store.close()
