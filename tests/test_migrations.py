"""Alembic migrations on real SQLite and PostgreSQL: fresh databases, databases the service
created before migrations existed (SQLModel create_all), concurrent start-ups, the CLI."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from evaluator.cli.db import register
from evaluator.errors import SchemaError
from evaluator.store import outbox
from evaluator.store.models import AlertRecord, EvalRecord, PendingSpan, TraceRecord
from evaluator.store.schema import (
    BASELINE,
    alembic_config,
    current_revision,
    head_revision,
    include_name,
    upgrade,
)
from evaluator.store.store import make_engine
from evaluator.store.tables import model_metadata

from .conftest import make_settings

TABLES = {"traces", "eval_records", "alerts", "eval_rollups", "eval_intents", "otlp_pending_spans"}
# Added by revision 0002; the lead adds it to TraceRecord (then no drift at all is expected).
INGESTED_INDEX = "ix_traces_ingested_at"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'evals.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def run_cli(argv: list[str]) -> int:
    """`evaluator ARGV` for the commands of evaluator.cli.db (cli.py registers the same)."""
    parser = argparse.ArgumentParser(prog="evaluator")
    parser.add_argument("--settings", type=Path)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.fn(args))


def populate_the_old_way(engine: Engine) -> None:
    """What the service did before migrations: create_all, then write records."""
    model_metadata().create_all(engine)
    with Session(engine) as session:
        session.add(
            TraceRecord(trace_id="t1", payload={"trace_id": "t1", "spans": []}, feature="qa")
        )
        session.add(
            EvalRecord(
                trace_id="t1",
                span_id="c1",
                rubric="tone",
                rubric_version="1",
                scorer="llm_rubric",
                status="ok",
                score=0.75,
                details={"sampled_by": "rate"},
            )
        )
        session.add(AlertRecord(group_key="drop|tone", kind="drop", rubric="tone"))
        session.add(PendingSpan(trace_id="a" * 32, span_id="b" * 16, payload={"x": 1}))
        session.commit()
    outbox.record_intents(engine, [outbox.Intent("t1", "rate", {"error": True})])


def assert_records_survived(engine: Engine) -> None:
    with Session(engine) as session:
        assert session.exec(select(TraceRecord)).one().feature == "qa"
        record = session.exec(select(EvalRecord)).one()
        assert (record.trace_id, record.score, record.details) == (
            "t1",
            0.75,
            {"sampled_by": "rate"},
        )
        assert session.exec(select(AlertRecord)).one().status == "open"
        assert session.exec(select(PendingSpan)).one().payload == {"x": 1}
    assert [i.signals for i in outbox.list_intents(engine)] == [{"error": True}]


def drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        opts = {"compare_type": True, "include_name": include_name}
        ctx = MigrationContext.configure(conn, opts=opts)
        diffs = compare_metadata(ctx, model_metadata())
    model_has_index = INGESTED_INDEX in {i.name for i in model_metadata().tables["traces"].indexes}
    if not model_has_index:  # until TraceRecord declares it
        diffs = [d for d in diffs if not (d[0] == "remove_index" and d[1].name == INGESTED_INDEX)]
    return diffs


def test_fresh_database_gets_every_table_and_matches_the_models(engine: Engine) -> None:
    result = upgrade(engine)

    assert (result.before, result.after, result.adopted) == (None, head_revision(), False)
    assert TABLES | {"alembic_version"} <= set(inspect(engine).get_table_names())
    assert INGESTED_INDEX in {i["name"] for i in inspect(engine).get_indexes("traces")}
    assert drift(engine) == []


def test_database_created_before_migrations_is_adopted_and_keeps_its_records(
    engine: Engine,
) -> None:
    populate_the_old_way(engine)
    assert current_revision(engine) is None

    result = upgrade(engine)

    assert result.adopted and result.before is None and result.after == head_revision()
    assert_records_survived(engine)
    # the revision after the baseline was applied on top of the stamped database
    assert INGESTED_INDEX in {i["name"] for i in inspect(engine).get_indexes("traces")}
    assert drift(engine) == []
    again = upgrade(engine)
    assert (again.before, again.after, again.adopted) == (head_revision(), head_revision(), False)
    assert_records_survived(engine)


def test_older_release_without_the_newer_tables_gets_them(engine: Engine) -> None:
    tables = model_metadata().tables
    model_metadata().create_all(engine, tables=[tables["traces"], tables["eval_records"]])
    with Session(engine) as session:
        session.add(TraceRecord(trace_id="t1", payload={}, feature="qa"))
        session.commit()

    assert upgrade(engine).adopted

    assert set(inspect(engine).get_table_names()) >= TABLES
    with Session(engine) as session:
        assert session.exec(select(TraceRecord)).one().feature == "qa"
    assert drift(engine) == []


def test_unknown_pre_migration_shape_is_refused_not_guessed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE traces (trace_id VARCHAR(256) PRIMARY KEY)"))

    with pytest.raises(SchemaError, match=r"table 'traces' lacks columns payload"):
        upgrade(engine)
    assert current_revision(engine) is None


def test_concurrent_start_ups_upgrade_once(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    results: list[object] = []
    errors: list[BaseException] = []

    def run(eng: Engine) -> None:
        try:
            results.append(upgrade(eng))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()

    assert errors == []
    assert sorted(r.before or "" for r in results) == ["", *[head_revision()] * 3]  # type: ignore[attr-defined]


def test_second_revision_downgrades_and_reapplies(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), BASELINE)
    assert current_revision(engine) == BASELINE
    assert INGESTED_INDEX not in {i["name"] for i in inspect(engine).get_indexes("traces")}

    assert upgrade(engine).before == BASELINE
    assert INGESTED_INDEX in {i["name"] for i in inspect(engine).get_indexes("traces")}


@pytest.mark.postgres
def test_version_table_lands_in_the_connection_schema(postgres_url: str) -> None:
    eng = make_engine(postgres_url)
    try:
        upgrade(eng)
        with eng.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            # Other schemas (other test runs on the same database) may hold theirs: ask
            # where the unqualified name resolves, the way Alembic and the app see it.
            resolved = conn.execute(
                text(
                    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE c.oid = to_regclass('alembic_version')"
                )
            ).scalar_one()
            assert resolved == schema
            assert schema.startswith("t_")
    finally:
        eng.dispose()


def test_cli_db_current_and_upgrade(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, redis_url)
    eng = make_engine(settings.database.url)
    populate_the_old_way(eng)
    args = ["--settings", str(tmp_path / "settings.toml")]

    assert run_cli([*args, "db", "current"]) == 1
    assert "current: none" in capsys.readouterr().out

    assert run_cli([*args, "db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert "adopted a database created before migrations" in out
    assert f"unversioned -> {head_revision()}" in out

    assert run_cli([*args, "db", "current"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert run_cli([*args, "db", "upgrade"]) == 0
    assert f"up to date at {head_revision()}" in capsys.readouterr().out
    assert_records_survived(eng)
    eng.dispose()


def test_epochs_upgrade_an_existing_database_and_keep_its_records(
    engine: Engine, db_url: str
) -> None:
    """0003 on a database written by the previous release: records land in epoch 'legacy',
    the rollup (derived data) is rebuilt with the epoch in its key and refolds the same
    numbers, and new records carry their own epoch and provenance."""
    from datetime import UTC, datetime

    from evaluator.analytics.rollups import refresh_rollups
    from evaluator.store.models import EvalRollup
    from evaluator.store.store import Store

    upgrade(engine, "0002_traces_ingested_at")
    at = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
    with engine.begin() as conn:
        for i, score in enumerate((0.25, 0.75)):
            conn.execute(
                text(
                    "INSERT INTO eval_records (id, trace_id, span_id, rubric, rubric_version, "
                    "scorer, method, status, score, explanation, details, judge_calls, "
                    "judge_input_tokens, judge_output_tokens, judge_cost_usd, latency_ms, "
                    "created_at) VALUES (:id, :t, 's', 'tone', '1', 'llm_rubric', 'judge', "
                    "'ok', :score, '', '{}', 1, 0, 0, 0, 0, :at)"
                ),
                {"id": f"{i:032x}", "t": f"t{i}", "score": score, "at": at},
            )
        conn.execute(
            text(
                "INSERT INTO eval_rollups (rubric, bucket, prompt_version, model, feature, n, "
                "total, total_sq, passes, pass_known, hist) VALUES "
                "('tone', :at, '', '', '', 2, 1.0, 0.625, 0, 0, '[25,1,75,1]')"
            ),
            {"at": at.replace(minute=0)},
        )

    result = upgrade(engine)
    assert (result.before, result.after) == ("0002_traces_ingested_at", head_revision())
    assert "epoch" in {c["name"] for c in inspect(engine).get_columns("eval_rollups")}
    assert "ix_eval_epoch" in {i["name"] for i in inspect(engine).get_indexes("eval_records")}
    with Session(engine) as session:
        records = session.exec(select(EvalRecord).order_by(EvalRecord.trace_id)).all()
        assert [(r.trace_id, r.score, r.epoch, r.provenance) for r in records] == [
            ("t0", 0.25, "legacy", None),
            ("t1", 0.75, "legacy", None),
        ]
        assert session.exec(select(EvalRollup)).all() == []  # derived: rebuilt below
        session.add(
            EvalRecord(trace_id="t2", rubric="tone", rubric_version="2", scorer="llm_rubric",
                       status="ok", score=1.0, epoch="abc", provenance={"model": "m"},
                       created_at=at)
        )  # fmt: skip
        session.commit()
    store = Store(db_url)
    refresh_rollups(store, datetime(2026, 1, 6, tzinfo=UTC))
    store.close()
    with Session(engine) as session:
        cells = {(c.epoch, c.n, c.total) for c in session.exec(select(EvalRollup)).all()}
    assert cells == {("legacy", 2, 1.0), ("abc", 1, 1.0)}
    assert drift(engine) == []


def test_epochs_revision_downgrades_and_reapplies(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), "0002_traces_ingested_at")
    assert "epoch" not in {c["name"] for c in inspect(engine).get_columns("eval_records")}
    assert "epoch" not in {c["name"] for c in inspect(engine).get_columns("eval_rollups")}
    assert upgrade(engine).before == "0002_traces_ingested_at"
    assert drift(engine) == []
