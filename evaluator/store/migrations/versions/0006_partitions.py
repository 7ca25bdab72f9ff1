"""PostgreSQL: hash-partition `traces` and `eval_records` by trace_id (SQLite: nothing).

Why trace_id, and why HASH: PostgreSQL enforces a unique constraint on a partitioned table
only when it contains the partition key. The record identity (uq_eval_identity: trace_id,
span_id, rubric, rubric_version) and the traces primary key both contain trace_id, so both
stay enforced across partitions and the store's ON CONFLICT upserts keep their target. A
range on created_at would not be in the identity (and an upsert rewrites created_at), so
idempotency would be lost. The one key without trace_id is the records' primary key (id):
it becomes (id, trace_id). Ids are uuid4 drawn by the writer, and idempotency never rested
on them; the identity constraint, unchanged, is what makes a second evaluation write nothing.

How a table is converted (generic: it reads the table's shape from the catalogue, so a
later migration that adds a column or an index to these tables works as on a plain table):
lock it against writes (readers go on), CREATE TABLE x__new (LIKE x INCLUDING DEFAULTS ...)
PARTITION BY HASH (trace_id), PARTITIONS partitions, copy the rows, move owned sequences,
drop the old table, rename, then re-create its constraints (a unique one lacking trace_id
gets it appended and is marked with a comment, so the downgrade can take it off) and indexes
on the parent (PostgreSQL builds them per partition), re-create foreign keys that pointed at
the table, ANALYZE. Downgrade runs the same steps towards a plain table.

The whole conversion is one transaction (the schema module holds the migration lock in
one), so the copy is one INSERT ... SELECT: batches inside one transaction would keep the
same locks and only cost more. Writers wait for the whole conversion (docs/scaling.md
gives its time per million rows). Grants on the tables are not carried over: the service's
own role owns them.

Revision ID: 0006_partitions
Revises: 0005_trace_signals
Create Date: 2026-11-30
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision: str = "0006_partitions"
down_revision: str | None = "0005_trace_signals"
branch_labels: str | None = None
depends_on: str | None = None

# Partitions per table. 16 keeps each partition's indexes a sixteenth of the table's at
# 100 M rows while the planner's per-partition cost stays small; changing it later means
# another conversion, so it is fixed here, not a setting.
PARTITIONS = 16
KEY = "trace_id"
TABLES = ("traces", "eval_records")
# On a constraint whose columns got KEY appended by this migration.
APPENDED = "evaluator 0006_partitions: trace_id appended"


class Shape(NamedTuple):  # not a dataclass: Alembic loads this file outside sys.modules
    """What a table has besides its columns, as SQL that re-creates it."""

    constraints: list[tuple[str, str, str, list[str], str | None]]  # name, type, def, cols, note
    indexes: list[tuple[str, str, bool, list[str]]]  # name, def, unique, columns
    incoming: list[tuple[str, str, str]]  # referencing table, name, def
    sequences: list[tuple[str, str]]  # sequence, owning column


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(bind: Connection, sql: str, **params: object) -> list[sa.Row[*tuple[Any, ...]]]:
    return list(bind.execute(sa.text(sql), params).all())


def _oid(bind: Connection, table: str) -> tuple[int, str, str]:
    row = bind.execute(
        sa.text(
            "SELECT c.oid, n.nspname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:t)"
        ),
        {"t": table},
    ).one()
    return int(row[0]), str(row[1]), str(row[2])


def _shape(bind: Connection, oid: int) -> Shape:
    names = "(SELECT array_agg(a.attname ORDER BY k.i) FROM unnest({0}) WITH ORDINALITY k(n, i) "
    names += "JOIN pg_attribute a ON a.attrelid = {1} AND a.attnum = k.n)"
    constraints = _rows(
        bind,
        "SELECT conname, contype, pg_get_constraintdef(oid), "
        + names.format("conkey", "conrelid")
        + ", obj_description(oid, 'pg_constraint') FROM pg_constraint "
        "WHERE conrelid = :oid AND contype IN ('p', 'u', 'x', 'f') ORDER BY contype, conname",
        oid=oid,
    )
    indexes = _rows(
        bind,
        "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique, "
        + names.format("i.indkey::int2[]", "i.indrelid")
        + " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = :oid "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = :oid "
        "AND k.conindid = i.indexrelid) ORDER BY c.relname",
        oid=oid,
    )
    incoming = _rows(
        bind,
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE confrelid = :oid AND contype = 'f' AND conparentid = 0",
        oid=oid,
    )
    sequences = _rows(
        bind,
        "SELECT s.oid::regclass::text, a.attname FROM pg_depend d "
        "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
        "WHERE d.refobjid = :oid AND d.deptype = 'a'",
        oid=oid,
    )
    return Shape(
        constraints=[(r[0], r[1], r[2], list(r[3] or []), r[4]) for r in constraints],
        indexes=[(r[0], r[1], bool(r[2]), list(r[3] or [])) for r in indexes],
        incoming=[(r[0], r[1], r[2]) for r in incoming],
        sequences=[(r[0], r[1]) for r in sequences],
    )


def _refuse_unsupported(bind: Connection, table: str, oid: int, shape: Shape) -> None:
    # Say so rather than convert wrongly: these are not in the schema this migration knows.
    problems = []
    if _rows(bind, "SELECT 1 FROM pg_attribute WHERE attrelid = :o AND attidentity != ''", o=oid):
        problems.append("an identity column")
    if _rows(bind, "SELECT 1 FROM pg_trigger WHERE tgrelid = :o AND NOT tgisinternal", o=oid):
        problems.append("a trigger")
    for name, _def, unique, cols in shape.indexes:
        if unique and KEY not in cols:
            problems.append(f"unique index {name} without {KEY}")
    for name, kind, _def, cols, _note in shape.constraints:
        if kind == "x" and KEY not in cols:
            problems.append(f"exclusion constraint {name} without {KEY}")
    if problems:
        raise RuntimeError(
            f"0006_partitions cannot convert {table}: it has {', '.join(problems)}. "
            "Drop or change it, run the upgrade, then re-create it."
        )


def _with_key(definition: str) -> str:
    """'PRIMARY KEY (id)' -> 'PRIMARY KEY (id, trace_id)' (the first column list)."""
    return re.sub(r"\(([^)]*)\)", lambda m: f"({m.group(1)}, {KEY})", definition, count=1)


def _without_key(definition: str) -> str:
    return re.sub(r"\(([^)]*), " + KEY + r"\)", r"(\1)", definition, count=1)


def _columns(bind: Connection, oid: int) -> str:
    rows = _rows(
        bind,
        "SELECT attname FROM pg_attribute WHERE attrelid = :o AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        o=oid,
    )
    return ", ".join(_q(r[0]) for r in rows)


def _rebuild(bind: Connection, table: str, *, partitioned: bool) -> None:
    """Replace `table` by a copy that is (or is not) hash-partitioned by KEY."""
    oid, schema, kind = _oid(bind, table)
    if (kind == "p") == partitioned:
        return  # already in the wanted shape
    old, new = f"{_q(schema)}.{_q(table)}", f"{_q(schema)}.{_q(table + '__new')}"
    bind.execute(sa.text(f"LOCK TABLE {old} IN EXCLUSIVE MODE"))  # writers wait, readers go on
    shape = _shape(bind, oid)
    if partitioned:
        _refuse_unsupported(bind, table, oid, shape)
    how = f" PARTITION BY HASH ({_q(KEY)})" if partitioned else ""
    bind.execute(
        sa.text(
            f"CREATE TABLE {new} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS "
            f"INCLUDING COMPRESSION){how}"
        )
    )
    if partitioned:
        for i in range(PARTITIONS):
            part = f"{_q(schema)}.{_q(f'{table}_p{i}')}"
            bind.execute(
                sa.text(
                    f"CREATE TABLE {part} PARTITION OF {new} "
                    f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {i})"
                )
            )
    columns = _columns(bind, oid)
    # Indexes are built after the copy: one sort per index beats one insert per row.
    bind.execute(sa.text(f"INSERT INTO {new} ({columns}) SELECT {columns} FROM {old}"))
    for referrer, name, _def in shape.incoming:
        bind.execute(sa.text(f"ALTER TABLE {referrer} DROP CONSTRAINT {_q(name)}"))
    for sequence, column in shape.sequences:  # else DROP TABLE would drop them
        bind.execute(sa.text(f"ALTER SEQUENCE {sequence} OWNED BY {new}.{_q(column)}"))
    bind.execute(sa.text(f"DROP TABLE {old}"))
    bind.execute(sa.text(f"ALTER TABLE {new} RENAME TO {_q(table)}"))
    for name, ctype, definition, cols, note in shape.constraints:
        marked = False
        if partitioned and ctype in ("p", "u") and KEY not in cols:
            definition, marked = _with_key(definition), True
        elif not partitioned and note == APPENDED:
            definition = _without_key(definition)
        bind.execute(sa.text(f"ALTER TABLE {old} ADD CONSTRAINT {_q(name)} {definition}"))
        if marked:
            bind.execute(sa.text(f"COMMENT ON CONSTRAINT {_q(name)} ON {old} IS '{APPENDED}'"))
    for _name, definition, _unique, _cols in shape.indexes:
        # A partitioned parent's index reads "ON ONLY x": build it on every partition.
        bind.execute(sa.text(definition.replace(" ON ONLY ", " ON ", 1)))
    for referrer, name, definition in shape.incoming:
        bind.execute(sa.text(f"ALTER TABLE {referrer} ADD CONSTRAINT {_q(name)} {definition}"))
    bind.execute(sa.text(f"ANALYZE {old}"))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return  # SQLite has no partitions; the schema is otherwise the same
    for table in TABLES:
        _rebuild(bind, table, partitioned=True)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table in TABLES:
        _rebuild(bind, table, partitioned=False)
