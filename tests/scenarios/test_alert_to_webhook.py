"""A bad prompt version goes live; the regression check pages a webhook.

Real processes throughout: traces ingested and enqueued with the CLI, a long-running
`evaluator worker` (its cron runs the regression check once a minute), and a local webhook
receiver that verifies the HMAC signature the way a user's endpoint would. v1 answers quote
their documents; v2 invents prices. Local faithfulness scores both (no judge needed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings, write_rubric
from tests.scenarios.cli import evaluator_command, run

SECRET = "s3cret-for-the-test"
RUBRIC = """
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
PLANS = ["Starter", "Team", "Business", "Enterprise", "Scale", "Growth", "Pro", "Premium"]


def _trace(i: int, version: str) -> dict[str, Any]:
    plan = PLANS[i % len(PLANS)]
    price = 1000 * (i + 3)
    doc = f"The {plan} plan costs ${price:,} per year and includes {i + 2} seats."
    answer = (
        f"The {plan} plan costs ${price:,} per year with {i + 2} seats."
        if version == "v1"
        else f"The {plan} plan costs ${price // 10 + 7:,} per month, includes a free iPad "
        f"and {i * 3 + 50} seats, and was launched in March {1990 + i}."
    )
    return {
        "trace_id": f"{version}-{i:03d}",
        "attributes": {"prompt.version": version, "feature": "pricing"},
        "spans": [
            {"span_id": "r1", "name": "retrieve", "status": "ok",
             "attributes": {"gen_ai.operation.name": "retrieval",
                            "gen_ai.retrieval.documents": [{"id": f"d{i}", "content": doc}]}},
            {"span_id": "c1", "name": "chat", "status": "ok",
             "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                            "gen_ai.input.messages": [{"role": "user", "parts": [
                                {"type": "text", "content": f"What does {plan} cost?"}]}],
                            "gen_ai.output.messages": [{"role": "assistant", "parts": [
                                {"type": "text", "content": answer}]}]}},
        ],
    }  # fmt: skip


class _Receiver(BaseHTTPRequestHandler):
    got: queue.Queue[tuple[dict[str, Any], bool]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(self.headers.get("X-Evaluator-Signature", ""), expected)
        self.got.put((json.loads(body), valid))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worse_prompt_version_pages_the_webhook(tmp_path: Path, redis_url: str) -> None:
    write_rubric(tmp_path / "rubrics", "faithfulness", RUBRIC)
    _Receiver.got = queue.Queue()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    make_settings(
        tmp_path, redis_url,
        alerts={"interval_minutes": 1, "webhook_urls": [hook], "allowlist": ["127.0.0.1"],
                "allow_private": True},
    )  # fmt: skip
    settings = tmp_path / "settings.toml"
    env = {"EVALUATOR_WEBHOOK_SECRET": SECRET}
    for version in ("v1", "v2"):
        path = tmp_path / f"{version}.jsonl"
        path.write_text("".join(json.dumps(_trace(i, version)) + "\n" for i in range(40)))
        run("ingest", str(path), settings=settings)
        run("enqueue", *(f"{version}-{i:03d}" for i in range(40)), settings=settings)
        run("worker", "--burst", settings=settings, timeout=180)
    worker = subprocess.Popen(
        [*evaluator_command(), "--settings", str(settings), "worker"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **env},
    )  # fmt: skip
    try:
        event, valid = _Receiver.got.get(timeout=150)  # the cron runs at second 7 of a minute
    finally:
        worker.terminate()
        out = worker.communicate(timeout=60)[0]
        receiver.shutdown()
        receiver.server_close()
    assert valid, "the webhook's X-Evaluator-Signature does not verify"
    alert = event.get("alert", event)
    text = json.dumps(event)
    assert "v2" in text and "faithfulness" in text, (event, out[-2000:])
    assert alert.get("rubric") == "faithfulness", event
    listed = run("alerts", "--json", settings=settings).stdout
    assert "v2" in listed
