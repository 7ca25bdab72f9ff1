"""SQL tables (SQLModel): stored traces and the eval records linked to them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class TraceRecord(SQLModel, table=True):
    """One ingested trace; `payload` is the validated trace document."""

    __tablename__ = "traces"

    trace_id: str = Field(primary_key=True, max_length=256)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prompt_version: str | None = Field(default=None, index=True, max_length=256)
    model: str | None = Field(default=None, max_length=256)
    feature: str | None = Field(default=None, max_length=256)
    tenant: str | None = Field(default=None, max_length=256)
    is_error: bool = False
    ingested_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class EvalRecord(SQLModel, table=True):
    """One rubric's verdict on one span of one trace.

    Unique on (trace_id, span_id, rubric, rubric_version): evaluating twice writes once.
    `score` is normalised to [0, 1] (higher = better) and is NULL unless status is "ok".
    """

    __tablename__ = "eval_records"
    __table_args__ = (
        UniqueConstraint(
            "trace_id", "span_id", "rubric", "rubric_version", name="uq_eval_identity"
        ),
        Index("ix_eval_trend", "rubric", "prompt_version", "created_at"),
        Index("ix_eval_created", "created_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    trace_id: str = Field(index=True, max_length=256)
    span_id: str = Field(default="", max_length=256)
    rubric: str = Field(max_length=128)
    rubric_version: str = Field(max_length=64)
    scorer: str = Field(max_length=64)
    method: str = Field(default="", max_length=64)
    status: str = Field(max_length=16)  # ok | error | skipped
    score: float | None = None
    label: str | None = Field(default=None, max_length=128)
    passed: bool | None = None
    explanation: str = Field(default="", sa_column=Column(Text, nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    judge_model: str | None = Field(default=None, max_length=256)
    judge_calls: int = 0
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    judge_cost_usd: float = 0.0
    latency_ms: float = 0.0
    prompt_version: str | None = Field(default=None, max_length=256)
    model: str | None = Field(default=None, max_length=256)
    feature: str | None = Field(default=None, max_length=256)
    tenant: str | None = Field(default=None, max_length=256)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
