"""Baseline: the schema as SQLModel.metadata.create_all built it before migrations existed.

The tables are a frozen copy (not imported from evaluator.store.models), so later model changes
cannot change what this revision creates. `checkfirst` makes it safe on a database that
already holds some of these tables: evaluator.store.schema adopts such a database here.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

METADATA = sa.MetaData()


def _ts(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


sa.Table(
    "traces",
    METADATA,
    sa.Column("trace_id", sa.String(256), primary_key=True),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("prompt_version", sa.String(256), nullable=True, index=True),
    sa.Column("model", sa.String(256), nullable=True),
    sa.Column("feature", sa.String(256), nullable=True),
    sa.Column("tenant", sa.String(256), nullable=True),
    sa.Column("is_error", sa.Boolean(), nullable=False),
    _ts("ingested_at"),
)

sa.Table(
    "eval_records",
    METADATA,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("trace_id", sa.String(256), nullable=False, index=True),
    sa.Column("span_id", sa.String(256), nullable=False),
    sa.Column("rubric", sa.String(128), nullable=False),
    sa.Column("rubric_version", sa.String(64), nullable=False),
    sa.Column("scorer", sa.String(64), nullable=False),
    sa.Column("method", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("score", sa.Float(), nullable=True),
    sa.Column("label", sa.String(128), nullable=True),
    sa.Column("passed", sa.Boolean(), nullable=True),
    sa.Column("explanation", sa.Text(), nullable=False),
    sa.Column("details", sa.JSON(), nullable=False),
    sa.Column("judge_model", sa.String(256), nullable=True),
    sa.Column("judge_calls", sa.Integer(), nullable=False),
    sa.Column("judge_input_tokens", sa.Integer(), nullable=False),
    sa.Column("judge_output_tokens", sa.Integer(), nullable=False),
    sa.Column("judge_cost_usd", sa.Float(), nullable=False),
    sa.Column("latency_ms", sa.Float(), nullable=False),
    sa.Column("prompt_version", sa.String(256), nullable=True),
    sa.Column("model", sa.String(256), nullable=True),
    sa.Column("feature", sa.String(256), nullable=True),
    sa.Column("tenant", sa.String(256), nullable=True),
    _ts("created_at"),
    sa.UniqueConstraint("trace_id", "span_id", "rubric", "rubric_version", name="uq_eval_identity"),
    sa.Index("ix_eval_trend", "rubric", "prompt_version", "created_at"),
    sa.Index("ix_eval_created", "created_at"),
)

sa.Table(
    "alerts",
    METADATA,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("group_key", sa.String(1024), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("rubric", sa.String(128), nullable=False),
    sa.Column("labels", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("test", sa.String(64), nullable=False),
    sa.Column("p_value", sa.Float(), nullable=False),
    sa.Column("e_value", sa.Float(), nullable=True),
    sa.Column("baseline_mean", sa.Float(), nullable=False),
    sa.Column("current_mean", sa.Float(), nullable=False),
    sa.Column("baseline_n", sa.Integer(), nullable=False),
    sa.Column("current_n", sa.Integer(), nullable=False),
    sa.Column("summary", sa.JSON(), nullable=False),
    sa.Column("changed", sa.JSON(), nullable=False),
    sa.Column("worst_traces", sa.JSON(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("resolution", sa.Text(), nullable=False),
    sa.Column("deliveries", sa.JSON(), nullable=False),
    _ts("opened_at"),
    _ts("updated_at"),
    _ts("resolved_at", nullable=True),
    # At most one open alert per group: a partial unique index on both dialects.
    sa.Index(
        "uq_alert_open",
        "group_key",
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    ),
    sa.Index("ix_alert_rubric_opened", "rubric", "opened_at"),
)

sa.Table(
    "eval_rollups",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("rubric", sa.String(128), nullable=False),
    _ts("bucket"),
    sa.Column("prompt_version", sa.String(256), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("feature", sa.String(256), nullable=False),
    sa.Column("n", sa.Integer(), nullable=False),
    sa.Column("total", sa.Float(), nullable=False),
    sa.Column("total_sq", sa.Float(), nullable=False),
    sa.Column("passes", sa.Integer(), nullable=False),
    sa.Column("pass_known", sa.Integer(), nullable=False),
    sa.Column("hist", sa.Text(), nullable=False),
    sa.UniqueConstraint(
        "rubric", "bucket", "prompt_version", "model", "feature", name="uq_rollup_group"
    ),
)

sa.Table(
    "eval_intents",
    METADATA,
    sa.Column("id", sa.String(300), primary_key=True),
    sa.Column("trace_id", sa.String(256), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("signals", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=False),
    _ts("created_at"),
    _ts("enqueued_at"),
    sa.Index("ix_intent_due", "status", "enqueued_at"),
)

sa.Table(
    "otlp_pending_spans",
    METADATA,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("span_id", sa.String(16), nullable=False),
    sa.Column("is_root", sa.Boolean(), nullable=False),
    sa.Column("received_s", sa.Float(), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.UniqueConstraint("trace_id", "span_id", name="uq_pending_span"),
    sa.Index("ix_pending_received", "received_s"),
)


def upgrade() -> None:
    METADATA.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    METADATA.drop_all(op.get_bind())
