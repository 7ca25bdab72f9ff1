"""Prediction-powered trend numbers for a rubric with a cheap stage (issue 30).

A cascade rubric (judges.scorers.faithfulness) scores every drawn trace locally and asks the
judge for some: every trace outside the certified-pass region (p2|1 = 1), and the calibration
draw inside it (p2|1 = `audit_rate`). Its records say which (`details["cascade"]`: the cheap
score, `decided_by`, `calibration`, `certified_threshold`, `audit_rate`). Per group × epoch ×
bucket, `evalcore.ppi.ppi_mean` then estimates the top judge's mean from the cheap score on
every record (f = `cheap_score`, else `local_value`, else 0: any value fixed before the judge
draw keeps the estimate consistent) and the judge's score on the judged ones, weighted by
1/(p1·p2|1), p1 the record's inclusion probability (the intake's × the cheap stage's CPU-budget
draw) and p2|1 the one the record states (`details.cascade.p2`, written by the worker's two
stages, evaluator.worker.two_stage); a record without it (written before) has the p2|1 its
trail implies: `audit_rate` in the certified-pass region, 1 elsewhere.

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
`evalcore.ppi.PPISums` is what one would store): ~30 µs a record on SQLite; above
`MAX_RECORDS` in the window the trend keeps today's numbers, with `ppi_skipped` saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select as sa_select
from sqlmodel import col

from evalcore.ppi import Estimate, PPIResult, ppi_mean
from evaluator.analytics.ppi_regression import Stream
from evaluator.analytics.queries import MAX_STREAM, Clock, Key, _ok, match_labels
from evaluator.analytics.rollups import bucket_time, floor_time
from evaluator.store.models import EvalRecord, table_of
from evaluator.store.store import Store, as_utc

Array = npt.NDArray[np.float64]
_R = table_of(EvalRecord)
# The raw read costs ~30 µs a record on SQLite (bench/ppi_trends_cost.py: 3.4 s for 100,000,
# against 0.12 s from the rollups); past this many the trend keeps today's numbers and says so.
MAX_RECORDS = 100_000


class TooManyRecords(Exception):
    """More cascade records in the window than a trend reads raw."""


@dataclass
class Cell:
    """One group × epoch × bucket's first stage: cheap score, judge score (NaN where not
    judged), p1, p2|1, judged flag (arrays, one entry per record)."""

    f: Array
    y: Array
    p1: Array
    p2: Array
    judged: npt.NDArray[np.bool_]

    def __add__(self, other: Cell) -> Cell:
        return Cell(*(np.concatenate((getattr(self, k), getattr(other, k))) for k in _FIELDS))

    def result(self) -> PPIResult:
        return ppi_mean(self.y, self.judged, self.f, self.p2, self.p1)


_FIELDS = ("f", "y", "p1", "p2", "judged")


def stages(
    score: Array,
    cheap: Array,
    local: Array,
    decided: list[str | None],
    calibration: Array,
    audit: Array,
    cut: Array,
    stated: Array | None = None,
) -> dict[str, Any]:
    """Per record (arrays; NaN for a missing number): f, p2|1, judged, y and which records
    count (local-advisory ones, or an audit rate of 0 where one is needed, do not)."""
    judge = np.array([d == "judge" for d in decided])
    local_pass = np.array([d == "local_certified" for d in decided])
    f = np.where(np.isnan(cheap), np.nan_to_num(local), cheap)
    audit = np.nan_to_num(audit)
    in_pass = ~np.isnan(cut) & ~np.isnan(cheap) & (np.nan_to_num(cheap) >= np.nan_to_num(cut))
    sampled = local_pass | (judge & calibration & in_pass)  # judged with p2|1 = audit_rate
    p2 = np.where(sampled, audit, 1.0)
    if stated is not None:  # the p2|1 the worker recorded, where it did
        p2 = np.where(np.isnan(stated), p2, stated)
    keep = (judge | local_pass) & ~(p2 <= 0)
    return {"f": f, "p2": p2, "judged": judge, "y": np.where(judge, score, np.nan), "keep": keep}


def _num(values: tuple[Any, ...]) -> Array:
    return np.array([np.nan if v is None else float(v) for v in values])


def _stages_of_rows(
    score: tuple[Any, ...],
    p: tuple[Any, ...],
    cheap: tuple[Any, ...],
    local: tuple[Any, ...],
    decided: tuple[Any, ...],
    calib: tuple[Any, ...],
    audit: tuple[Any, ...],
    cut: tuple[Any, ...],
    p2: tuple[Any, ...],
) -> tuple[dict[str, Any], Array]:
    """`stages` of the stored columns, and p1 (a missing or non-positive one read as 1)."""
    st = stages(
        _num(score),
        _num(cheap),
        _num(local),
        list(decided),
        np.array([bool(c) for c in calib]),
        _num(audit),
        _num(cut),
        _num(p2),
    )
    p1 = _num(p)
    return st, np.where(np.isnan(p1) | (p1 <= 0), 1.0, p1)


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


def _trail(name: str) -> Any:
    """details.cascade.<name> in SQL (a JSON path on SQLite and PostgreSQL): no row's JSON
    is decoded in Python."""
    return _R.c.details[("cascade", name)]


def ppi_cells(
    store: Store,
    rubric: str,
    pick: Callable[[Any, Any, Any], str],
    start: datetime,
    end: datetime,
    bucket: timedelta,
) -> dict[tuple[str, str, datetime], Cell] | None:
    """The rubric's cells in [start, end), or None when no record in it is a cascade's;
    `TooManyRecords` past MAX_RECORDS (the trend then keeps today's numbers)."""
    at = bucket_time()
    query = sa_select(
        _R.c.prompt_version,
        _R.c.model,
        _R.c.feature,
        _R.c.epoch,
        at,
        _R.c.score,
        _R.c.inclusion_probability,
        _trail("cheap_score").as_float(),
        _trail("local_value").as_float(),
        _trail("decided_by").as_string(),
        _trail("calibration").as_boolean(),
        _trail("audit_rate").as_float(),
        _trail("certified_threshold").as_float(),
        _trail("p2").as_float(),
    ).where(
        _R.c.rubric == rubric,
        _R.c.status == "ok",
        _R.c.score.is_not(None),
        _R.c.method == "cascade",
        _R.c.created_at >= start,
        at >= start,
        at < end,
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query.limit(MAX_RECORDS + 1)).all()
    if len(rows) > MAX_RECORDS:
        raise TooManyRecords(f"over {MAX_RECORDS} cascade records in the window")
    if not rows:
        return None
    pv, m, feat, ep, when, score, p, cheap, local, decided, calib, audit, cut, p2 = zip(
        *rows, strict=True
    )

    st, p1 = _stages_of_rows(score, p, cheap, local, decided, calib, audit, cut, p2)
    index: dict[tuple[str, str, datetime], list[int]] = {}
    floors: dict[datetime, datetime] = {}
    for i in np.flatnonzero(st["keep"]):
        t = when[i]
        b = floors.get(t)
        if b is None:
            b = floors[t] = floor_time(as_utc(t), bucket)
        index.setdefault((pick(pv[i], m[i], feat[i]), ep[i], b), []).append(int(i))
    return {
        key: Cell(st["f"][ix], st["y"][ix], p1[ix], st["p2"][ix], st["judged"][ix])
        for key, ix in index.items()
    }


def cascade_stream(
    conn: Any, clock: Clock, rubric: str, labels: Any, key: Key, lo: datetime, hi: datetime
) -> Stream | None:
    """One group's cascade records counted in [lo, hi) on the check's clock, in write order
    (as `queries.scores_in_order`), as the regression check's PPI stream
    (`evaluator.analytics.ppi_regression`); None when it has none."""
    query = (
        sa_select(
            _R.c.score,
            _R.c.inclusion_probability,
            _trail("cheap_score").as_float(),
            _trail("local_value").as_float(),
            _trail("decided_by").as_string(),
            _trail("calibration").as_boolean(),
            _trail("audit_rate").as_float(),
            _trail("certified_threshold").as_float(),
            _trail("p2").as_float(),
        )
        .where(*_ok(clock, rubric, lo, hi), *match_labels(labels, key), _R.c.method == "cascade")
        .order_by(_R.c.created_at, _R.c.id)
        .limit(MAX_STREAM)
    )
    rows = conn.execute(query).all()
    if not rows:
        return None
    score, p, cheap, local, decided, calib, audit, cut, p2 = zip(*rows, strict=True)

    st, p1 = _stages_of_rows(score, p, cheap, local, decided, calib, audit, cut, p2)
    k = st["keep"]
    return Stream(st["f"][k], st["y"][k], st["judged"][k], st["p2"][k], p1[k])


def window_estimates(
    store: Store, rubric: str, start: datetime, end: datetime
) -> dict[tuple[str, str], dict[str, Any]]:
    """What a trend's group total shows (`estimator`, `mean`, `ci_low`, `ci_high`, `ess`) per
    (prompt version, epoch) of a cascade rubric over [start, end), for `/metrics`; empty
    when the rubric has no cheap stage there or the window holds over MAX_RECORDS records
    (its numbers then stay today's)."""
    if not has_cheap_stage(store, rubric, start):
        return {}
    try:
        cells = ppi_cells(store, rubric, lambda pv, _m, _f: pv or "", start, end, end - start)
    except TooManyRecords:
        return {}
    totals: dict[tuple[str, str], Cell] = {}
    for (label, ep, _b), cell in (cells or {}).items():  # ≤ 2 buckets of the window's length
        got = totals.get((label, ep))
        totals[(label, ep)] = cell if got is None else got + cell
    return {key: _shown(cell.result()) for key, cell in totals.items()}


def score_estimates(
    store: Store, rubrics: list[str], start: datetime, end: datetime
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """`window_estimates` of each rubric, keyed (rubric, prompt version, epoch) like the
    `/metrics` score rows (`evaluator.outputs.metrics.ScoreEstimates`): one indexed look for a
    rubric without a cheap stage. These cells count a record by its trace time, the score rows
    by when it was written."""
    return {
        (rubric, version, epoch): shown
        for rubric in rubrics
        for (version, epoch), shown in window_estimates(store, rubric, start, end).items()
    }


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
        got = totals.get((label, ep))
        totals[(label, ep)] = cell if got is None else got + cell
    for group in doc["groups"]:
        label, ep = group["key"] or "", group["epoch"]
        if (label, ep) in totals:
            group["total"].update(_shown(totals[(label, ep)].result()))
        for b in group["buckets"]:
            got = cells.get((label, ep, datetime.fromisoformat(b["start"])))
            if got is not None:
                b.update(_shown(got.result()))
