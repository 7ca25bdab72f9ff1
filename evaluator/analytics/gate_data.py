"""What the deployment gate reads: one rubric's ok records of two prompt versions — their
scores, or, for a rubric with a cheap stage, their first stage (`version_stream`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import Session, col

from evaluator.analytics.ppi_regression import Stream
from evaluator.analytics.ppi_trends import cascade_stream
from evaluator.analytics.queries import Clock
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


def version_stream(
    store: Store,
    rubric: str,
    prompt_version: str,
    since: datetime,
    *,
    feature: str | None = None,
    tenant: str | None = None,
) -> Stream | None:
    """The cascade records of `prompt_version` counted since `since` (on the regression
    check's clock), in write order, as `cascade_gate` reads them; None without any."""
    labels, key = ["prompt_version"], [prompt_version]
    for name, value in (("feature", feature), ("tenant", tenant)):
        if value is not None:
            labels.append(name)
            key.append(value)
    with Session(store.engine) as session:
        clock = Clock.of(session)
        now = datetime.now(UTC)
        return cascade_stream(session.connection(), clock, rubric, labels, tuple(key), since, now)
