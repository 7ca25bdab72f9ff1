"""Trends of a cascade rubric (a cheap stage on every record, the judge on some): each bucket
names its estimator, PPI++ where it stands (evalcore.ppi.shows_ppi), with the judge-only
Hájek estimate beside it; the numbers are evalcore.ppi's on the records' own cheap scores and
probabilities; a rubric without a cheap stage keeps today's document. On SQLite and
PostgreSQL (the `store` fixture)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlmodel import Session

from evalcore.ppi import ppi_mean
from evaluator.analytics.trends import TrendQuery, trend, trends_table
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
CUT, AUDIT, P1 = 0.7, 0.2, 0.5


def cascade_day(store: Store, day: datetime, n: int, seed: int) -> dict[str, np.ndarray]:
    """n drawn traces of one day through the cascade's routing: judged below the certified
    threshold, judged in the calibration draw above it, else passed locally."""
    rng = np.random.default_rng(seed)
    f = rng.random(n)
    y = (rng.random(n) < 0.1 + 0.8 * f).astype(float)
    calib = rng.random(n) < AUDIT
    judged = (f < CUT) | calib
    p2 = np.where(f < CUT, 1.0, AUDIT)
    records = []
    for i in range(n):
        trail = {"cheap_score": float(f[i]), "local_value": float(f[i]),
                 "calibration": bool(calib[i]), "audit_rate": AUDIT,
                 "certified_threshold": CUT,
                 "decided_by": "judge" if judged[i] else "local_certified"}  # fmt: skip
        score = float(y[i]) if judged[i] else float(f[i])
        records.append(EvalRecord(
            trace_id=f"t-{uuid.uuid4().hex}", rubric="casc", rubric_version="1",
            scorer="faithfulness", method="cascade", status="ok", score=score,
            passed=score >= 0.5, details={"cascade": trail}, prompt_version="v1",
            created_at=day + timedelta(minutes=i % 600), inclusion_probability=P1,
        ))  # fmt: skip
    with Session(store.engine) as session:
        session.add_all(records)
        session.commit()
    return {"f": f, "y": np.where(judged, y, np.nan), "judged": judged, "p2": p2}


def plain_day(store: Store, day: datetime, n: int) -> None:
    with Session(store.engine) as session:
        session.add_all(
            EvalRecord(
                trace_id=f"t-{uuid.uuid4().hex}",
                rubric="plain",
                rubric_version="1",
                scorer="faithfulness",
                method="two_step",
                status="ok",
                score=0.8,
                passed=True,
                prompt_version="v1",
                created_at=day + timedelta(minutes=i),
                inclusion_probability=0.5,
            )
            for i in range(n)
        )
        session.commit()


def test_cascade_buckets_name_their_estimator_and_match_evalcore(store: Store) -> None:
    big_day, small_day = datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC)
    big = cascade_day(store, big_day, 400, seed=1)
    small = cascade_day(store, small_day, 40, seed=2)
    plain_day(store, big_day, 50)
    q = TrendQuery.parse("casc", by="none", since="3d", bucket="1d")
    doc = trend(store, q, now=NOW)
    buckets = {b["start"][:10]: b for b in doc["groups"][0]["buckets"]}
    b = buckets["2026-03-09"]
    want = ppi_mean(big["y"], big["judged"], big["f"], big["p2"], np.full(400, P1))
    assert want.ppi is not None
    assert b["estimator"] == "ppi++" and b["ppi"]["n_judged"] == int(big["judged"].sum())
    assert b["mean"] == pytest.approx(want.ppi.mean, rel=1e-9)
    assert (b["ci_low"], b["ci_high"]) == pytest.approx((want.ppi.ci_low, want.ppi.ci_high))
    assert b["judge_only"]["mean"] == pytest.approx(want.judge_only.mean, rel=1e-9)
    assert b["judge_only"]["estimator"] == "hajek"
    # Fewer than 100 judged with unequal weights: the judge-only Hájek estimate stands.
    s = buckets["2026-03-08"]
    assert int(small["judged"].sum()) < 100
    assert s["estimator"] == "hajek" and s["mean"] == pytest.approx(s["judge_only"]["mean"])
    assert doc["groups"][0]["total"]["estimator"] == "ppi++"
    other = trend(store, TrendQuery.parse("plain", by="none", since="3d", bucket="1d"), now=NOW)
    for bucket in other["groups"][0]["buckets"] + [other["groups"][0]["total"]]:
        assert "estimator" not in bucket and "judge_only" not in bucket
        assert bucket["mean"] == pytest.approx(0.8)


def test_the_table_names_the_estimator_of_a_cascade_rubric(store: Store) -> None:
    cascade_day(store, datetime(2026, 3, 9, tzinfo=UTC), 400, seed=3)
    doc = trend(store, TrendQuery.parse("casc", by="none", since="3d", bucket="1d"), now=NOW)
    assert "] (ppi++)  pass" in trends_table(doc)


def test_a_bucket_without_a_judged_record_keeps_todays_numbers(store: Store) -> None:
    day = datetime(2026, 3, 9, tzinfo=UTC)
    with Session(store.engine) as session:
        trail = {"cheap_score": 0.9, "local_value": 0.9, "calibration": False,
                 "audit_rate": AUDIT, "certified_threshold": CUT,
                 "decided_by": "local_certified"}  # fmt: skip
        session.add_all(
            EvalRecord(trace_id=f"t-{i}", rubric="casc", rubric_version="1",
                       scorer="faithfulness", method="cascade", status="ok", score=0.9,
                       passed=True, details={"cascade": trail}, prompt_version="v1",
                       created_at=day + timedelta(minutes=i), inclusion_probability=P1)
            for i in range(5)
        )  # fmt: skip
        session.commit()
    doc = trend(store, TrendQuery.parse("casc", by="none", since="3d", bucket="1d"), now=NOW)
    b = doc["groups"][0]["buckets"][0]
    assert b["estimator"] == "all-records" and b["mean"] == pytest.approx(0.9)
    assert b["judge_only"]["n_judged"] == 0 and b["judge_only"]["mean"] is None
    assert "(all-records)" in trends_table(doc)


def test_past_the_raw_read_cap_the_trend_keeps_todays_numbers(store, monkeypatch) -> None:
    monkeypatch.setattr("evaluator.analytics.ppi_trends.MAX_RECORDS", 100)
    cascade_day(store, datetime(2026, 3, 9, tzinfo=UTC), 150, seed=4)
    doc = trend(store, TrendQuery.parse("casc", by="none", since="3d", bucket="1d"), now=NOW)
    assert doc["ppi_skipped"] == "over 100 cascade records in the window"
    assert "estimator" not in doc["groups"][0]["buckets"][0]
