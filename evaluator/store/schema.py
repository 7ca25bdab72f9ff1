"""Schema versions: Alembic migrations, applied at start-up, that keep existing records.

Before migrations existed the service built its tables with `SQLModel.metadata.create_all`.
Such a database has tables but no `alembic_version` row. `upgrade` adopts it: it checks that
the baseline columns are there, stamps it at the baseline revision (creating any baseline
table an older release did not have), then applies the later revisions. Rows are never
copied or dropped on the way.

    from evaluator.store.schema import upgrade
    result = upgrade(engine)     # idempotent; safe from several processes at once
    result.after                 # "0003_epochs"

Alembic is configured in code (no alembic.ini), so this works from any directory after
`pip install`. Concurrent start-ups serialise on a lock: a PostgreSQL advisory lock, or
SQLite's write lock (BEGIN IMMEDIATE), held for the whole upgrade.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

from evaluator.errors import SchemaError

log = logging.getLogger("evaluator.store.schema")

SCRIPT_LOCATION = "evaluator.store:migrations"
BASELINE = "0001_baseline"
# Hash partitions of these tables (migration 0006, PostgreSQL): no model describes them.
_PARTITION = re.compile(r"^(traces|eval_records)_p\d+$")
# Any fixed 64-bit number; only other evaluator processes take this lock.
_PG_LOCK_KEY = 0x6576616C5F6D6967  # "eval_mig"


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    before: str | None  # revision found (None: empty or pre-migration database)
    after: str | None
    adopted: bool  # a pre-migration (create_all) database was stamped at the baseline


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic `include_name` hook: compare the models with the tables, not the partitions
    (the partitioned parent carries the columns, constraints and indexes)."""
    return not (type_ == "table" and name is not None and _PARTITION.match(name))


def alembic_config(*, connection: Connection | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    cfg.attributes["url"] = url
    return cfg


@cache  # the shipped scripts do not change while the process runs
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise SchemaError("no migrations found in evaluator/store/migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the migration lock; commits on success."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            # pysqlite opens transactions lazily and not for DDL; take the write lock now so
            # a second process waits here instead of racing to CREATE TABLE.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


def _baseline_tables() -> MetaData:
    script = ScriptDirectory.from_config(alembic_config()).get_revision(BASELINE)
    if script is None:  # pragma: no cover
        raise SchemaError(
            f"baseline revision {BASELINE} is missing from evaluator/store/migrations"
        )
    metadata: MetaData = script.module.METADATA
    return metadata


def _check_adoptable(conn: Connection, baseline: MetaData, present: set[str]) -> None:
    """Refuse a pre-migration database whose tables lack baseline columns."""
    inspector = inspect(conn)
    problems = []
    for name in sorted(present):
        have = {c["name"] for c in inspector.get_columns(name)}
        missing = [c.name for c in baseline.tables[name].columns if c.name not in have]
        if missing:
            problems.append(f"table {name!r} lacks columns {', '.join(missing)}")
    if problems:
        raise SchemaError(
            "this database predates migrations and does not match the baseline schema: "
            + "; ".join(problems)
            + ". Restore it from a backup taken with the same release, or migrate it by hand."
        )


def upgrade(engine: Engine, revision: str = "head") -> UpgradeResult:
    """Bring the database to `revision`, adopting a pre-migration database first."""
    if revision == "head":
        # Fast path for every start-up after the first: one SELECT, no lock, no scripts run.
        current = current_revision(engine)
        if current == head_revision():
            return UpgradeResult(before=current, after=current, adopted=False)
    with _locked(engine) as conn:
        cfg = alembic_config(connection=conn)
        before = MigrationContext.configure(conn).get_current_revision()
        adopted = False
        if before is None:
            baseline = _baseline_tables()
            present = set(inspect(conn).get_table_names()) & set(baseline.tables)
            if present:
                _check_adoptable(conn, baseline, present)
                if present == set(baseline.tables):
                    command.stamp(cfg, BASELINE)
                else:
                    # An older release lacked some tables: the baseline creates only those.
                    command.upgrade(cfg, BASELINE)
                adopted = True
                log.warning(
                    "adopted a database created before migrations (%d tables) at %s",
                    len(present),
                    BASELINE,
                )
        command.upgrade(cfg, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        shown = before or ("unversioned" if adopted else "empty")
        log.info("database schema upgraded: %s -> %s", shown, after)
    return UpgradeResult(before=before, after=after, adopted=adopted)


def check_current(engine: Engine) -> None:
    """Raise SchemaError unless the database is at the head revision (for read-only tools)."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaError(
            f"database schema is at {current or 'no revision (empty or pre-migration)'}, "
            f"this version needs {head}: run `evaluator db upgrade`"
        )
