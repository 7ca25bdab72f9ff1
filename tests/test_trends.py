"""Trends from the hourly rollup + the live hour, on real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import statistics
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session

from evaluator.analytics.rollups import merged_hist, refresh_rollups
from evaluator.analytics.trends import TrendQuery, sparkline, trend, trends_table
from evaluator.cli.main import main
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from tests.conftest import REDIS_URL, make_settings

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


def add(store: Store, rows: list[tuple[str, datetime, float]], rubric: str = "faith") -> None:
    with Session(store.engine) as session:
        session.add_all(
            EvalRecord(
                trace_id=f"t{i}-{uuid.uuid4().hex}",
                rubric=rubric,
                rubric_version="1",
                scorer="faithfulness",
                status="ok",
                score=s,
                passed=s >= 0.7,
                prompt_version=pv,
                model="m",
                feature="qa",
                created_at=at,
            )
            for i, (pv, at, s) in enumerate(rows)
        )
        session.add(
            EvalRecord(
                trace_id=f"err-{uuid.uuid4().hex}",
                rubric=rubric,
                rubric_version="1",
                scorer="x",
                status="error",
                score=None,
                created_at=NOW - timedelta(hours=1),
            )
        )
        session.commit()


def test_buckets_match_a_direct_computation_including_the_live_hour(store: Store) -> None:
    day1 = [0.9, 0.8, 1.0, 0.6, 0.95] * 4
    rows = [("v1", NOW - timedelta(days=1, hours=3, minutes=i), s) for i, s in enumerate(day1)]
    live = [0.2, 0.4, 0.3]  # in the current (not yet rolled-up) hour
    rows += [("v2", NOW - timedelta(minutes=5 + i), s) for i, s in enumerate(live)]
    add(store, rows)
    doc = trend(store, TrendQuery.parse("faith", since="3d", bucket="1d"), NOW)
    assert [g["key"] for g in doc["groups"]] == ["v1", "v2"]
    v1, v2 = doc["groups"]
    (b,) = v1["buckets"]
    assert b["start"] == "2026-03-09T00:00:00+00:00" and b["count"] == 20
    assert b["mean"] == pytest.approx(statistics.mean(day1))
    assert b["pass_rate"] == pytest.approx(16 / 20)
    assert (b["p10"], b["p50"], b["p90"]) == (0.6, 0.9, 1.0)
    assert b["ci_low"] < b["mean"] < b["ci_high"]
    assert v2["buckets"][0]["count"] == 3 and v2["total"]["mean"] == pytest.approx(0.3)
    assert doc["bucket"] == "1d" and doc["bucket_seconds"] == 86400


def test_rollup_refresh_is_idempotent_and_picks_up_late_rows(store: Store) -> None:
    add(store, [("v1", NOW - timedelta(hours=5), 0.5)])
    assert refresh_rollups(store, NOW) == 1
    refresh_rollups(store, NOW)
    # A row of the last rolled hour that commits late is re-folded on the next refresh.
    add(store, [("v1", NOW - timedelta(hours=5, minutes=-1), 1.0)])
    doc = trend(store, TrendQuery.parse("faith", since="1d", bucket="1h"), NOW)
    (g,) = doc["groups"]
    assert g["total"]["count"] == 2 and g["total"]["mean"] == pytest.approx(0.75)


def test_group_by_none_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="whole number of hours"):
        TrendQuery.parse("faith", bucket="30m")
    with pytest.raises(ValueError, match="--by"):
        TrendQuery.parse("faith", by="tenant")
    assert sparkline([0.5, None, 1.0, 0.75]) == "▁ █▅"


def test_trends_command_prints_table_with_sparklines_and_stable_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, REDIS_URL)
    store = Store(settings.database.url)
    now = datetime.now(UTC)
    add(
        store,
        [
            (pv, now - timedelta(days=d, hours=1), 0.9 - 0.1 * d * (pv == "v2"))
            for d in range(3)
            for pv in ("v1", "v2")
            for _ in range(3)
        ],
    )
    store.close()
    args = ["--settings", str(tmp_path / "settings.toml"), "trends", "--rubric", "faith"]
    assert main([*args, "--since", "7d", "--bucket", "1d"]) == 0
    out = capsys.readouterr().out
    assert "faith by prompt_version" in out and "v2  n=9" in out
    assert any(ch in out for ch in "▁▂▃▄▅▆▇█")
    assert main([*args, "--json", "--by", "none"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {
        "rubric",
        "by",
        "since",
        "until",
        "bucket",
        "bucket_seconds",
        "confidence",
        "percentiles",
        "epochs",
        "groups",
    }
    assert doc["percentiles"] == "unweighted"
    (g,) = doc["groups"]
    assert g["key"] is None and g["total"]["count"] == 18
    assert g["total"]["ci_level"] == doc["confidence"] == 0.95  # each interval says its level
    assert set(g["buckets"][0]) == {
        "start",
        "count",
        "ess",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "pass_rate",
        "pass_rate_ci_low",
        "pass_rate_ci_high",
        "ci_level",
        "p10",
        "p50",
        "p90",
    }
    assert "no ok eval records" in trends_table({**doc, "groups": []})


@given(
    st.lists(
        st.dictionaries(st.integers(-300, 300), st.integers(1, 10**6), max_size=20), max_size=30
    )
)
def test_merged_hist_sums_stored_histograms_like_counters(hists: list[dict[int, int]]) -> None:
    stored = [json.dumps([x for item in sorted(h.items()) for x in item]) for h in hists]
    expected: Counter[int] = Counter()
    for h in hists:
        expected.update(h)
    assert merged_hist(stored) == expected
