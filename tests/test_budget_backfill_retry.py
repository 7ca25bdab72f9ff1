"""`evaluator backfill` and `evaluator retry` under a judge budget, against real Redis and
SQLite with a real burst worker: every evaluation they queue is charged to the budget's
counters by the intake's own admission script, a trace all its rubrics or none; what the
cap has no room for is not queued and the command says so (exit 5)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from evaluator.cli.exit_codes import BUDGET
from evaluator.cli.main import main
from evaluator.config.settings import Settings
from evaluator.store import admissions, outbox
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.worker.app import run_burst

from .conftest import write_rubric
from .test_backfill import LOCAL_FAITHFULNESS, queued, records, run_cli, setup

SECOND = LOCAL_FAITHFULNESS.replace('name = "grounded"', 'name = "grounded2"')
# Every minute alone (no carry): 5 evaluations, so two traces of two rubrics each fit.
BUDGET_5 = {"calls_per_minute": 5, "carry": False}


def _charged(settings: Settings) -> int:
    """Evaluations charged to the shared budget today (every day key, to be safe at 0:00)."""
    client = redis.Redis.from_url(settings.redis.url)
    try:
        keys = client.keys(f"{settings.redis.key_prefix}:budget:used:[*]:d:*")
        return sum(int(client.get(k) or 0) for k in keys)
    finally:
        client.close()


def _sql_admitted(settings: Settings) -> int:
    """Admission rows in SQL (the budget's durable source of truth), every day."""
    store = Store(settings.database.url)
    try:
        table = admissions.BudgetAdmission.__table__  # type: ignore[attr-defined]
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        store.close()


def _two_rubrics(tmp_path: Path, redis_url: str, **budget: Any) -> tuple[Settings, Path]:
    settings, path = setup(
        tmp_path, redis_url, LOCAL_FAITHFULNESS.format(version="1"), n=5, budget=budget
    )
    write_rubric(tmp_path / "rubrics", "r2", SECOND.format(version="1"))
    return settings, path


def test_backfill_is_charged_and_queues_only_what_the_cap_admits(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = _two_rubrics(tmp_path, redis_url, **BUDGET_5)
    assert run_cli(path, "backfill", "--since", "7d", "--yes", "--no-wait") == BUDGET
    captured = capsys.readouterr()
    assert "to evaluate: 5" in captured.out
    assert "queued 2 traces" in captured.out and "(2 new jobs)" in captured.out
    assert "3 traces wait for the judge budget" in captured.err
    assert queued(settings) == 2 and _charged(settings) == 4  # 2 traces x 2 rubrics
    assert _sql_admitted(settings) == 4  # written with the intents
    result = asyncio.run(run_burst(settings))
    assert (result["traces_evaluated"], result["jobs_failed"]) == (2, 0)
    written = records(settings)
    # The cap is exact: the records are the evaluations charged, a trace whole.
    assert len(written) == _charged(settings) == 4
    assert len({r.trace_id for r in written}) == 2
    # Not drawn by a budget: each record's probability is the rubric's rate the plan
    # selected the trace with (1 here), not an allocation's.
    assert {r.inclusion_probability for r in written} == {1.0}


def test_backfill_of_a_trace_larger_than_the_cap_queues_nothing(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = _two_rubrics(tmp_path, redis_url, calls_per_minute=1, carry=False)
    assert run_cli(path, "backfill", "--since", "7d", "--yes", "--no-wait") == BUDGET
    err = capsys.readouterr().err
    assert "5 traces need more evaluations at once than the judge budget's cap" in err
    assert queued(settings) == 0 and _charged(settings) == 0
    # With waiting (the default) it does not wait for what never fits.
    assert run_cli(path, "backfill", "--since", "7d", "--yes") == BUDGET
    assert queued(settings) == 0 and _charged(settings) == 0


def test_backfill_without_a_budget_is_not_charged(tmp_path: Path, redis_url: str) -> None:
    settings, path = _two_rubrics(tmp_path, redis_url)
    assert run_cli(path, "backfill", "--since", "7d", "--yes", "--no-wait") == 0
    assert queued(settings) == 5 and _charged(settings) == 0


def _dead(settings: Settings, traces: dict[str, dict[str, Any]]) -> None:
    store = Store(settings.database.url)
    outbox.record_intents(
        store.engine, [outbox.Intent(t, "rate", signals) for t, signals in traces.items()]
    )
    for t in traces:
        outbox.finish(store.engine, f"rate:{t}", status=outbox.DEAD, error="judge down")
    store.close()


def _statuses(settings: Settings) -> dict[str, str]:
    store = Store(settings.database.url)
    try:
        return {i.trace_id: i.status for i in outbox.list_intents(store.engine, limit=100)}
    finally:
        store.close()


def test_retry_is_charged_per_trace_and_leaves_the_rest_dead(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = _two_rubrics(tmp_path, redis_url, **BUDGET_5)
    # Two jobs the budget allocated one rubric each, two queued without a budget (the job
    # chooses from the stored trace: charged for every rubric, conservatively).
    one = {"pi": {"grounded": 0.5}}
    _dead(settings, {"t0": one, "t1": one, "t2": {}, "t3": {}})
    argv = ["--settings", str(path), "retry", "--all"]
    assert main(argv) == BUDGET
    captured = capsys.readouterr()
    # Sorted by trace: t0 (1) + t1 (1) + t2 (2) = 4 fit the 5; t3 (2) does not.
    assert "re-enqueued 3 dead intent(s)" in captured.out
    assert "1 trace(s) wait for the judge budget" in captured.err
    assert _statuses(settings) == {
        "t0": outbox.PENDING, "t1": outbox.PENDING, "t2": outbox.PENDING, "t3": outbox.DEAD,
    }  # fmt: skip
    assert queued(settings) == 3 and _charged(settings) == _sql_admitted(settings) == 4
    # Nothing left that fits this minute: a second run queues nothing and charges nothing.
    assert main(argv) == BUDGET
    assert queued(settings) == 3 and _charged(settings) == 4


def test_retry_errors_is_charged(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = _two_rubrics(tmp_path, redis_url, calls_per_minute=3, carry=False)
    store = Store(settings.database.url)
    for t in ("t0", "t1"):  # an error record each: `retry --errors` re-runs both traces
        store.upsert_record(_error_record(t))
    store.close()
    argv = ["--settings", str(path), "retry", "--errors"]
    assert main(argv) == BUDGET  # each trace runs both rubrics: one of the two fits 3
    assert "re-enqueued 1 error intent(s)" in capsys.readouterr().out
    assert queued(settings) == 1 and _charged(settings) == 2


def _error_record(trace_id: str) -> EvalRecord:
    return EvalRecord(
        trace_id=trace_id, rubric="grounded", rubric_version="1", scorer="faithfulness",
        status="error", explanation="judge down",
    )  # fmt: skip


@pytest.mark.slow  # waits for the next minute's window: up to a minute
def test_backfill_waits_for_the_next_window_and_queues_the_rest(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = setup(
        tmp_path, redis_url, LOCAL_FAITHFULNESS.format(version="1"), n=3, budget=BUDGET_5
    )
    write_rubric(tmp_path / "rubrics", "r2", SECOND.format(version="1"))
    codes: list[int] = []
    cli = threading.Thread(
        target=lambda: codes.append(run_cli(path, "backfill", "--since", "7d", "--yes"))
    )
    cli.start()
    deadline = time.monotonic() + 120
    while cli.is_alive() and time.monotonic() < deadline:
        asyncio.run(run_burst(settings))
        time.sleep(0.2)
    cli.join(timeout=10)
    assert codes == [0]
    captured = capsys.readouterr()
    assert "queued 2 traces; 1 wait for the judge budget" in captured.err
    assert "done: 3 evaluated, 0 dead, 6 records written" in captured.out
    assert len(records(settings)) == _charged(settings) == 6  # two windows: 4, then 2
