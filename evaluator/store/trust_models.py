"""Tables for trusting the judge over time: anchor-set runs and human feedback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text
from sqlmodel import Field, SQLModel

from evaluator.store.models import utcnow


class AnchorRun(SQLModel, table=True):
    """One re-scoring of a rubric's anchor set: agreement with intervals, cost, outcomes.

    `outcomes` maps item key -> [positive, predicted, risk] so the next run can be compared
    item by item (a paired test); `drift` holds the comparison with the previous run.
    """

    __tablename__ = "anchor_runs"
    __table_args__ = (Index("ix_anchor_runs_rubric_started", "rubric", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    rubric: str = Field(max_length=128)
    rubric_version: str = Field(default="", max_length=64)
    epoch: str = Field(max_length=128)
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    trigger: str = Field(default="", max_length=32)  # new_epoch | schedule | manual
    n: int = 0
    scored: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    drift: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcomes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    estimate: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    judge_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class FeedbackRecord(SQLModel, table=True):
    """One piece of human feedback on a trace (or one span of it).

    `id` is the client's id, or a hash of the content when none is given: importing the
    same feedback twice writes it once. `value` is "goodness" in [0, 1] (thumbs up = 1);
    `label` is the human verdict when there is one ("hallucinated", "faithful", ...).
    """

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_trace", "trace_id"),
        Index("ix_feedback_rubric_created", "rubric", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=256)
    trace_id: str = Field(max_length=256)
    span_id: str = Field(default="", max_length=256)
    rubric: str | None = Field(default=None, max_length=128)
    kind: str = Field(max_length=16)  # thumbs | score | label | correction
    value: float | None = None
    label: str | None = Field(default=None, max_length=128)
    note: str = Field(default="", sa_column=Column(Text, nullable=False))
    source: str = Field(default="", max_length=128)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
