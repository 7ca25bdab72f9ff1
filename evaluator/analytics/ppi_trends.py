"""Prediction-powered trend numbers for a rubric with a cheap stage (issue 30).

A cascade rubric (judges.scorers.faithfulness) scores every drawn trace locally and asks the
judge for some: every trace outside the certified-pass region (p2|1 = 1), and the calibration
draw inside it (p2|1 = `audit_rate`). Its records say which (`details["cascade"]`: the cheap
score, `decided_by`, `calibration`, `certified_threshold`, `audit_rate`). Per group × epoch ×
bucket, `evalcore.ppi.ppi_mean` then estimates the top judge's mean from the cheap score on
every record (f = `cheap_score`, else `local_value`, else 0: any value fixed before the judge
draw keeps the estimate consistent) and the judge's score on the judged ones, weighted by
1/(p1·p2|1), p1 the record's inclusion probability.

What `trend` shows for such a rubric, per bucket and group total: `estimator` ("ppi++" where
`evalcore.ppi.shows_ppi`, else "hajek") names the source of `mean`, `ci_low`, `ci_high` and
`ess`; `judge_only` holds the Hájek estimate over the judged records beside it (the issue's
comparison), `ppi` the PPI++ one when computed. A bucket with no judged record keeps today's
numbers (the Hájek mean of every ok record, local passes included), named "all-records".
`std`, pass rate and percentiles stay those of every ok record (local passes included), as
before. Rubrics without a cheap stage: the document
is unchanged.

Guarantee: `evalcore.ppi` (an asymptotic 95 % interval; assumptions there). Also assumed here:
the calibration draw is independent of the judge's verdict given the cheap score — it is a
hash of the session (cluster), so traces of one session are drawn together and the interval
treats them as independent (too narrow when sessions are large and alike); refused escalations
leave no record (evaluator.worker.escalation) and are not represented, as in today's trend;
local-advisory records (no judge configured) are left out, having no chance of a verdict.
Cost: the rubric's raw records of the window are read (no rollup holds these sums yet:
`evalcore.ppi.PPISums` is what one would store).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select as sa_select
from sqlmodel import col

from evalcore.ppi import Estimate, PPIResult, ppi_mean
from evaluator.analytics.rollups import bucket_time, floor_time
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store, as_utc


@dataclass
class Cell:
    """One group × epoch × bucket's first stage: cheap score, judge score (judged only), p1,
    p2|1, judged flag."""

    f: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    p1: list[float] = field(default_factory=list)
    p2: list[float] = field(default_factory=list)
    judged: list[bool] = field(default_factory=list)

    def extend(self, other: Cell) -> None:
        for name in ("f", "y", "p1", "p2", "judged"):
            getattr(self, name).extend(getattr(other, name))

    def result(self) -> PPIResult:
        judged = np.array(self.judged, bool)
        return ppi_mean(np.array(self.y), judged, np.array(self.f), np.array(self.p2),
                        np.array(self.p1))  # fmt: skip


def stage_of(cascade: dict[str, Any], score: float) -> tuple[float, float, bool, float] | None:
    """(f, p2|1, judged, y) of one record's cascade trail; None for a local-advisory one."""
    decided = cascade.get("decided_by")
    if decided not in ("judge", "local_certified"):
        return None
    value = cascade.get("cheap_score")
    f = value if value is not None else cascade.get("local_value")
    f = 0.0 if f is None else float(f)
    audit = float(cascade.get("audit_rate") or 0.0)
    cut, cheap = cascade.get("certified_threshold"), cascade.get("cheap_score")
    in_pass_region = cut is not None and cheap is not None and float(cheap) >= float(cut)
    if decided == "local_certified":
        return (f, audit, False, float("nan")) if audit > 0 else None
    if cascade.get("calibration") and in_pass_region:
        return (f, audit, True, score) if audit > 0 else None
    return (f, 1.0, True, score)


def has_cheap_stage(store: Store, rubric: str, start: datetime) -> bool:
    """Whether an ok record of the rubric in the window (the first the index yields) came
    from a cascade: one indexed look, so a trend of any other rubric pays next to nothing.
    A rubric switched to a cascade within the window may be read as the old one."""
    r = EvalRecord
    query = (
        sa_select(col(r.method))
        .where(col(r.rubric) == rubric, col(r.status) == "ok", col(r.created_at) >= start)
        .limit(1)
    )
    with store.engine.connect() as conn:
        return conn.execute(query).scalar() == "cascade"


def ppi_cells(
    store: Store,
    rubric: str,
    pick: Callable[[Any, Any, Any], str],
    start: datetime,
    end: datetime,
    bucket: timedelta,
) -> dict[tuple[str, str, datetime], Cell] | None:
    """The rubric's cells in [start, end), or None when no record has a cascade trail."""
    r = EvalRecord
    at = bucket_time()
    query = sa_select(
        col(r.prompt_version), col(r.model), col(r.feature), col(r.epoch), at, col(r.score),
        col(r.inclusion_probability), col(r.details),
    ).where(
        col(r.rubric) == rubric, col(r.status) == "ok", col(r.score).is_not(None),
        col(r.method) == "cascade", col(r.created_at) >= start, at >= start, at < end,
    )  # fmt: skip
    cells: dict[tuple[str, str, datetime], Cell] = {}
    seen = False
    with store.engine.connect() as conn:
        for pv, m, f, ep, when, score, p, details in conn.execute(query):
            cascade = (details or {}).get("cascade")
            if not isinstance(cascade, dict):
                continue
            seen = True
            stage = stage_of(cascade, float(score))
            if stage is None:
                continue
            key = (pick(pv, m, f), ep, floor_time(as_utc(when), bucket))
            cell = cells.setdefault(key, Cell())
            cell.f.append(stage[0])
            cell.p2.append(stage[1])
            cell.judged.append(stage[2])
            cell.y.append(stage[3])
            cell.p1.append(1.0 if p is None or p <= 0 else float(p))
    return cells if seen else None


def _shown(result: PPIResult) -> dict[str, Any]:
    if result.judge_only.n_judged == 0:  # every trace passed locally: nothing to estimate from
        return {"estimator": "all-records", "judge_only": _json(result.judge_only)}
    shown = _json(result.shown())
    out: dict[str, Any] = {
        **{k: shown[k] for k in ("estimator", "mean", "ci_low", "ci_high", "ess")},
        "judge_only": _json(result.judge_only),
    }
    if result.ppi is not None:
        out["ppi"] = _json(result.ppi)
    return out


def _json(e: Estimate) -> dict[str, Any]:
    doc = e.to_json()
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in doc.items()}


def add_ppi(doc: dict[str, Any], cells: dict[tuple[str, str, datetime], Cell]) -> None:
    """Name each bucket's and total's estimator in the trends document, PPI++ where shown."""
    totals: dict[tuple[str, str], Cell] = {}
    for (label, ep, _b), cell in cells.items():
        totals.setdefault((label, ep), Cell()).extend(cell)
    for group in doc["groups"]:
        label, ep = group["key"] or "", group["epoch"]
        if (label, ep) in totals:
            group["total"].update(_shown(totals[(label, ep)].result()))
        for b in group["buckets"]:
            got = cells.get((label, ep, datetime.fromisoformat(b["start"])))
            if got is not None:
                b.update(_shown(got.result()))
