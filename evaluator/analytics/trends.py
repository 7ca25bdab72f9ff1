"""Score trends per rubric × label × time bucket: the document behind `evaluator trends`,
the HTTP endpoint and the page. A trend reads the hourly rollup (evaluator.analytics.rollups) up
to the last hour it holds, and the raw rows after it (at least the open hour, more when the
worker's cron has not rolled up recent hours yet). With `refresh=False` (the HTTP server)
it only reads: rollups are the cron's job, and a GET must write nothing.

    >>> sparkline([0.9, None, 0.5, 1.0])
    '▇ ▁█'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import col

from evaluator.analytics.ppi_trends import TooManyRecords, add_ppi, has_cheap_stage, ppi_cells
from evaluator.analytics.rollups import (
    EPOCH,
    HOUR,
    WEIGHTS,
    Acc,
    floor_time,
    merged_hist,
    ok_rows,
    refresh_rollups,
)
from evaluator.config.policy import parse_duration
from evaluator.store.models import EvalRecord, EvalRollup, table_of, utcnow
from evaluator.store.store import Store, as_utc

BY = ("prompt_version", "model", "feature", "none")
_BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class TrendQuery:
    rubric: str
    by: str = "prompt_version"
    since: timedelta = timedelta(days=7)
    bucket: timedelta = timedelta(days=1)

    @classmethod
    def parse(
        cls, rubric: str, by: str = "prompt_version", since: str = "7d", bucket: str = "1d"
    ) -> TrendQuery:
        if by not in BY:
            raise ValueError(f"--by must be one of {', '.join(BY)}, got {by!r}")
        b = parse_duration(bucket)
        if b % HOUR:
            raise ValueError(f"--bucket must be a whole number of hours, got {bucket!r}")
        s = parse_duration(since)
        if s / b > 2000:
            raise ValueError(f"--since {since} in --bucket {bucket} gives over 2000 buckets")
        return cls(rubric, by, s, b)


def trend(
    store: Store, q: TrendQuery, now: datetime | None = None, *, refresh: bool = True
) -> dict[str, Any]:
    """The trends document (see README, "Trends JSON"); buckets are UTC, aligned to the
    bucket size, the first one holding `now - since`."""
    now = as_utc(now or utcnow())
    if refresh:
        refresh_rollups(store, now, only_if_stale=True)
    start, hour_now = floor_time(now - q.since, q.bucket), floor_time(now, HOUR)
    rolled_until = min(hour_now, rolled_through(store))
    pick: Callable[[Any, Any, Any], str] = (
        (lambda pv, m, f: "")
        if q.by == "none"
        else (lambda pv, m, f: {"prompt_version": pv, "model": m, "feature": f}[q.by] or "")
    )

    # Rollup rows are summed per (label, epoch, bucket) first and their histograms merged
    # once per cell (one JSON parse and one bincount), not row by row: a 30-day trend reads
    # ~4,000 hourly rows, and per-row merging was most of its time. The epoch is part of
    # every key: a new evaluator starts a new series, it never moves an old one.
    parts: dict[tuple[str, str, datetime], list[Any]] = {}
    floors: dict[datetime, datetime] = {}
    seen: dict[str, list[Any]] = {}  # epoch -> [first hour, last hour, count]
    r = table_of(EvalRollup)
    rolled = sa_select(
        r.c.bucket,
        r.c.prompt_version,
        r.c.model,
        r.c.feature,
        r.c.epoch,
        r.c.n,
        r.c.total,
        r.c.total_sq,
        r.c.passes,
        r.c.pass_known,
        r.c.hist,
        *(r.c[w] for w in WEIGHTS),
    ).where(r.c.rubric == q.rubric, r.c.bucket >= start, r.c.bucket < rolled_until)
    with store.engine.connect() as conn:
        for at, pv, m, f, ep, n, tot, sq, passes, known, hist, *ws in conn.execute(rolled).all():
            b = floors.get(at)
            if b is None:
                b = floors[at] = floor_time(at, q.bucket)
            _saw(seen, ep, as_utc(at), n)
            # NULL weights: a cell whose weights are all 1.
            w = ws if ws[0] is not None else [n, tot, sq, n, passes]
            part = parts.get((pick(pv, m, f), ep, b))
            if part is None:
                parts[(pick(pv, m, f), ep, b)] = [n, tot, sq, passes, known, [hist], list(w)]
            else:
                part[0] += n
                part[1] += tot
                part[2] += sq
                part[3] += passes
                part[4] += known
                part[5].append(hist)
                part[6] = [a + x for a, x in zip(part[6], w, strict=True)]
        # The live hour by time only: with a rubric filter SQLite picks the (rubric, ...)
        # index and walks every record of the rubric; one hour of rows is cheap to filter.
        live = ok_rows(max(rolled_until, start), now + timedelta(microseconds=1))
        live_rows = [row for row in conn.execute(live) if row[0] == q.rubric]
    groups: dict[tuple[str, str], dict[datetime, Acc]] = {}
    for (label, ep, b), (n, tot, sq, passes, known, hists, w) in parts.items():
        groups.setdefault((label, ep), {})[b] = Acc(
            n, tot, sq, passes, known, merged_hist(hists), *w
        )
    for _rubric, pv, m, f, at, score, passed, ep, p in live_rows:
        _saw(seen, ep, floor_time(at, HOUR), 1)
        acc = groups.setdefault((pick(pv, m, f), ep), {}).setdefault(
            floor_time(at, q.bucket), Acc()
        )
        acc.add(float(score), passed, p)
    totals: dict[tuple[str, str], Acc] = {}
    for key, cells in groups.items():
        total = totals[key] = Acc()
        for acc in cells.values():
            total += acc
    order = {ep: i for i, ep in enumerate(sorted(seen, key=lambda e: (seen[e][0], e)))}
    doc = {
        "rubric": q.rubric,
        "by": q.by,
        "since": start.isoformat(),
        "until": now.isoformat(),
        "bucket": _fmt_duration(q.bucket),
        "bucket_seconds": int(q.bucket.total_seconds()),
        "confidence": 0.95,
        # mean, intervals and pass rate weight records by 1/p; p10/p50/p90 come from the
        # rollups' histograms, which count evaluated records: they are unweighted.
        "percentiles": "unweighted",
        # Where one evaluator (judges.provenance) gave way to another, in time order; hours
        # are UTC hour starts. Series of different epochs are never pooled or compared.
        "epochs": [
            {
                "epoch": ep,
                "first_hour": seen[ep][0].isoformat(),
                "last_hour": seen[ep][1].isoformat(),
                "count": seen[ep][2],
            }
            for ep in sorted(order, key=order.__getitem__)
        ],
        "groups": [
            {
                "key": None if q.by == "none" else (label or None),
                "epoch": ep,
                "total": totals[(label, ep)].to_json(),
                "buckets": [
                    {"start": b.isoformat(), **acc.to_json()}
                    for b, acc in sorted(groups[(label, ep)].items())
                ],
            }
            for label, ep in sorted(groups, key=lambda k: (k[0], order[k[1]]))
        ],
    }
    # A rubric with a cheap stage: each bucket names its estimator, PPI++ where it stands
    # (evaluator.analytics.ppi_trends); any other rubric's document is unchanged.
    if has_cheap_stage(store, q.rubric, start):
        end = now + timedelta(microseconds=1)
        try:
            first_stage = ppi_cells(store, q.rubric, pick, start, end, q.bucket)
        except TooManyRecords as exc:
            doc["ppi_skipped"] = str(exc)
        else:
            if first_stage is not None:
                add_ppi(doc, first_stage)
    return doc


def _saw(seen: dict[str, list[Any]], epoch: str, hour: datetime, n: int) -> None:
    got = seen.get(epoch)
    if got is None:
        seen[epoch] = [hour, hour, n]
    else:
        got[0], got[1], got[2] = min(got[0], hour), max(got[1], hour), got[2] + n


def rolled_through(store: Store) -> datetime:
    """The end of the last hour the rollup holds (EPOCH when empty): rows after it are live."""
    with store.engine.connect() as conn:
        last = conn.execute(sa_select(func.max(col(EvalRollup.bucket)))).scalar()
    return EPOCH if last is None else as_utc(last) + HOUR


def rubric_names(store: Store) -> list[str]:
    """Every rubric with ok scores: from the rollup, plus records not rolled up yet."""
    since = rolled_through(store)
    with store.engine.connect() as conn:
        rolled = conn.execute(sa_select(col(EvalRollup.rubric)).distinct()).scalars().all()
        live = conn.execute(
            sa_select(col(EvalRecord.rubric))
            .where(col(EvalRecord.created_at) >= since, col(EvalRecord.status) == "ok")
            .distinct()
        ).scalars()
        return sorted(set(rolled) | set(live))


def worst_traces(
    store: Store, rubric: str, by: str, key: str | None, start: datetime, end: datetime, k: int = 5
) -> list[dict[str, Any]]:
    """The lowest scores of one trend cell: where to look first."""
    r = EvalRecord
    query = sa_select(
        col(r.trace_id), col(r.span_id), col(r.score), col(r.created_at), col(r.explanation)
    ).where(
        col(r.rubric) == rubric,
        col(r.status) == "ok",
        col(r.score).is_not(None),
        col(r.created_at) >= start,
        col(r.created_at) < end,
    )
    if by != "none":
        c = getattr(r, by)
        query = query.where(c.is_(None) if key is None else c == key)
    query = query.order_by(col(r.score), col(r.created_at).desc()).limit(k)
    with store.engine.connect() as conn:
        return [
            {
                "trace_id": t,
                "span_id": s,
                "score": sc,
                "created_at": as_utc(at).isoformat(),
                "explanation": ex[:300],
            }
            for t, s, sc, at, ex in conn.execute(query).all()
        ]


def _fmt_duration(d: timedelta) -> str:
    secs = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


# --- terminal ---------------------------------------------------------------------------------


def _estimator_tag(total: dict[str, Any]) -> str:
    """A rubric with a cheap stage says which estimator gave the mean (ppi++ or hajek)."""
    return f" ({total['estimator']})" if "estimator" in total else ""


def _epoch_tag(group: dict[str, Any], epochs: list[dict[str, Any]]) -> str:
    return f" @{group['epoch']}" if len(epochs) > 1 and group.get("epoch") else ""


def sparkline(
    values: Sequence[float | None], lo: float | None = None, hi: float | None = None
) -> str:
    """One block per value on a common scale; None (empty bucket) is a space."""
    seen = [v for v in values if v is not None]
    if not seen:
        return " " * len(values)
    lo = min(seen) if lo is None else lo
    hi = max(seen) if hi is None else hi
    span = hi - lo
    top = len(_BLOCKS) - 1
    return "".join(
        " "
        if v is None
        else _BLOCKS[top if span <= 0 else min(top, max(0, round((v - lo) / span * top)))]
        for v in values
    )


def trends_table(doc: dict[str, Any]) -> str:
    since = doc["since"][:16].replace("T", " ")
    head = f"{doc['rubric']} by {doc['by']}, since {since} UTC, {doc['bucket']} buckets"
    if not doc["groups"]:
        return head + "\nno ok eval records in this range"
    step = timedelta(seconds=doc["bucket_seconds"])
    first = datetime.fromisoformat(doc["since"])
    count = int((datetime.fromisoformat(doc["until"]) - first) / step) + 1
    means = [v["mean"] for g in doc["groups"] for v in g["buckets"]]
    lo, hi = min(means), max(means)
    lines = [head, f"sparklines: mean per bucket, scale {lo:.3f} .. {hi:.3f}"]
    epochs = doc.get("epochs", [])
    if len(epochs) > 1:  # an evaluator change: separate series, never a drop
        lines.append(
            "evaluator epochs (series are split, not compared): "
            + ", ".join(f"{e['epoch']} from {e['first_hour'][:13]}h" for e in epochs)
        )
    for g in doc["groups"]:
        t = g["total"]
        by_start = {b["start"]: b["mean"] for b in g["buckets"]}
        spark = sparkline(
            [by_start.get((first + step * i).isoformat()) for i in range(count)], lo, hi
        )
        pr = "-" if t["pass_rate"] is None else f"{t['pass_rate']:.1%}"
        lines += [
            "",
            f"{g['key'] or '(none)'}{_epoch_tag(g, epochs)}  n={t['count']}  mean {t['mean']:.3f} "
            f"[{t['ci_low']:.3f}, {t['ci_high']:.3f}]{_estimator_tag(t)}  pass {pr}  {spark}",
            f"  {'bucket':<17}{'n':>7} {'mean':>6} {'95% CI':>16} {'pass':>7} "
            f"{'p10':>5} {'p50':>5} {'p90':>5}",
        ]
        for b in g["buckets"]:
            bpr = "-" if b["pass_rate"] is None else f"{b['pass_rate']:.1%}"
            lines.append(
                f"  {b['start'][:16].replace('T', ' '):<17}{b['count']:>7} {b['mean']:>6.3f} "
                f"[{b['ci_low']:.3f}, {b['ci_high']:.3f}] {bpr:>7} {b['p10']:>5.2f} "
                f"{b['p50']:>5.2f} {b['p90']:>5.2f}"
            )
    return "\n".join(lines)
