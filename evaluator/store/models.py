"""SQL tables (SQLModel): stored traces and the eval records linked to them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    text,
)
from sqlalchemy.orm import configure_mappers, instrumentation
from sqlmodel import Field, SQLModel, col

from judges.provenance import LEGACY_EPOCH


def utcnow() -> datetime:
    return datetime.now(UTC)


class TraceRecord(SQLModel, table=True):
    """One ingested trace; `payload` is the validated trace document."""

    __tablename__ = "traces"
    __table_args__ = (Index("ix_traces_ingested_at", "ingested_at"),)  # backfill windows

    trace_id: str = Field(primary_key=True, max_length=256)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prompt_version: str | None = Field(default=None, index=True, max_length=256)
    model: str | None = Field(default=None, max_length=256)
    feature: str | None = Field(default=None, max_length=256)
    tenant: str | None = Field(default=None, max_length=256)
    is_error: bool = False
    # Tail-rule signals (migration 0005): the intake reads them for IDs enqueued bare.
    feedback: float | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ingested_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


# How far before its evaluation a trace may claim to have happened. A record's `trace_at`
# is clamped into [evaluated − TRACE_AT_MAX_LAG, evaluated]: a hostile or broken span time
# (OTLP start_time_unix_nano=1 is 1970) or a re-ingested old trace must not drag the rollup
# refold back decades. 2 days covers the longest honest wait before an evaluation runs (a
# judge outage defers it up to worker.judge_outage_max_age_s = 1 day) with a day to spare.
TRACE_AT_MAX_LAG = timedelta(days=2)
# How far back a late record (written after its hour was rolled up) may make the rollup
# re-fold: TRACE_AT_MAX_LAG plus the Batch API's wait (24 h per submission, up to 3
# submissions), with slack. Retention never deletes records younger than this, so a re-fold
# never overwrites an hour whose raw records were partly deleted.
ROLLUP_REFOLD_MAX = timedelta(days=7)


class EvalRecord(SQLModel, table=True):
    """One rubric's verdict on one span of one trace.

    Unique on (trace_id, span_id, rubric, rubric_version): evaluating twice writes once.
    `score` is normalised to [0, 1] (higher = better) and is NULL unless status is "ok".
    `epoch` names what produced the verdict (judges.provenance.VerdictIdentity.epoch; not part
    of the record's identity); `provenance` holds that identity and the model the provider
    reported. Records written before epochs existed are in epoch 'legacy'.
    """

    __tablename__ = "eval_records"
    __table_args__ = (
        UniqueConstraint(
            "trace_id", "span_id", "rubric", "rubric_version", name="uq_eval_identity"
        ),
        Index("ix_eval_trend", "rubric", "prompt_version", "created_at"),
        Index("ix_eval_created", "created_at"),
        Index("ix_eval_epoch", "epoch"),
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
    epoch: str = Field(
        default=LEGACY_EPOCH,
        sa_column=Column(String(64), nullable=False, server_default=LEGACY_EPOCH),
    )
    provenance: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The probability the trace had of being sampled for this rubric (migration 0007);
    # NULL (older rows) counts as 1. Trends weight each record by its inverse.
    inclusion_probability: float | None = None
    # When the trace happened: trends bucket by it (NULL: by created_at), so a record written
    # late (deferred by the budget, a batch result) lands in the trace's hour.
    trace_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )

    @classmethod
    def built(cls, **values: Any) -> EvalRecord:
        """The record `EvalRecord(**values)` makes, for the worker's hot path: a table model
        is not validated on __init__ anyway, and SQLModel's __init__ sets each of the ~30
        fields through SQLAlchemy's instrumented setattr (~90 µs per record; this ~20 µs).
        The instance comes from SQLAlchemy's class manager, as a row loaded by the ORM does,
        so later assignments and Session.add behave as for any record (tests/test_store.py)."""
        unknown = values.keys() - cls.model_fields.keys()
        if unknown:
            raise TypeError(f"EvalRecord has no field(s) {sorted(unknown)}")
        manager = instrumentation.manager_of_class(cls)
        if not manager.mapper.configured:
            # __init__ configures the mappers on first use; new_instance does not.
            configure_mappers()
        record = manager.new_instance()
        record.__dict__.update(
            {
                name: values[name] if name in values else f.get_default(call_default_factory=True)
                for name, f in cls.model_fields.items()
            }
        )
        object.__setattr__(record, "__pydantic_fields_set__", set(values))
        object.__setattr__(record, "__pydantic_extra__", None)
        object.__setattr__(record, "__pydantic_private__", None)
        return record


class AlertRecord(SQLModel, table=True):
    """A regression alert for one group and kind ("drop" in place, "version" vs replaced).

    At most one open alert per `group_key` (a partial unique index, so two workers racing
    to open the same alert cannot both succeed).
    """

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "uq_alert_open",
            "group_key",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_alert_rubric_opened", "rubric", "opened_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    group_key: str = Field(max_length=1024)
    kind: str = Field(max_length=16)  # the KIND of the analytics job that opened it
    rubric: str = Field(max_length=128)
    labels: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="open", max_length=16)  # open | resolved
    test: str = Field(default="", max_length=64)
    p_value: float = 1.0
    e_value: float | None = None
    baseline_mean: float = 0.0
    current_mean: float = 0.0
    baseline_n: int = 0
    current_n: int = 0
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    changed: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    worst_traces: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    message: str = Field(default="", sa_column=Column(Text, nullable=False))
    resolution: str = Field(default="", sa_column=Column(Text, nullable=False))
    deliveries: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    opened_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    resolved_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


def record_weight() -> Any:
    """1 / inclusion probability in SQL (evalcore.weights.weight_of): NULL (a record older than
    0007) and a non-positive value count as 1."""
    p = col(EvalRecord.inclusion_probability)
    return case((p > 0, 1.0 / p), else_=1.0)


class EvalRollup(SQLModel, table=True):
    """Hourly sufficient statistics of ok eval records per rubric and label group.

    Trends read these instead of scanning raw records; `hist` holds counts of scores rounded
    to 0.01 for percentiles (JSON [bin, count, ...], bin = round(score * 100)). Missing labels
    are stored as ''. The epoch is part of the key: cells never pool across epochs.
    """

    __tablename__ = "eval_rollups"
    __table_args__ = (
        UniqueConstraint(
            "rubric",
            "bucket",
            "prompt_version",
            "model",
            "feature",
            "epoch",
            name="uq_rollup_group_epoch",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    rubric: str = Field(max_length=128)
    bucket: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    prompt_version: str = Field(default="", max_length=256)
    model: str = Field(default="", max_length=256)
    feature: str = Field(default="", max_length=256)
    epoch: str = Field(default=LEGACY_EPOCH, max_length=64)
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    passes: int = 0
    pass_known: int = 0
    hist: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    # Inverse-probability weights (migration 0007): sum of w, of w*score, of w*score^2, of
    # w^2 and of w over passed records; NULL in cells folded before 0007 (all weights 1).
    w_sum: float | None = None
    w_total: float | None = None
    w_total_sq: float | None = None
    w_sq_sum: float | None = None
    w_passes: float | None = None


class PendingSpan(SQLModel, table=True):
    """One received span waiting for its trace to complete."""

    __tablename__ = "otlp_pending_spans"
    __table_args__ = (
        UniqueConstraint("trace_id", "span_id", name="uq_pending_span"),
        Index("ix_pending_received", "received_s"),
    )

    id: int | None = Field(default=None, primary_key=True)
    trace_id: str = Field(max_length=32)
    span_id: str = Field(max_length=16)
    is_root: bool = False
    received_s: float = 0.0  # our clock, not the app's: completion must not trust skew
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a table model (SQLModel does not declare `__table__` for mypy)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]  # set by SQLModel, undeclared
