"""The judge budget's durable side: admitted evaluations (`budget_admissions`), rate draws
waiting for their cap window (`budget_offers`) and closed windows (`budget_windows`), so the
day's cap survives a Redis restart and refusals are by random key (evaluator.store.admissions).

Revision ID: 0009_budget_admissions
Revises: 0008_batches
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009_budget_admissions"
down_revision: str | None = "0008_batches"
branch_labels: str | None = None
depends_on: str | None = None


def _ts(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    # Frozen copies of the tables (not imported from the models), as in 0001.
    op.create_table(
        "budget_admissions",
        sa.Column("id", sa.String(700), primary_key=True),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("rubric", sa.String(128), nullable=False),
        sa.Column("trace_id", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _ts("admitted_at"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_budget_admissions_day", "budget_admissions", ["day", "rubric"], if_not_exists=True
    )
    op.create_table(
        "budget_offers",
        sa.Column("id", sa.String(300), primary_key=True),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("draws", sa.JSON(), nullable=False),
        _ts("created_at"),
        if_not_exists=True,
    )
    op.create_index("ix_budget_offers_window", "budget_offers", ["window"], if_not_exists=True)
    op.create_table(
        "budget_windows",
        sa.Column("window", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("offered", sa.Integer(), nullable=False),
        sa.Column("admitted", sa.Integer(), nullable=False),
        _ts("closed_at"),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("budget_windows")
    op.drop_index("ix_budget_offers_window", table_name="budget_offers")
    op.drop_table("budget_offers")
    op.drop_index("ix_budget_admissions_day", table_name="budget_admissions")
    op.drop_table("budget_admissions")
