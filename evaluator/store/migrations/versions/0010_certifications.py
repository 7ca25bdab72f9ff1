"""Certifications of a cascade's cheap stage (`certifications`): threshold, guarantee
(alpha, delta), the labels it was computed on, its key (rubric, cheap-stage version, top-judge
epoch, prompt version, stratum), and its withdrawal (evaluator.store.certifications).

Revision ID: 0010_certifications
Revises: 0009_budget_admissions
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010_certifications"
down_revision: str | None = "0009_budget_admissions"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A frozen copy of the table (not imported from the models), as in 0001.
    op.create_table(
        "certifications",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("rubric", sa.String(128), nullable=False),
        sa.Column("stage", sa.String(128), nullable=False),
        sa.Column("judge_epoch", sa.String(64), nullable=False),
        sa.Column("prompt_version", sa.String(256), nullable=False),
        sa.Column("stratum", sa.String(128), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("labels", sa.Integer(), nullable=False),
        sa.Column("clusters", sa.Integer(), nullable=True),
        sa.Column("failing", sa.Integer(), nullable=False),
        sa.Column("misses", sa.Integer(), nullable=False),
        sa.Column("decided_share", sa.Float(), nullable=False),
        sa.Column("fail_given_pass_upper", sa.Float(), nullable=True),
        sa.Column("labels_needed", sa.Integer(), nullable=True),
        sa.Column("look", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_reason", sa.String(1024), nullable=True),
        sa.Column("saved_judge_calls", sa.Integer(), nullable=False),
        if_not_exists=True,
    )
    op.create_index(
        "ix_certifications_key",
        "certifications",
        ["rubric", "stage", "judge_epoch", "prompt_version", "stratum", "created_at"],
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("ix_certifications_key", table_name="certifications")
    op.drop_table("certifications")
