"""A judge budget in real processes: an app enqueues and exits, two served workers share a
day's cap of 30 evaluations, a loopback judge answers.

The app (a child process) enqueues 100 stored traces with labels and exits without
flushing; two `evaluator worker` processes drain the intake concurrently. The cap binds:
exactly 30 evaluations are judged and written — not one more, across both workers — and
the other 70 traces are counted as "not sampled: budget", never silently dropped. A second
wave after the cap is spent is all counted and nothing judged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evaluator.store import admissions, outbox
from evaluator.store.store import Store
from tests.conftest import TONE_RUBRIC, make_settings, rag_trace, write_rubric
from tests.judge_stub import JudgeStub
from tests.scenarios.cli import evaluator_command, run

CAP = 30

APP = """
import sys
from evaluator import enqueue_trace_sync
first, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(first, first + n):
    enqueue_trace_sync(f"b{i:03d}", feature=f"f{i % 3}", prompt_version="v1")
print("enqueued", flush=True)
"""


def _app(settings: Path, first: int, n: int) -> None:
    app = subprocess.run(
        [sys.executable, "-c", APP, str(first), str(n)],
        env={**os.environ, "EVALUATOR_SETTINGS": str(settings)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert app.returncode == 0 and "enqueued" in app.stdout, app.stderr


def _stats(settings: Path) -> dict[str, int]:
    return dict(json.loads(run("stats", "--json", settings=settings).stdout)["intake"])


def _settled(settings: Path, db_url: str, received: int, deadline_s: float = 90) -> None:
    """Until the workers have drained `received` IDs and nothing is left that could still be
    judged: no ID in the intake, no job queued or running (arq keeps a job in its queue until
    it finishes), no intent pending."""
    store = Store(db_url)
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            full = json.loads(run("stats", "--json", settings=settings).stdout)
            if (
                full["intake"].get("received", 0) >= received
                and full["intake_pending"] == 0
                and full["jobs_queued"] == 0
                and outbox.count_intents(store.engine, outbox.PENDING) == 0
                and admissions.pending_offers(store.engine) == 0  # every cap window closed
            ):
                return
            time.sleep(0.3)
    finally:
        store.close()
    raise AssertionError(f"not settled: {_stats(settings)}")


def test_two_workers_never_exceed_the_day_cap_and_count_the_rest(
    tmp_path: Path, redis_url: str
) -> None:
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 58:
        pytest.skip("the day's cap resets at UTC midnight, within this test's run")
    with JudgeStub() as judge:
        write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
        settings_obj = make_settings(
            tmp_path, redis_url,
            judge={"base_url": judge.url, "model": "gpt-4o-mini", "max_retries": 0, "timeout_s": 5},
            # usd_per_evaluation 1: usd_per_day is the day's cap in evaluations.
            # A one-second cap window: rate draws are admitted (by random key) when it closes.
            budget={"usd_per_day": float(CAP), "usd_per_evaluation": 1.0, "window_s": 1.0},
        )  # fmt: skip
        settings = tmp_path / "settings.toml"
        traces = tmp_path / "traces.jsonl"
        # Distinct answers: identical prompts would be served from the judge reply cache.
        docs = [rag_trace(f"b{i:03d}", answer=f"Answer {i}.") for i in range(120)]
        traces.write_text("".join(json.dumps(d) + "\n" for d in docs))
        run("ingest", str(traces), settings=settings)
        env = {**os.environ, "EVALUATOR_SETTINGS": str(settings), "HF_HUB_OFFLINE": "1"}
        command = [*evaluator_command(), "worker"]
        workers = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)
        ]
        try:
            _app(settings, 0, 100)
            _settled(settings, settings_obj.database.url, 100)  # nothing more can be judged
            records = json.loads(run("scores", "--all", "--json", settings=settings).stdout)
            records = records["records"] if isinstance(records, dict) else records
            assert len(records) == CAP and judge.calls == CAP
            assert {r["status"] for r in records} == {"ok"}
            assert len({r["trace_id"] for r in records}) == CAP  # one record per trace
            assert all(0 < r["inclusion_probability"] <= 1 for r in records)
            stats = _stats(settings)
            assert stats["received"] == 100
            assert stats["not_sampled_budget"] == 100 - CAP, stats
            assert stats["budget_refused_evaluations"] == 100 - CAP, stats

            # The cap is spent: a second wave is counted, nothing judged.
            _app(settings, 100, 20)
            _settled(settings, settings_obj.database.url, 120)
            stats = _stats(settings)
            # Counted either as drawn and refused, or as not drawn: once the previous minute
            # shows the cap spent, the rate is fitted down to budget.min_rate.
            refused = stats["not_sampled_budget"] + stats.get("not_sampled", 0)
            assert refused == 120 - CAP, stats
            assert judge.calls == CAP
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            outs = [w.communicate(timeout=60)[0].decode() for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outs
