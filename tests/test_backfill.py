"""`evaluator backfill` against real Redis, SQLite and PostgreSQL, with a real burst worker.

The end-to-end runs use a local faithfulness rubric (no judge needed); the estimate tests
use a judge rubric with history records, and never call the judge (dry run).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from evaluator.cli.db import register, render_bar
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Settings
from evaluator.sources.ingest import ingest_traces
from evaluator.store import outbox
from evaluator.store.models import EvalRecord, TraceRecord, utcnow
from evaluator.store.store import Store
from evaluator.worker import backfill as bf
from evaluator.worker.app import run_burst

from .conftest import JUDGE_URL, TONE_RUBRIC, make_settings, rag_trace, write_rubric

LOCAL_FAITHFULNESS = """
name = "grounded"
version = "{version}"
scorer = "faithfulness"
method = "local"
[sampling]
rate = 1.0
"""
JUDGE = {"base_url": JUDGE_URL, "model": "gpt-4o-mini"}
PRICING = {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}


def run_cli(settings_file: Path, *argv: str) -> int:
    """`evaluator --settings FILE ARGV` for the commands of evaluator.cli.db."""
    parser = argparse.ArgumentParser(prog="evaluator")
    parser.add_argument("--settings", type=Path)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--settings", str(settings_file), *argv])
    return int(args.fn(args))


def setup(
    tmp_path: Path, redis_url: str, rubric: str, *, n: int = 3, old: int = 1, **sections: Any
) -> tuple[Settings, Path]:
    write_rubric(tmp_path / "rubrics", "r", rubric)
    settings = make_settings(tmp_path, redis_url, **sections)
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace(f"t{i}") for i in range(n + old)])
    # the last `old` traces were ingested a month ago: outside a 7d window
    table = TraceRecord.__table__  # type: ignore[attr-defined]
    with store.engine.begin() as conn:
        conn.execute(
            update(table)
            .where(table.c.trace_id.in_([f"t{i}" for i in range(n, n + old)]))
            .values(ingested_at=utcnow() - timedelta(days=30))
        )
    store.close()
    return settings, tmp_path / "settings.toml"


def records(settings: Settings) -> list[EvalRecord]:
    store = Store(settings.database.url)
    rows = list(store.records(limit=10_000))
    store.close()
    return rows


def queued(settings: Settings) -> int:
    """Traces in the queue's jobs (a job carries one, or a batch of them)."""
    import asyncio

    from redis.asyncio import Redis

    from .conftest import queued_members

    async def count() -> int:
        client = Redis.from_url(settings.redis.url)
        try:
            return len(await queued_members(client, settings.redis.queue_name))
        finally:
            await client.aclose()

    return asyncio.run(count())


def add_history(settings: Settings, n: int) -> None:
    store = Store(settings.database.url)
    for i in range(n):
        store.upsert_record(
            EvalRecord(
                trace_id=f"h{i}",
                rubric="tone",
                rubric_version="0",
                scorer="llm_rubric",
                status="ok",
                score=1.0,
                judge_calls=2,
                judge_input_tokens=1000,
                judge_output_tokens=100,
            )
        )
    store.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)), ("1.5w", timedelta(days=10.5))],
)
def test_parse_since(text: str, expected: timedelta) -> None:
    assert bf.parse_since(text) == expected


@pytest.mark.parametrize("text", ["7", "0d", "-1d", "7 days", ""])
def test_parse_since_refuses_with_an_example(text: str) -> None:
    with pytest.raises(bf.BackfillError, match=r"e\.g\. 7d"):
        bf.parse_since(text)


def test_dry_run_estimates_from_recent_records_and_queues_nothing(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = setup(tmp_path, redis_url, TONE_RUBRIC, judge=JUDGE)
    (tmp_path / "settings.toml").write_text(
        path.read_text() + '[pricing."gpt-4o-mini"]\ninput_per_mtok = 0.15\noutput_per_mtok = 0.6\n'
    )
    add_history(settings, 4)  # 2 calls, 1000 in / 100 out tokens per evaluation

    assert run_cli(path, "backfill", "--since", "7d", "--dry-run") == 0

    out = capsys.readouterr().out
    assert "(7d): 3" in out and "to evaluate: 3" in out
    assert "history (4 records)" in out
    assert "1000/100" in out
    # 3 traces x 2 calls; 3 x 1000 x 0.15/1e6 + 3 x 100 x 0.6/1e6 = $0.00063
    assert "6 calls, 3000 input + 300 output tokens, cost $0.0006" in out
    assert queued(settings) == 0
    store = Store(settings.database.url)
    assert outbox.list_intents(store.engine) == []
    store.close()


def test_estimate_without_history_uses_the_documented_default(
    tmp_path: Path, redis_url: str
) -> None:
    judge = {"base_url": JUDGE_URL, "model": "local-judge"}
    settings, _ = setup(tmp_path, redis_url, TONE_RUBRIC, judge=judge)
    store = Store(settings.database.url)

    plan = bf.plan_backfill(
        store, settings, load_rubrics(settings.rubrics.path), since=timedelta(days=7)
    )
    store.close()

    tone = plan.rubrics["tone"]
    assert tone.usage.source == "default estimate"
    assert plan.tokens == (3 * bf.DEFAULT_INPUT_TOKENS, 3 * bf.DEFAULT_OUTPUT_TOKENS)
    assert plan.cost_usd is None  # local-judge has no [pricing] entry


def test_backfill_then_nothing_new_then_version_bump_writes_new_records(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = setup(tmp_path, redis_url, LOCAL_FAITHFULNESS.format(version="1"))

    assert run_cli(path, "backfill", "--since", "7d", "--yes", "--no-wait") == 0
    out = capsys.readouterr().out
    assert "queued 3 traces" in out and "(3 new jobs)" in out
    assert queued(settings) == 3
    result = asyncio.run(run_burst(settings))
    assert (result["traces_evaluated"], result["jobs_failed"]) == (3, 0)
    assert sorted((r.trace_id, r.rubric_version) for r in records(settings)) == [
        ("t0", "1"),
        ("t1", "1"),
        ("t2", "1"),
    ]

    # unchanged rubric version: nothing to do, and the output says why
    assert run_cli(path, "backfill", "--since", "7d", "--yes") == 0
    out = capsys.readouterr().out
    assert "already up to date: 3" in out and "to evaluate: 0" in out
    assert "bump a rubric's version" in out
    assert queued(settings) == 0

    # version bump: the same traces are scored again, as new records next to the old ones
    write_rubric(tmp_path / "rubrics", "r", LOCAL_FAITHFULNESS.format(version="2"))
    codes: list[int] = []
    cli = threading.Thread(
        target=lambda: codes.append(run_cli(path, "backfill", "--since", "7d", "--yes"))
    )
    cli.start()
    deadline = time.monotonic() + 120  # generous: the CLI thread on a loaded machine
    while queued(settings) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    asyncio.run(run_burst(settings))
    cli.join(timeout=30)

    assert codes == [0]
    captured = capsys.readouterr()
    assert "done: 3 evaluated, 0 dead, 3 records written" in captured.out
    assert "backfill [##############################] 3/3" in captured.err
    versions = sorted((r.trace_id, r.rubric_version) for r in records(settings))
    assert versions == [(f"t{i}", v) for i in range(3) for v in ("1", "2")]


def test_backfill_writes_through_the_outbox_on_postgres(
    tmp_path: Path, redis_url: str, postgres_url: str
) -> None:
    settings, path = setup(
        tmp_path,
        redis_url,
        LOCAL_FAITHFULNESS.format(version="1"),
        database={"url": postgres_url},
    )

    assert run_cli(path, "backfill", "--since", "7d", "--yes", "--no-wait") == 0
    asyncio.run(run_burst(settings))

    store = Store(settings.database.url)
    intents = outbox.list_intents(store.engine)
    store.close()
    assert len(intents) == 3
    assert {i.status for i in intents} == {outbox.DONE}
    assert {i.kind for i in intents} != {"rate"} and all(i.kind.startswith("bf-") for i in intents)
    assert len(records(settings)) == 3


def test_rubric_filter_and_unknown_rubric(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = setup(tmp_path, redis_url, LOCAL_FAITHFULNESS.format(version="1"))

    assert run_cli(path, "backfill", "--since", "7d", "--rubric", "nope", "--dry-run") == 2
    assert "no such rubric; known: grounded" in capsys.readouterr().err
    assert run_cli(path, "backfill", "--since", "7d", "--rubric", "grounded", "--dry-run") == 0
    assert "to evaluate: 3" in capsys.readouterr().out


def test_refuses_to_start_unconfirmed_without_a_terminal(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, path = setup(tmp_path, redis_url, LOCAL_FAITHFULNESS.format(version="1"))

    assert run_cli(path, "backfill", "--since", "7d") == 2

    assert "pass --yes" in capsys.readouterr().err
    assert queued(settings) == 0


def test_progress_bar_line() -> None:
    line = render_bar(bf.Progress(total=4, done=1, dead=1), 75)
    assert line == "backfill [" + "#" * 15 + "." * 15 + "] 2/4, 1 dead  1:15"
