"""Trust the judge over time: `anchor_runs` (anchor-set re-scoring) and `feedback` (humans).

Revision ID: 0004_feedback
Revises: 0003_epochs
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004_feedback"
down_revision: str | None = "0003_epochs"
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Frozen copies of the tables (not imported from the models), as in 0001.
    op.create_table(
        "anchor_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rubric", sa.String(128), nullable=False),
        sa.Column("rubric_version", sa.String(64), nullable=False),
        sa.Column("epoch", sa.String(128), nullable=False),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("scored", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("drift", sa.JSON(), nullable=False),
        sa.Column("outcomes", sa.JSON(), nullable=False),
        sa.Column("estimate", sa.JSON(), nullable=False),
        sa.Column("judge_calls", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_anchor_runs_rubric_started",
        "anchor_runs",
        ["rubric", "started_at"],
        if_not_exists=True,
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("trace_id", sa.String(256), nullable=False),
        sa.Column("span_id", sa.String(256), nullable=False),
        sa.Column("rubric", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        _ts("created_at"),
        if_not_exists=True,
    )
    op.create_index("ix_feedback_trace", "feedback", ["trace_id"], if_not_exists=True)
    op.create_index(
        "ix_feedback_rubric_created", "feedback", ["rubric", "created_at"], if_not_exists=True
    )


def downgrade() -> None:
    op.drop_table("feedback", if_exists=True)
    op.drop_table("anchor_runs", if_exists=True)
