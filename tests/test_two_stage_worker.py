"""The cascade's two stages through the worker's pipeline: real Redis, real SQLite, the real
local scorer and router; the judge is respx.

With a certification and `options.judge_rate` above the audit rate, stage 2 sends the judge
the certified-pass traces whose cluster point falls below the p2|1 the record states (the
calibration clusters among them), the others pass locally; every record carries p1 and
p2|1, and the trend's PPI++ cells read them. With a CPU budget the cheap stage cannot keep,
traces get a skipped record naming it, and the others an inclusion probability of p1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import respx

from evalcore.routing import draw_point
from evaluator.analytics.ppi_trends import ppi_cells
from evaluator.sources.ingest import ingest_traces
from evaluator.store.store import Store
from evaluator.worker.cascade_routing import calibration_point
from evaluator.worker.pipeline import evaluate_trace
from evaluator.worker.runtime import build_runtime
from tests.cascade_support import (
    GROUNDED,
    JUDGE,
    cascade_rubric,
    certify,
    grounded_case,
    mock_judge,
    stratum_for,
    trace,
)
from tests.conftest import make_settings

pytest.importorskip("judges.scorers.local")

RUBRIC = cascade_rubric(0.1) + "judge_rate = 0.5\n"


@pytest.fixture
def judge_api() -> Iterator[respx.Route]:
    yield from mock_judge()


async def test_stage_two_draws_with_the_stated_p2_and_records_carry_it(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "faithfulness.toml").write_text(RUBRIC)
    settings = make_settings(tmp_path, redis_url, judge=JUDGE)
    store = Store(settings.database.url)
    runtime = build_runtime(settings)
    cert = certify(runtime, stratum_for(grounded_case("c")), 0.5, prompt_version="v1")
    docs = [trace(f"t{i}", GROUNDED, f"sess-{i}") for i in range(40)]
    ingest_traces(store, docs)
    for d in docs:
        await evaluate_trace(runtime, d["trace_id"], {}, job_try=1)
    rows = store.records(limit=100)
    assert len(rows) == 40
    kinds = {"calibration": 0, "stage2": 0, "local": 0}
    for row in rows:
        trail = row.details["cascade"]
        p2, point = trail["p2"], calibration_point(trail["cluster"], "faithfulness")
        assert trail["p1"] == 1.0 and row.inclusion_probability == 1.0
        assert trail["certification"] == cert  # the certified-pass region
        assert 0.1 <= p2 <= 1.0  # at least the audit rate in the pass region
        if point < p2:  # drawn: the judge decides, and says why
            assert trail["decided_by"] == "judge" and row.judge_calls == 1
            assert trail["calibration"] == (point < 0.1)
            kinds["calibration" if point < 0.1 else "stage2"] += 1
        else:
            assert trail["decided_by"] == "local_certified" and row.judge_calls == 0
            kinds["local"] += 1
    assert all(kinds.values()), kinds  # each kind happened (hashes: found, not chosen)
    assert judge_api.call_count == kinds["calibration"] + kinds["stage2"]

    # The trend reads the stated p2|1 (a stage-2 draw is not mistaken for p2|1 = 1).
    now = datetime.now(UTC)
    start = now - timedelta(days=400)  # the traces' own times are clamped, not today's
    cells = ppi_cells(
        store, "faithfulness", lambda *_: "", start, now + timedelta(hours=1), timedelta(days=800)
    )
    assert cells is not None
    (cell,) = cells.values()
    stated = sorted(r.details["cascade"]["p2"] for r in rows)
    assert np.allclose(sorted(cell.p2), stated) and cell.judged.sum() == judge_api.call_count
    store.close()
    await runtime.aclose()


async def test_over_the_cpu_budget_the_cheap_stage_is_skipped_with_its_p1_recorded(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "faithfulness.toml").write_text(RUBRIC)
    budget = {"cheap_cpu_per_s": 1e-6, "cheap_cpu_burst_s": 1e-6}  # far below one score
    settings = make_settings(tmp_path, redis_url, judge=JUDGE, two_stage=budget)
    store = Store(settings.database.url)
    runtime = build_runtime(settings)
    # After the first score the bucket is in debt for hours: p1 is the floor, 0.01, and a
    # trace runs when its stage-1 point is below it. IDs found on both sides of that draw.
    ids = [f"c{i}" for i in range(2000)]
    lucky = next(t for t in ids if draw_point("stage1", "faithfulness", t) < 0.01)
    rest = [t for t in ids if draw_point("stage1", "faithfulness", t) >= 0.01][:8]
    order = ["first", *rest[:4], lucky, *rest[4:]]
    docs = [trace(t, GROUNDED, f"sess-{t}") for t in order]
    ingest_traces(store, docs)
    for d in docs:
        await evaluate_trace(runtime, d["trace_id"], {}, job_try=1)
    rows = {r.trace_id: r for r in store.records(limit=100)}
    assert set(rows) == set(order)  # none silently dropped
    assert rows["first"].status == "ok" and rows["first"].inclusion_probability == 1.0
    for t in rest:
        row = rows[t]
        assert row.status == "skipped" and "CPU budget" in (row.explanation or "")
        assert row.details["cascade"]["p1"] == pytest.approx(0.01) and row.judge_calls == 0
    row = rows[lucky]  # scored at p1 = 0.01: its inclusion probability is the intake's × p1
    assert row.status == "ok" and row.details["cascade"]["p1"] == pytest.approx(0.01)
    assert row.inclusion_probability == pytest.approx(0.01)
    assert row.details["cascade"]["cpu_ms"] > 0
    store.close()
    await runtime.aclose()
