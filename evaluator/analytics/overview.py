"""One row per rubric for the page's header: where each prompt version stands now.

Read-only, from eval records of the last `window` (24 h): mean score and pass rate of ok
records per prompt version, judge cost (all records, errors cost too) scaled to a day,
open alerts, and when the rubric's first record of the last week was written (the page
draws hourly buckets while there is less than a day of data). Given `pricing` (the models
[pricing] knows), a judge model that made calls without a price makes the rubric's cost
null, named in `unpriced_models`: unknown, never $0.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, func
from sqlalchemy import select as sa_select
from sqlmodel import col

from evaluator.analytics.trends import rubric_names
from evaluator.store.models import AlertRecord, EvalRecord, utcnow
from evaluator.store.store import Store, as_utc

WINDOW = timedelta(hours=24)
HISTORY = timedelta(days=7)


def overview(
    store: Store,
    now: datetime | None = None,
    window: timedelta = WINDOW,
    *,
    pricing: Collection[str] | None = None,
) -> dict[str, Any]:
    now = as_utc(now or utcnow())
    since = now - window
    r = EvalRecord
    ok = col(r.status) == "ok"
    per_version = (
        sa_select(
            col(r.rubric),
            col(r.prompt_version),
            func.count(),
            func.avg(col(r.score)),
            func.sum(cast(col(r.passed), Integer)),
            func.count(col(r.passed)),
        )
        .where(ok, col(r.score).is_not(None), col(r.created_at) >= since)
        .group_by(col(r.rubric), col(r.prompt_version))
    )
    cost = (
        sa_select(col(r.rubric), func.sum(col(r.judge_cost_usd)))
        .where(col(r.created_at) >= since)
        .group_by(col(r.rubric))
    )
    judges = (
        sa_select(col(r.rubric), col(r.judge_model))
        .where(col(r.created_at) >= since, col(r.judge_calls) > 0, col(r.judge_model).is_not(None))
        .distinct()
    )
    first = (
        sa_select(col(r.rubric), func.min(col(r.created_at)))
        .where(ok, col(r.created_at) >= now - HISTORY)
        .group_by(col(r.rubric))
    )
    alerts = (
        sa_select(col(AlertRecord.rubric), func.count())
        .where(col(AlertRecord.status) == "open")
        .group_by(col(AlertRecord.rubric))
    )
    with store.engine.connect() as conn:
        versions: dict[str, list[dict[str, Any]]] = {}
        for rubric, pv, n, mean, passes, known in conn.execute(per_version):
            versions.setdefault(rubric, []).append(
                {
                    "prompt_version": pv,
                    "count": n,
                    "mean": float(mean),
                    "pass_rate": (passes or 0) / known if known else None,
                }
            )
        costs = {rubric: float(total or 0.0) for rubric, total in conn.execute(cost)}
        unpriced: dict[str, set[str]] = {}
        known = set(pricing or ())
        for rubric, model in conn.execute(judges) if pricing is not None else ():
            if model not in known:
                unpriced.setdefault(rubric, set()).add(str(model))
        firsts = {rubric: as_utc(at) for rubric, at in conn.execute(first)}
        open_alerts = {rubric: n for rubric, n in conn.execute(alerts)}
    per_day = timedelta(days=1) / window
    rows = [
        {
            "rubric": name,
            "versions": sorted(
                versions.get(name, []),
                key=lambda v: (v["prompt_version"] is None, v["prompt_version"] or ""),
            ),
            "open_alerts": int(open_alerts.get(name, 0)),
            "judge_cost_usd_per_day": None
            if name in unpriced
            else round(costs.get(name, 0.0) * per_day, 6),
            "unpriced_models": sorted(unpriced.get(name, ())),
            "first_record_at": firsts[name].isoformat() if name in firsts else None,
        }
        for name in rubric_names(store)
    ]
    return {"window_hours": window / timedelta(hours=1), "until": now.isoformat(), "rubrics": rows}
