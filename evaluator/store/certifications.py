"""Certifications of a cascade's cheap stage, in SQL: what was certified, on which labels,
with which guarantee, and when (and why) it was withdrawn.

A certification (evalcore.certification.certify) says: on one stratum of one rubric's traffic,
the cheap stage passing answers whose score is >= `threshold` misses an answer the top judge
fails with probability <= alpha, at confidence 1 - delta over the calibration draw, for traffic
exchangeable (at cluster level) with that draw. It is keyed by

    (rubric, stage, judge_epoch, prompt_version, stratum)

- stage: the cheap stage's version (the local method's, judges.scorers.local_model);
- judge_epoch: the evaluator epoch of the records it was computed on (judges.provenance: it
  hashes the rubric, scorer, judge endpoint and model), so a new top judge is a new key;
- prompt_version: the application's prompt version of the traffic ('' when none);
- stratum: the cheap stage's detected task (or another fixed partition).

Rows are never updated except to withdraw them (and to count the judge calls they saved): a
re-computation with a different outcome writes a new row, so the history of a key is its rows
in creation order. `active_certifications` is the newest non-withdrawn row per key that
certifies a threshold; the cascade (evaluator/worker/cascade_routing.py) acts only on those.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Index, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from evaluator.store.models import table_of, utcnow
from evaluator.store.store import Store, as_utc

Key = tuple[str, str, str, str, str]  # rubric, stage, judge_epoch, prompt_version, stratum


class CertificationRecord(SQLModel, table=True):
    """One computed certification (or a computation that certified nothing: threshold NULL)."""

    __tablename__ = "certifications"
    __table_args__ = (
        Index(
            "ix_certifications_key",
            "rubric",
            "stage",
            "judge_epoch",
            "prompt_version",
            "stratum",
            "created_at",
        ),
    )

    id: str = Field(primary_key=True, max_length=32)  # short hash of key + created_at
    rubric: str = Field(max_length=128)
    stage: str = Field(max_length=128)
    judge_epoch: str = Field(max_length=64)
    prompt_version: str = Field(default="", max_length=256)
    stratum: str = Field(max_length=128)
    alpha: float
    delta: float
    threshold: float | None = None  # None: nothing certified, the judge decides everything
    labels: int = 0  # labelled items the test used (one per cluster)
    clusters: int | None = None
    failing: int = 0
    misses: int = 0
    decided_share: float = 0.0
    # One-sided Clopper-Pearson upper bound (level delta) of P(fail | passed locally).
    fail_given_pass_upper: float | None = None
    labels_needed: int | None = None
    # Label count the certification was computed at (a pre-set look, certification_job).
    look: int = 0
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    withdrawn_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    withdrawn_reason: str | None = Field(default=None, max_length=1024)
    saved_judge_calls: int = 0

    @property
    def key(self) -> Key:
        return (self.rubric, self.stage, self.judge_epoch, self.prompt_version, self.stratum)


_TABLE = table_of(CertificationRecord)


@dataclass(frozen=True, slots=True)
class ActiveCertification:
    """A certification the cascade may act on: on `stratum` of `rubric`, with the cheap
    stage at version `stage`, the top judge at `judge_epoch` and the app's `prompt_version`
    ('' = none), passing a cheap score >= `threshold` misses a failing answer with
    probability <= alpha at confidence 1 - delta."""

    id: str
    rubric: str
    stage: str
    judge_epoch: str
    prompt_version: str
    stratum: str
    threshold: float
    alpha: float
    delta: float

    @property
    def key(self) -> Key:
        return (self.rubric, self.stage, self.judge_epoch, self.prompt_version, self.stratum)


def certification_id(key: Key, created_at: datetime) -> str:
    """Stable id: 16 hex digits of a hash of the key and the creation time."""
    return stable_id(key, as_utc(created_at).isoformat())


def stable_id(key: Key, *parts: str) -> str:
    """16 hex digits of a hash of the key and `parts` (e.g. a checkpoint and its segment:
    two workers computing the same checkpoint write one row)."""
    return hashlib.sha256("\x1f".join((*key, *parts)).encode()).hexdigest()[:16]


def _fresh(row: CertificationRecord) -> CertificationRecord:
    row.created_at = as_utc(row.created_at)
    if row.withdrawn_at is not None:
        row.withdrawn_at = as_utc(row.withdrawn_at)
    return row


def _rows(engine: Engine, *where: Any) -> list[CertificationRecord]:
    query = select(_TABLE).where(*where).order_by(_TABLE.c.created_at, _TABLE.c.id)
    with engine.connect() as conn:
        return [_fresh(CertificationRecord(**dict(r))) for r in conn.execute(query).mappings()]


def write(engine: Engine, rec: CertificationRecord) -> CertificationRecord:
    """Insert `rec` (its id derived from key and created_at when empty); returns it."""
    write_once(engine, rec)
    return rec


def write_once(engine: Engine, rec: CertificationRecord) -> bool:
    """Insert `rec` (its id derived from key and created_at when empty); False when a row
    with its id exists already (another run wrote the same checkpoint): nothing written."""
    if not rec.id:
        rec.id = certification_id(rec.key, rec.created_at)
    values = {c.name: getattr(rec, c.name) for c in _TABLE.columns}
    with engine.begin() as conn:
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        # RETURNING, not rowcount: drivers disagree on rowcount for a skipped insert.
        stmt = insert(_TABLE).values(**values).on_conflict_do_nothing().returning(_TABLE.c.id)
        return conn.execute(stmt).first() is not None


def list_certifications(engine: Engine, rubric: str | None = None) -> list[CertificationRecord]:
    """Every row (withdrawn too, and computations that certified nothing), oldest first."""
    return _rows(engine, *([_TABLE.c.rubric == rubric] if rubric is not None else []))


def get(engine: Engine, cert_id: str) -> CertificationRecord | None:
    rows = _rows(engine, _TABLE.c.id == cert_id)
    return rows[0] if rows else None


def latest_per_key(rows: Sequence[CertificationRecord]) -> dict[Key, CertificationRecord]:
    """The newest row of each key (rows ordered oldest first, as `list_certifications`)."""
    return {r.key: r for r in rows}


def active_rows(engine: Engine, rubric: str | None = None) -> list[CertificationRecord]:
    """Per key, its newest row when that row certifies a threshold and is not withdrawn (a
    newer computation that certified nothing, or a withdrawal, ends the key's certification)."""
    latest = latest_per_key(list_certifications(engine, rubric))
    return [r for r in latest.values() if r.threshold is not None and r.withdrawn_at is None]


def as_active(row: CertificationRecord) -> ActiveCertification:
    if row.threshold is None:
        raise ValueError(f"certification {row.id} certifies no threshold")
    return ActiveCertification(
        row.id,
        row.rubric,
        row.stage,
        row.judge_epoch,
        row.prompt_version,
        row.stratum,
        row.threshold,
        row.alpha,
        row.delta,
    )


def active_certifications_sync(engine: Engine) -> list[ActiveCertification]:
    return [as_active(r) for r in active_rows(engine)]


async def active_certifications(store: Store) -> list[ActiveCertification]:
    """The certifications in force (newest per key, certifying, not withdrawn), read in a
    thread (SQL is synchronous). The cascade router caches this briefly."""
    return await asyncio.to_thread(active_certifications_sync, store.engine)


def withdraw(engine: Engine, cert_id: str, reason: str, at: datetime | None = None) -> bool:
    """Withdraw a certification; False when it was withdrawn already (first reason kept)."""
    with engine.begin() as conn:
        done = conn.execute(
            update(_TABLE)
            .where(_TABLE.c.id == cert_id, _TABLE.c.withdrawn_at.is_(None))
            .values(withdrawn_at=at or utcnow(), withdrawn_reason=reason[:1024])
        )
    return bool(done.rowcount)


def set_saved_calls(engine: Engine, saved: dict[str, int]) -> None:
    """Store each certification's count of records it decided without the judge."""
    with engine.begin() as conn:
        for cert_id, n in saved.items():
            conn.execute(update(_TABLE).where(_TABLE.c.id == cert_id).values(saved_judge_calls=n))
