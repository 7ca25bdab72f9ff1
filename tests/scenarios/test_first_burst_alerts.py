"""A new prompt version's FIRST burst is caught by the next regression check.

Real processes: one long-running `evaluator worker` (its intake evaluates what the CLI
enqueues; its cron runs the regression check once a minute, at second 7), real Redis, a
webhook receiver that checks the signature. The app's traces happened a few minutes before
they reach the worker (their spans carry start times), as exported traffic does: the check
used to date the new version by its first *write* and read its scores by *trace* time, so
the whole first burst fell before the group's own start (current n = 0, no alert).

The invariant: the alert is opened by the first check that starts after the last v2 record
was written (opened_at is that run's clock), i.e. within one check period.
Two rubrics: local faithfulness (rate 1, min_samples 10), and the shipped faithfulness
rubric as shipped (cascade to a loopback judge, rate 0.5, min_samples 30).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from evaluator.config.settings import SHIPPED_RUBRICS_DIR, Settings
from evaluator.intake.drain import stats_key
from tests.conftest import chat_completion, make_settings, write_rubric
from tests.scenarios.cli import evaluator_command, run
from tests.scenarios.test_alert_to_webhook import SECRET, _Receiver, _trace

LOCAL_RUBRIC = """
name = "faithfulness"
version = "1"
scorer = "faithfulness"
method = "local"
pass_threshold = 0.5
[sampling]
rate = 1.0
[regression]
window = "1h"
baseline = "7d"
min_samples = 10
"""
PERIOD = timedelta(minutes=1)  # alerts.interval_minutes = 1; the cron runs at second 7


class _FaithfulnessJudge(BaseHTTPRequestHandler):
    """A loopback judge for the faithfulness prompt: v2's invented claims are contradicted."""

    calls = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = json.dumps(body["messages"])
        type(self).calls += 1
        bad = "iPad" in text
        verdict = "contradicted" if bad else "supported"
        claims = [{"claim": "the answer's price", "context_ids": [1], "reason": "doc",
                   "verdict": verdict}]  # fmt: skip
        reply = json.dumps(chat_completion(json.dumps({"claims": claims}))).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _happened(trace: dict[str, Any], at: datetime) -> dict[str, Any]:
    for span in trace["spans"]:
        span["start_time"] = at.isoformat()
        span["end_time"] = (at + timedelta(seconds=1)).isoformat()
    return trace


def _poll(what: str, ready: Callable[[], bool], worker: subprocess.Popen[str],
          deadline_s: float = 240) -> None:  # fmt: skip
    end = time.monotonic() + deadline_s
    while not ready():
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.returncode}) while {what}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out: {what}")
        time.sleep(0.2)


def _settled(settings: Settings, db: Path, received: int) -> Callable[[], bool]:
    """Every enqueued ID drained (the intake counts after writing intents), none pending."""
    client = redis.Redis.from_url(settings.redis.url)

    def ready() -> bool:
        got = int(client.hget(stats_key(settings.redis.key_prefix), "received") or 0)
        if got < received:
            return False
        with sqlite3.connect(db) as conn:
            (pending,) = conn.execute(
                "SELECT count(*) FROM eval_intents WHERE status = 'pending'"
            ).fetchone()
        return bool(pending == 0)

    return ready


def _records(db: Path, version: str) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*), sum(passed) FROM eval_records WHERE prompt_version = ? "
            "AND status = 'ok'",
            (version,),
        ).fetchone()
    return int(row[0]), int(row[1] or 0)


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.got = queue.Queue()
    server, url = _serve(_Receiver)
    yield f"{url}/hook"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("rubric", ["local", "shipped"])
def test_the_first_burst_of_a_worse_version_alerts_within_one_check(
    tmp_path: Path, redis_url: str, receiver: str, rubric: str
) -> None:
    judge: ThreadingHTTPServer | None = None
    sections: dict[str, dict[str, Any]] = {
        "alerts": {"interval_minutes": 1, "webhook_urls": [receiver],
                   "allowlist": ["127.0.0.1"], "allow_private": True},
        "worker": {"trace_not_found_tries": 2, "trace_not_found_delay_s": 0.0},
    }  # fmt: skip
    if rubric == "local":
        write_rubric(tmp_path / "rubrics", "faithfulness", LOCAL_RUBRIC)
        n = 40
    else:  # as shipped: cascade, rate 0.5, min_samples 30; enough traffic for 30 each side
        (tmp_path / "rubrics").mkdir()
        shutil.copy(SHIPPED_RUBRICS_DIR / "faithfulness.toml", tmp_path / "rubrics")
        judge, judge_url = _serve(_FaithfulnessJudge)
        sections["judge"] = {"base_url": f"{judge_url}/v1", "model": "judge-model"}
        n = 110
    settings = make_settings(tmp_path, redis_url, **sections)
    path, db = tmp_path / "settings.toml", tmp_path / "evals.db"
    worker = subprocess.Popen(
        [*evaluator_command(), "--settings", str(path), "worker"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "EVALUATOR_WEBHOOK_SECRET": SECRET, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    try:
        for k, (version, ago) in enumerate((("v1", 10), ("v2", 3))):
            # The burst happened `ago` minutes ago, over a minute, and reaches us only now.
            start = datetime.now(UTC) - timedelta(minutes=ago)
            traces = [
                _happened(_trace(i, version), start + timedelta(seconds=60 * i / n))
                for i in range(n)
            ]
            file = tmp_path / f"{version}.jsonl"
            file.write_text("".join(json.dumps(t) + "\n" for t in traces))
            run("ingest", str(file), settings=path)
            run("enqueue", *(t["trace_id"] for t in traces), settings=path)
            _poll(f"evaluating {version}", _settled(settings, db, n * (k + 1)), worker)
        v2_done = datetime.now(UTC)
        event, valid = _Receiver.got.get(timeout=PERIOD.total_seconds() * 3)
    finally:
        worker.terminate()
        out = worker.communicate(timeout=60)[0]
        if judge is not None:
            judge.shutdown()
            judge.server_close()
    v1, v2 = _records(db, "v1"), _records(db, "v2")
    assert valid, "the webhook's X-Evaluator-Signature does not verify"
    alert = event["alert"]
    assert alert["kind"] == "version" and alert["labels"]["prompt_version"] == "v2", alert
    opened = datetime.fromisoformat(alert["opened_at"])
    if opened >= v2_done:  # (a check during the burst may page on its first part: fine)
        # The current side is the whole first burst, every v2 record written before it ran.
        assert alert["summary"]["window_n"] == v2[0], (alert["summary"], v2, out[-3000:])
    assert v2[0] >= (10 if rubric == "local" else 30) and v2[1] == 0, v2  # v2 all failing
    assert v1[1] == v1[0] >= (10 if rubric == "local" else 30), v1  # v1 all passing
    first_check = v2_done.replace(second=7, microsecond=0)
    if first_check < v2_done:
        first_check += PERIOD
    # Opened by the first check run after v2 was written (arq starts it on its second).
    assert opened < first_check + PERIOD, (opened, v2_done, first_check)
    print(
        f"\n[{rubric}] v1 n={v1[0]}, v2 n={v2[0]} (passing {v2[1]}); alert opened "
        f"{(opened - v2_done).total_seconds():.1f} s after the last v2 record "
        f"(first check at {first_check:%H:%M:%S}, opened {opened:%H:%M:%S})"
    )
