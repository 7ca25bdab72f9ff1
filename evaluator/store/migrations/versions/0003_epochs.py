"""Evaluator epochs: every eval record names what produced it; rollups never pool epochs.

Adds `eval_records.epoch` (indexed; existing rows get 'legacy') and `eval_records.provenance`
(JSON, NULL on existing rows). `eval_rollups` is derived data: it is rebuilt with `epoch` in
its key (refresh_rollups refolds it from the records on its next run) rather than altered in
place, which SQLite cannot do for a unique constraint.

Each step checks what is there first: a database created by the current models before it was
adopted (create_all, then stamped at the baseline) already has the new shape.

Revision ID: 0003_epochs
Revises: 0002_traces_ingested_at
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_epochs"
down_revision: str | None = "0002_traces_ingested_at"
branch_labels: str | None = None
depends_on: str | None = None

LEGACY = "legacy"
_ROLLUP_KEY = ("rubric", "bucket", "prompt_version", "model", "feature")


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _rollups(*, with_epoch: bool) -> None:
    extra = [sa.Column("epoch", sa.String(64), nullable=False)] if with_epoch else []
    key = (*_ROLLUP_KEY, "epoch") if with_epoch else _ROLLUP_KEY
    op.create_table(
        "eval_rollups",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("rubric", sa.String(128), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prompt_version", sa.String(256), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("feature", sa.String(256), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("total_sq", sa.Float(), nullable=False),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("pass_known", sa.Integer(), nullable=False),
        sa.Column("hist", sa.Text(), nullable=False),
        *extra,
        sa.UniqueConstraint(
            *key, name="uq_rollup_group_epoch" if with_epoch else "uq_rollup_group"
        ),
    )


def upgrade() -> None:
    have = _columns("eval_records")
    if "epoch" not in have:
        op.add_column(
            "eval_records",
            sa.Column("epoch", sa.String(64), nullable=False, server_default=LEGACY),
        )
    if "provenance" not in have:
        op.add_column("eval_records", sa.Column("provenance", sa.JSON(), nullable=True))
    op.create_index("ix_eval_epoch", "eval_records", ["epoch"], if_not_exists=True)
    if "epoch" not in _columns("eval_rollups"):
        op.drop_table("eval_rollups")
        _rollups(with_epoch=True)


def downgrade() -> None:
    op.drop_index("ix_eval_epoch", table_name="eval_records", if_exists=True)
    with op.batch_alter_table("eval_records") as batch:
        batch.drop_column("provenance")
        batch.drop_column("epoch")
    op.drop_table("eval_rollups")
    _rollups(with_epoch=False)
