"""Inclusion probabilities: every eval record says how likely its trace was to be sampled for
its rubric, and when the trace happened; rollup cells keep the inverse-probability sums.

`eval_records.inclusion_probability` (NULL on existing rows = 1: they were weighted equally
before) and `eval_records.trace_at` (NULL = bucket by created_at, as before). `eval_rollups`
gains the weighted sums (w = 1/p): Σw, Σw·score, Σw·score², Σw² and Σw over passed records,
NULL in cells folded before this revision (all weights 1, which the readers assume).

Revision ID: 0007_inclusion
Revises: 0006_partitions
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007_inclusion"
down_revision: str | None = "0006_partitions"
branch_labels: str | None = None
depends_on: str | None = None

RECORD_COLUMNS = (
    ("inclusion_probability", sa.Float()),
    ("trace_at", sa.DateTime(timezone=True)),
)
ROLLUP_COLUMNS = ("w_sum", "w_total", "w_total_sq", "w_sq_sum", "w_passes")


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    # Each step checks first: a database created by the current models is already there.
    existing = _columns("eval_records")
    with op.batch_alter_table("eval_records") as batch:
        for name, kind in RECORD_COLUMNS:
            if name not in existing:
                batch.add_column(sa.Column(name, kind, nullable=True))
    existing = _columns("eval_rollups")
    with op.batch_alter_table("eval_rollups") as batch:
        for name in ROLLUP_COLUMNS:
            if name not in existing:
                batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("eval_rollups") as batch:
        for name in ROLLUP_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("eval_records") as batch:
        for name, _ in RECORD_COLUMNS:
            batch.drop_column(name)
