"""Inverse-probability weighted trends: equal to today's numbers with every p = 1, the Hájek
mean where rates differ, records bucketed by their trace's time, and unbiased over seeds."""

from __future__ import annotations

import random
import statistics
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from evalcore.weights import WeightedStats
from evaluator.analytics.rollups import refresh_rollups
from evaluator.analytics.trends import TrendQuery, trend
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


Row = tuple[datetime, float, float | None, datetime | None]  # created, score, p, trace_at


def add(store: Store, rows: list[Row], rubric: str = "faith") -> None:
    with Session(store.engine) as session:
        session.add_all(
            EvalRecord(
                trace_id=f"t-{uuid.uuid4().hex}",
                rubric=rubric,
                rubric_version="1",
                scorer="faithfulness",
                status="ok",
                score=s,
                passed=s >= 0.7,
                prompt_version="v1",
                created_at=at,
                inclusion_probability=p,
                trace_at=trace_at,
            )
            for at, s, p, trace_at in rows
        )
        session.commit()


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
    else:
        assert a == b


def _doc(store: Store, rubric: str = "faith") -> dict:
    q = TrendQuery.parse(rubric, by="none", since="3d", bucket="1d")
    return trend(store, q, now=NOW)


def test_probability_one_gives_exactly_todays_numbers(store: Store) -> None:
    rng = random.Random(7)
    rows = [(NOW - timedelta(hours=rng.uniform(0, 50)), round(rng.random(), 2)) for _ in range(300)]
    add(store, [(at, s, None, None) for at, s in rows])  # rows from before 0007: NULL = 1
    add(store, [(at, s, 1.0, None) for at, s in rows], rubric="same")  # p = 1 stated
    refresh_rollups(store, NOW)
    before, after = _doc(store), _doc(store, "same")
    # Equal up to the order of float summation (PostgreSQL sums partitions in any order).
    _assert_same(before["groups"], after["groups"])
    # And both equal the plain mean: no weighting happened.
    total = after["groups"][0]["total"]
    assert total["mean"] == pytest.approx(statistics.fmean(s for _, s in rows), abs=1e-12)
    assert total["ess"] == total["count"] == 300


def test_weighted_mean_is_hajek_and_ess_is_shown(store: Store) -> None:
    # 10 high scores sampled at p=1 (a tail rule), 10 low ones at p=0.1 (they stand for 100).
    at = NOW - timedelta(days=1)
    rows: list[Row] = [(at, 0.9, 1.0, None)] * 10 + [(at, 0.2, 0.1, None)] * 10
    add(store, rows)
    refresh_rollups(store, NOW)
    add(store, [(NOW - timedelta(minutes=5), 0.5, 0.5, None)])  # the live hour, weight 2
    total = _doc(store)["groups"][0]["total"]
    expected = (10 * 0.9 + 100 * 0.2 + 2 * 0.5) / (10 + 100 + 2)
    assert total["mean"] == pytest.approx(expected)
    assert total["ess"] == pytest.approx(112**2 / (10 + 10 * 100 + 4))
    assert total["count"] == 21
    assert total["ci_low"] < expected < total["ci_high"]


def test_records_bucket_by_their_traces_time(store: Store) -> None:
    # Written today (a deferred or batch result) for a trace of two days ago.
    two_days = NOW - timedelta(days=2, hours=1)
    add(store, [(NOW - timedelta(hours=3), 0.4, 1.0, two_days)])
    refresh_rollups(store, NOW)
    buckets = _doc(store)["groups"][0]["buckets"]
    assert [b["start"][:10] for b in buckets] == [two_days.date().isoformat()]
    # A later late record for an hour already rolled up re-folds that hour, not patches it.
    add(store, [(NOW - timedelta(minutes=50), 0.8, 1.0, two_days + timedelta(minutes=5))])
    refresh_rollups(store, NOW + timedelta(hours=1))
    (bucket,) = _doc(store)["groups"][0]["buckets"]
    assert bucket["count"] == 2 and bucket["mean"] == pytest.approx(0.6)


def test_hajek_estimate_is_unbiased_when_rates_change_over_the_day() -> None:
    # A day whose quality falls in the afternoon, sampled at 50 % in the morning (a boost)
    # and 5 % after: the plain mean over-weights the morning, the Hájek mean does not.
    errors_plain, errors_hajek = [], []
    for seed in range(200):
        rng = random.Random(seed)
        traces = [(h, rng.betavariate(8, 2) if h < 12 else rng.betavariate(5, 5))
                  for h in range(24) for _ in range(200)]  # fmt: skip
        truth = statistics.fmean(s for _, s in traces)
        sampled = [(s, 0.5 if h < 12 else 0.05) for h, s in traces]
        kept = [(s, p) for s, p in sampled if rng.random() < p]
        errors_hajek.append(WeightedStats.from_scores(kept).mean - truth)
        errors_plain.append(statistics.fmean(s for s, _ in kept) - truth)
    assert abs(statistics.fmean(errors_hajek)) < 0.002  # unbiased within noise
    assert statistics.fmean(errors_plain) > 0.1  # the unweighted mean is far off
