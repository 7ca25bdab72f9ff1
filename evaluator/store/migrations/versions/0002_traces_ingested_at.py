"""Index traces by ingestion time: `evaluator backfill --since` selects a time window.

Revision ID: 0002_traces_ingested_at
Revises: 0001_baseline
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision: str = "0002_traces_ingested_at"
down_revision: str | None = "0001_baseline"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_traces_ingested_at", "traces", ["ingested_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_traces_ingested_at", table_name="traces", if_exists=True)
