"""Batch mode: judge calls waiting in the provider's Batch API (`batch_requests`) and the
batches they were sent in (`judge_batches`), so pending work survives a worker restart.

Revision ID: 0008_batches
Revises: 0007_inclusion
Create Date: 2026-12-10
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008_batches"
down_revision: str | None = "0007_inclusion"
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Frozen copies of the tables (not imported from the models), as in 0001.
    op.create_table(
        "batch_requests",
        sa.Column("custom_id", sa.String(64), primary_key=True),
        sa.Column("trace_id", sa.String(256), nullable=False),
        sa.Column("span_id", sa.String(256), nullable=False),
        sa.Column("rubric", sa.String(128), nullable=False),
        sa.Column("rubric_version", sa.String(64), nullable=False),
        sa.Column("sampled_by", sa.String(16), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("inclusion_probability", sa.Float(), nullable=True),
        _ts("trace_at", nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(128), nullable=True),
        sa.Column("submissions", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        _ts("created_at"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_batch_requests_status",
        "batch_requests",
        ["status", "created_at"],
        if_not_exists=True,
    )
    op.create_index("ix_batch_requests_batch", "batch_requests", ["batch_id"], if_not_exists=True)
    op.create_table(
        "judge_batches",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("input_file_id", sa.String(128), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("settled_at", nullable=True),
        if_not_exists=True,
    )
    op.create_index("ix_judge_batches_open", "judge_batches", ["settled_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("judge_batches", if_exists=True)
    op.drop_table("batch_requests", if_exists=True)
