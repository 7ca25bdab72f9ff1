"""Scores the deployment gate reads: one rubric's ok records of two prompt versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import col

from evaluator.store.models import EvalRecord
from evaluator.store.store import Store


def version_scores(
    store: Store,
    rubric: str,
    prompt_version: str,
    since: datetime,
    *,
    feature: str | None = None,
    tenant: str | None = None,
) -> list[float]:
    """Scores of `prompt_version` since `since`, oldest first (the order they arrived in)."""
    r = EvalRecord
    query = (
        select(col(r.score))
        .where(
            col(r.rubric) == rubric,
            col(r.status) == "ok",
            col(r.score).is_not(None),
            col(r.prompt_version) == prompt_version,
            col(r.created_at) >= since,
        )
        .order_by(col(r.created_at), col(r.id))
    )
    if feature is not None:
        query = query.where(col(r.feature) == feature)
    if tenant is not None:
        query = query.where(col(r.tenant) == tenant)
    with store.engine.connect() as conn:
        return [float(s) for (s,) in conn.execute(query) if s is not None]
