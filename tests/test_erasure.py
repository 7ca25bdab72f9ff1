"""Erasure is complete: after `evaluator erase --trace ID --yes`, the ID is nowhere the service
keeps data. The trace goes the whole way first (ingested, queued, judged, in an alert's worst
traces and message, delivered to a webhook and to the log sink, its delivery recorded), then
every text and JSON column of every table, every Redis key and value, and the log lines of
the erasure and of the next regression check are searched for it. On SQLite and PostgreSQL.

What was already sent outward (the webhook's receiver, OTel collectors, log lines written
before the erasure) is out of reach and documented as such (docs/scaling.md, "Erasure").
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import respx
from sqlalchemy import String, Text, inspect, select, text
from sqlalchemy.types import JSON
from sqlmodel import Session

from evaluator.analytics.check_job import run_check
from evaluator.config.rubrics import RubricSet, parse_rubric
from evaluator.config.settings import AlertsSettings, Settings
from evaluator.intake.enqueue import TraceEnqueuer
from evaluator.outputs.webhooks import build_sinks
from evaluator.sources.ingest import ingest_traces
from evaluator.store.models import AlertRecord, EvalRecord
from evaluator.store.store import Store
from evaluator.worker.app import run_burst

from .conftest import (
    JUDGE_URL,
    TONE_RUBRIC,
    chat_completion,
    make_settings,
    rag_trace,
    write_rubric,
)

ERASED = "erase-me-7f3a9c0d"  # a string no other stored value contains
KEPT = "keep-me-51b2e8aa"
NOW = datetime.now(UTC)
FAITH = """
name = "faith"
version = "1"
scorer = "faithfulness"
pass_threshold = 0.5
"""
LABELS = {"prompt_version": "v17", "model": "gpt-4o", "feature": "qa"}


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback webhook receiver: what it got is what left the service."""
    bodies: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def _seed_scores(store: Store) -> None:
    """A stable week, then a bad last five hours in which ERASED and KEPT score worst."""
    rows = []
    start = NOW - timedelta(days=7, hours=6)
    for i in range(700):
        at = start + (timedelta(days=7) / 700) * i
        score = 0.0 if i % 20 == 19 else 1.0
        rows.append((f"base-{i}", score, at))
    for i in range(60):
        at = NOW - timedelta(hours=5) + (timedelta(hours=5) / 60) * i
        tid = {59: ERASED, 57: KEPT}.get(i, f"bad-{i}")  # the latest failures: the worst
        rows.append((tid, 0.0 if i % 2 == 1 else 1.0, at))
    with Session(store.engine) as s:
        s.add_all(
            EvalRecord(trace_id=tid, rubric="faith", rubric_version="1", scorer="faithfulness",
                       status="ok", score=score, passed=score >= 0.5, created_at=at,
                       epoch="legacy", **LABELS)
            for tid, score, at in rows
        )  # fmt: skip
        s.commit()


async def _judge_then_alert(settings: Settings, hook: str, tmp_path: Path) -> None:
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace(ERASED, answer="Paris."), rag_trace(KEPT, answer="Lyon.")])
    store.close()
    enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
    for trace_id in (ERASED, KEPT):
        enq.enqueue(trace_id)
    assert await enq.flush()
    await enq.aclose()
    verdict = json.dumps({"reasoning": "Direct and polite.", "score": 4})
    with respx.mock(base_url=JUDGE_URL) as mock:
        mock.post("/chat/completions").mock(
            return_value=httpx.Response(200, json=chat_completion(verdict))
        )
        result = await run_burst(settings)
    assert result["traces_evaluated"] == 2 and result["jobs_failed"] == 0

    store = Store(settings.database.url)
    _seed_scores(store)
    rubrics = RubricSet((parse_rubric(FAITH, source=tmp_path / "faith.toml"),), tmp_path)
    alerts = AlertsSettings(
        webhook_urls=(hook,), allowlist=("127.0.0.1",), allow_private=True, backoff_s=0
    )
    sinks = build_sinks(alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"})
    report = await run_check(store, rubrics, alerts, sinks, NOW)
    await sinks.aclose()
    assert len(report.opened) == 1
    with Session(store.engine) as s:
        alert = s.exec(select(AlertRecord)).one()[0]  # type: ignore[call-overload]
    store.close()
    assert ERASED in alert.message and ERASED in json.dumps(alert.worst_traces)
    assert [d["sink"] for d in alert.deliveries] == ["log", "webhook"]
    # Work in flight at erasure time: the trace is enqueued again (not yet drained).
    enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
    enq.enqueue(ERASED)
    assert await enq.flush()
    await enq.aclose()


def sql_locations(url: str, needle: str) -> list[str]:
    """table.column of every text or JSON cell that contains `needle`, in every table."""
    store = Store(url)
    found = []
    try:
        with store.engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for col in inspect(conn).get_columns(table):
                    if not isinstance(col["type"], String | Text | JSON):
                        continue
                    q = select(text(f'"{col["name"]}"')).select_from(text(f'"{table}"'))
                    for (value,) in conn.execute(q):
                        blob = value if isinstance(value, str) else json.dumps(value)
                        if value is not None and needle in blob:
                            found.append(f"{table}.{col['name']}")
                            break
    finally:
        store.close()
    return found


def redis_locations(url: str, needle: str) -> list[str]:
    """Every key whose name or value (of any type) contains `needle`."""
    client = redis.Redis.from_url(url)
    raw = needle.encode()
    found = []
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            if kind == "string":
                values = [client.get(key) or b""]
            elif kind == "list":
                values = client.lrange(key, 0, -1)
            elif kind == "set":
                values = list(client.smembers(key))
            elif kind == "zset":
                values = client.zrange(key, 0, -1)
            elif kind == "hash":
                values = [b for kv in client.hgetall(key).items() for b in kv]
            elif kind == "stream":
                values = [json.dumps(str(e)).encode() for e in client.xrange(key)]
            else:
                values = [kind.encode()]
            if raw in key or any(raw in v for v in values):
                found.append(key.decode(errors="replace"))
    finally:
        client.close()
    return found


async def test_an_erased_trace_id_is_nowhere(
    tmp_path: Path, redis_url: str, db_url: str, receiver: tuple[str, list[bytes]],
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    hook, delivered = receiver
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    judge = {"base_url": JUDGE_URL, "model": "gpt-4o-mini", "max_retries": 0, "timeout_s": 2.0}
    settings = make_settings(tmp_path, redis_url, judge=judge, database={"url": db_url})
    await _judge_then_alert(settings, hook, tmp_path)
    # It went everywhere, and outward: the test can find it before the erasure.
    assert ERASED.encode() in b"".join(delivered)
    assert "alerts.message" in sql_locations(db_url, ERASED)
    before = sql_locations(db_url, ERASED)
    assert {"traces.payload", "eval_records.trace_id", "alerts.worst_traces"} <= set(before)
    assert redis_locations(redis_url, ERASED)  # the pending entry, the in-batch marker

    erase = subprocess.run(
        [sys.executable, "-m", "evaluator.cli", "--log-level", "DEBUG", "--settings",
         str(tmp_path / "settings.toml"), "erase", "--trace", ERASED, "--yes"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert erase.returncode == 0, erase.stderr
    assert ERASED not in erase.stdout + erase.stderr  # its report and its log lines
    caplog.clear()
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG):
        # The next regression check re-renders and may re-deliver the alert (resolution).
        store = Store(db_url)
        rubrics = RubricSet((parse_rubric(FAITH, source=tmp_path / "faith.toml"),), tmp_path)
        alerts = AlertsSettings(
            webhook_urls=(hook,), allowlist=("127.0.0.1",), allow_private=True, backoff_s=0
        )
        sinks = build_sinks(alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"})
        delivered.clear()
        await run_check(store, rubrics, alerts, sinks, NOW + timedelta(days=2))
        await sinks.aclose()
        store.close()
        # The queued work for it is gone: a worker run writes nothing about it.
        with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as mock:
            mock.post("/chat/completions").mock(
                return_value=httpx.Response(200, json=chat_completion('{"score": 4}'))
            )
            await run_burst(settings)
    out = capsys.readouterr()

    assert sql_locations(db_url, ERASED) == []
    assert redis_locations(redis_url, ERASED) == []
    assert ERASED not in caplog.text and ERASED not in out.out + out.err
    assert ERASED.encode() not in b"".join(delivered)  # what goes out after the erasure
    # ... and nothing else went: the kept trace is still everywhere it was.
    assert {
        "traces.payload",
        "eval_records.trace_id",
        "alerts.worst_traces",
        "alerts.message",
    } <= set(sql_locations(db_url, KEPT))


async def test_erasure_unlinks_budget_admissions_and_keeps_the_day_count(
    tmp_path: Path, redis_url: str
) -> None:
    """The erased trace's admissions keep counting against the cap (SQL rows and the Redis
    ledger, renamed to one token), its offers and queued jobs go, nothing names it."""
    from redis.asyncio import Redis

    from evaluator.budget.source import ledger_key
    from evaluator.intake.drain import Intake, SamplingConfig
    from evaluator.intake.enqueue import intake_key
    from evaluator.intake.erasure import erase_in_redis
    from evaluator.intake.wire import encode
    from evaluator.sampling import Labels, Signals
    from evaluator.store import admissions
    from evaluator.store.erasure import erase_traces

    from .test_budget_ledger import PLAN, RULES, T0

    url = f"sqlite:///{tmp_path / 'budget.db'}"
    store = Store(url)
    client = Redis.from_url(redis_url)
    ids = [ERASED, KEPT, *(f"other-{i}" for i in range(40))]
    entries = [
        encode(t, Signals(latency_ms=12.0, error=t in (ERASED, KEPT)), Labels(feature="f"))
        for t in ids
    ]  # the two error traces are tail-sampled: admitted at once, every rubric
    await client.rpush(intake_key("app"), *entries)
    intake = Intake(client, key_prefix="app", queue_name="q",
                    sampling=SamplingConfig(1.0, RULES, budget=PLAN), engine=store.engine)  # fmt: skip
    await intake.drain_all(1000, now_s=T0 + 5)
    day = admissions.day_of(T0 + 5)
    counted = admissions.counts(store.engine, day)
    ledger = ledger_key("app", T0 + 5)
    fields = await client.hlen(ledger)
    assert counted["*"] >= 4 and fields == counted["*"]
    assert "budget_admissions.trace_id" in sql_locations(url, ERASED)
    assert redis_locations(redis_url, ERASED)  # ledger fields, the queued job, its marker

    report = erase_traces(store.engine, [ERASED])
    await erase_in_redis(client, "app", "q", [ERASED], report.tokens)

    assert report.admissions_unlinked == 2  # one per rubric
    assert sql_locations(url, ERASED) == [] and redis_locations(redis_url, ERASED) == []
    assert admissions.counts(store.engine, day) == counted  # the cap still sees them
    assert await client.hlen(ledger) == fields
    token = report.tokens[ERASED]
    assert sum(token in f.decode() for f in await client.hkeys(ledger)) == 2
    assert sql_locations(url, KEPT) and redis_locations(redis_url, KEPT)  # only ERASED went
    await client.aclose()
    store.close()
