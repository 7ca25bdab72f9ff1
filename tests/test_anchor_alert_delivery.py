"""Anchor-run alerts reach the alert sinks like every other kind: a run below the rubric's
floor posts one signed `judge_floor` webhook to a loopback receiver, a re-run posts nothing
again, and the run that clears the floor posts the resolution once. Real SQLite and Redis;
only the judge's HTTP API is mocked (respx), the webhook is a real HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from redis.asyncio import Redis
from sqlmodel import Session, select

from evaluator.analytics.alert_delivery import deliver_alerts
from evaluator.config.rubrics import load_rubrics
from evaluator.outputs.webhooks import build_sinks
from evaluator.store.models import AlertRecord
from evaluator.store.store import Store
from evaluator.worker.anchors import anchors_job, run_anchors
from evaluator.worker.runtime import Runtime, make_judge
from judges.types import Clients

from .conftest import JUDGE_URL, chat_completion, make_settings, write_rubric
from .test_anchor_floor import FLOORED
from .test_anchors_drift import mock_judge, policy_for, write_anchor_file

SECRET = "anchor-hook-secret"
Posted = tuple[dict[str, str], dict[str, Any], bool]  # headers, body, signature verifies


class _Receiver(BaseHTTPRequestHandler):
    got: queue.Queue[Posted]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(self.headers.get("X-Evaluator-Signature", ""), expected)
        self.got.put((dict(self.headers), json.loads(body), valid))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[Posted]]]:
    got: queue.Queue[Posted] = queue.Queue()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Receiver,), {"got": got}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


@pytest.fixture
def runtime(
    tmp_path: Path,
    redis_url: str,
    receiver: tuple[str, queue.Queue[Posted]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runtime]:
    monkeypatch.setenv("EVALUATOR_WEBHOOK_SECRET", SECRET)
    settings = make_settings(
        tmp_path,
        redis_url,
        judge={"base_url": JUDGE_URL, "model": "judge-m"},
        redaction={"enabled": False},
        alerts={
            "webhook_urls": [receiver[0]],
            "allowlist": ["127.0.0.1"],
            "allow_private": True,
            "backoff_s": 0,
        },
    )
    write_rubric(tmp_path / "rubrics", "anchored", FLOORED)
    write_anchor_file(tmp_path / "rubrics" / "anchors" / "anchored.jsonl")
    redis = Redis.from_url(redis_url)
    rt = Runtime(
        settings=settings,
        store=Store(settings.database.url),
        rubrics=load_rubrics(settings.rubrics.path),
        clients=Clients(judge=make_judge(settings, redis)),
        redis=redis,
    )
    yield rt
    rt.store.close()


def posted(got: queue.Queue[Posted]) -> list[Posted]:
    """What the receiver has got so far: a delivery waits for the receiver's answer, and the
    receiver queues the body before it answers, so nothing is still on its way."""
    out = []
    while not got.empty():
        out.append(got.get_nowait())
    return out


def floor_alert(rt: Runtime) -> AlertRecord:
    with Session(rt.store.engine) as session:
        (alert,) = session.exec(select(AlertRecord).where(AlertRecord.kind == "judge_floor"))
        return alert


@respx.mock
async def test_a_run_below_the_floor_posts_one_signed_webhook_and_a_rerun_posts_nothing(
    runtime: Runtime, receiver: tuple[str, queue.Queue[Posted]]
) -> None:
    _, got = receiver
    respx.route(host="127.0.0.1").pass_through()  # the webhook is real; the judge is not
    always_pass = json.dumps({"reasoning": "looks fine", "score": 5})
    respx.post(f"{JUDGE_URL}/chat/completions").mock(
        return_value=httpx.Response(200, json=chat_completion(always_pass))
    )

    report = await anchors_job({"runtime": runtime})  # the cron body: a new epoch is due
    assert report["errors"] == [] and report["ran"][0]["floor_alert"] == "opened"
    ((headers, body, valid),) = posted(got)
    assert valid, "the webhook's X-Evaluator-Signature does not verify"
    assert body["event"] == "alert.opened" and headers["X-Evaluator-Event"] == "alert.opened"
    alert = floor_alert(runtime)
    assert body["alert"]["kind"] == "judge_floor" and body["alert"]["id"] == str(alert.id)
    assert "JUDGE BELOW FLOOR" in body["alert"]["message"]
    assert [(d["event"], d["sink"], d["ok"]) for d in alert.deliveries] == [
        ("alert.opened", "log", True),
        ("alert.opened", "webhook", True),
    ]

    rubric = runtime.rubrics.by_name("anchored")
    assert rubric is not None
    again = await run_anchors(runtime, rubric)  # still below: the alert stays open
    assert again.floor_alert == "already_open" and posted(got) == []
    # The same transition handed over twice is sent once.
    sinks = build_sinks(runtime.settings.alerts, {"EVALUATOR_WEBHOOK_SECRET": SECRET})
    try:
        assert await deliver_alerts(runtime.store, sinks, [("alert.opened", alert)]) == []
    finally:
        await sinks.aclose()
    assert posted(got) == [] and len(floor_alert(runtime).deliveries) == 2

    respx.routes.clear()
    respx.route(host="127.0.0.1").pass_through()
    mock_judge(policy_for(runtime, 0.97))
    good = await run_anchors(runtime, rubric)
    assert good.floor_alert == "resolved" and good.alert == "none"
    ((headers, body, valid),) = posted(got)
    assert valid and body["event"] == "alert.resolved"
    assert body["alert"]["status"] == "resolved" and body["alert"]["kind"] == "judge_floor"
    events = [d["event"] for d in floor_alert(runtime).deliveries]
    assert events == ["alert.opened"] * 2 + ["alert.resolved"] * 2
    assert (await run_anchors(runtime, rubric)).floor_alert == "none" and posted(got) == []
