"""One clock for the regression windows (evaluator.analytics.queries.Clock), on SQLite and
PostgreSQL: a record counts at its trace time clamped into [written − max_lag, written].

The bug it fixes: a new group was dated by its first *write*, its stream read by *trace*
time, so every trace of the first burst that happened before the first write was dropped
(baseline n = 40, current n = 0: no alert on a new prompt version's first traffic).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from evaluator.analytics.alerts import policy_for
from evaluator.analytics.findings import check_rubric
from evaluator.analytics.queries import Clock, first_seen, scores_in_order
from evaluator.config.rubrics import parse_rubric
from evaluator.config.settings import AlertsSettings, load_settings
from evaluator.errors import SettingsError
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LAG = timedelta(hours=1)
RUBRIC = 'name = "faith"\nversion = "1"\nscorer = "faithfulness"\npass_threshold = 0.5\n'
GROUP = ("prompt_version", "model", "feature", "epoch")


def record(i: int, version: str, score: float, written: datetime, happened: datetime | None,
           prefix: str = "") -> EvalRecord:  # fmt: skip
    return EvalRecord(
        trace_id=f"{prefix or version}-{i}", rubric="faith", rubric_version="1",
        scorer="faithfulness", status="ok", score=score, passed=score >= 0.5,
        created_at=written, trace_at=happened, epoch="legacy",
        prompt_version=version, model="gpt-4o", feature="qa",
    )  # fmt: skip


def burst(version: str, scores: list[float], done: datetime, rng: random.Random,
          spread: timedelta) -> list[EvalRecord]:  # fmt: skip
    """A burst of traces that happened over `spread` before `done`, each written a few
    seconds to minutes after it happened, in an order that is not the traces' order."""
    out = []
    for i, s in enumerate(scores):
        happened = done - spread * rng.random()
        written = min(done, happened + timedelta(seconds=rng.uniform(1, 600)))
        out.append(record(i, version, s, written, happened))
    return out


def put(store: Store, rows: list[EvalRecord]) -> None:
    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()


def version_finding(store: Store, now: datetime, lag: timedelta = LAG, min_samples: int = 10):  # type: ignore[no-untyped-def]
    rubric = parse_rubric(
        RUBRIC + f'[regression]\nwindow = "1h"\nmin_samples = {min_samples}\n',
        source=Path("faith.toml"),
    )
    cfg = policy_for(rubric, AlertsSettings())
    with Session(store.engine) as session:
        findings, _ = check_rubric(session, "faith", cfg, 0.5, now, lag)
    return [f for f in findings if f.kind == "version"]


@pytest.mark.parametrize("seed", range(5))
def test_a_new_versions_first_burst_is_seen_whole(store: Store, seed: int) -> None:
    """Seeded: 40 passing v1, then 40 failing v2 whose traces all happened before most of
    them were written. The version check's stream holds all 40 v2 records, and pages."""
    rng = random.Random(seed)
    v2_done = NOW - timedelta(seconds=30)
    v1_done = v2_done - timedelta(minutes=20)
    v1 = burst("v1", [rng.uniform(0.8, 1.0) for _ in range(40)], v1_done, rng,
               timedelta(minutes=10))  # fmt: skip
    v2 = burst("v2", [rng.uniform(0.0, 0.2) for _ in range(40)], v2_done, rng,
               timedelta(minutes=10))  # fmt: skip
    earliest = min(r.trace_at for r in v2 if r.trace_at is not None)
    put(store, v1 + v2)
    (f,) = version_finding(store, NOW)
    assert f.labels["prompt_version"] == "v2"
    assert f.fixed is not None and f.fixed.current.n == 40  # every v2 record, from the first
    assert f.fixed.baseline.n == 40
    assert f.window_start == earliest  # dated by its earliest trace, not its first write
    assert f.alarm


def test_the_clamp_bounds_a_skewed_client_clock(store: Store) -> None:
    """A trace claiming a year ago counts at written − max_lag; one claiming the future (not
    possible through the pipeline, which clamps, but a hand-written row) at written."""
    written = NOW - timedelta(minutes=5)
    put(store, [
        record(0, "v9", 0.1, written, written - timedelta(days=365)),
        record(1, "v9", 0.1, written, written + timedelta(days=3)),
        record(2, "v9", 0.1, written, written - timedelta(minutes=20)),
        record(3, "v9", 0.1, written, None),
    ])  # fmt: skip
    key = ("v9", "gpt-4o", "qa", "legacy")
    with Session(store.engine) as session:
        clock = Clock.of(session, LAG)
        assert first_seen(session, clock, "faith", GROUP, key, NOW - timedelta(days=7)) == (
            written - LAG
        )
        from sqlalchemy import select

        rows = (
            session.connection()
            .execute(select(EvalRecord.trace_id, clock.at).order_by(EvalRecord.trace_id))
            .all()
        )
        at = {t: (v if v.tzinfo else v.replace(tzinfo=UTC)) for t, v in rows}
    assert at == {
        "v9-0": written - LAG,
        "v9-1": written,
        "v9-2": written - timedelta(minutes=20),
        "v9-3": written,
    }


def test_the_clamp_keeps_microseconds(store: Store) -> None:
    """SQLite shifts the text's whole seconds and keeps its fraction: no record moves by a
    sub-second amount, so order and window edges are exact."""
    written = NOW - timedelta(minutes=5, microseconds=123_457)
    put(store, [record(0, "v1", 0.5, written, written - timedelta(days=2))])
    with Session(store.engine) as session:
        clock = Clock.of(session, timedelta(minutes=30))
        inside = scores_in_order(session, clock, "faith", GROUP, ("v1", "gpt-4o", "qa", "legacy"),
                                 written - timedelta(minutes=30), NOW)  # fmt: skip
        edge = written - timedelta(minutes=30) + timedelta(microseconds=1)
        outside = scores_in_order(session, clock, "faith", GROUP,
                                  ("v1", "gpt-4o", "qa", "legacy"), edge, NOW)  # fmt: skip
    assert [s for s, _ in inside] == [0.5]
    assert outside == []


def test_streams_fold_in_write_order(store: Store) -> None:
    """The e-process folds records in the order they were written, not their trace order."""
    written = NOW - timedelta(minutes=30)
    rows = [
        record(i, "v1", s, written + timedelta(seconds=i), written - timedelta(seconds=10 * i))
        for i, s in enumerate([0.1, 0.2, 0.3, 0.4])
    ]
    put(store, rows)
    with Session(store.engine) as session:
        clock = Clock.of(session, LAG)
        got = scores_in_order(session, clock, "faith", GROUP, ("v1", "gpt-4o", "qa", "legacy"),
                              NOW - LAG, NOW)  # fmt: skip
    assert [s for s, _ in got] == [0.1, 0.2, 0.3, 0.4]


def test_max_lag_setting(tmp_path: Path) -> None:
    assert load_settings(environ={}).alerts.max_lag_delta == timedelta(hours=1)
    env = {"EVALUATOR_ALERTS__MAX_LAG": "30m"}
    assert load_settings(environ=env).alerts.max_lag_delta == timedelta(minutes=30)
    for bad in ("3d", "1.5s", "soon"):
        with pytest.raises(SettingsError, match="max_lag"):
            load_settings(environ={"EVALUATOR_ALERTS__MAX_LAG": bad})
