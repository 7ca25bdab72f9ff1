"""Nothing silently off: a sink that cannot send because of configuration is refused at
start, by `rubrics check` and by `health`; reachability never blocks; `health` shows each
sink's last delivery result (evaluator.outputs.webhooks, evaluator.cli.health_sinks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from evaluator.cli.health_sinks import check_sinks, sink_lines
from evaluator.config.settings import Settings, load_settings
from evaluator.outputs.webhooks import (
    build_sinks,
    configured_targets,
    probe_sinks,
    sink_label,
    sink_problems,
)
from evaluator.store.models import AlertRecord
from evaluator.store.store import Store
from tests.conftest import make_settings

PUBLIC_IP = "93.184.216.34"
HOOK = "https://hooks.example.com/a"
SLACK = "https://x.slack.test/services/T/B/XSECRETPATH"
ALLOW = ["hooks.example.com", ".slack.test", "127.0.0.1"]


async def public(host: str, port: int) -> list[str]:
    if host in ("hooks.example.com", "x.slack.test"):
        return [PUBLIC_IP]
    raise OSError(f"no such host {host}")


def settings_with(tmp_path: Path, redis_url: str, **alerts: Any) -> Settings:
    return make_settings(tmp_path, redis_url, alerts={"allowlist": ALLOW, **alerts})


def test_a_signed_webhook_without_its_secret_is_a_configuration_fault(
    tmp_path: Path, redis_url: str
) -> None:
    s = settings_with(tmp_path, redis_url, webhook_urls=[HOOK], slack_webhook_url=SLACK)
    (problem,) = sink_problems(s.alerts, {})
    assert "$EVALUATOR_WEBHOOK_SECRET is not set" in problem and "signed = false" in problem
    assert "\n" not in problem and "XSECRETPATH" not in problem
    assert sink_problems(s.alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"}) == []
    off = settings_with(tmp_path, redis_url, webhook_urls=[HOOK], enabled=False)
    assert sink_problems(off.alerts, {}) == []  # nothing would be sent


def test_signed_false_sends_unsigned_and_is_no_fault(tmp_path: Path, redis_url: str) -> None:
    make_settings(tmp_path, redis_url, alerts={"allowlist": ALLOW})
    path = tmp_path / "settings.toml"
    path.write_text(path.read_text() + f'[[alerts.webhooks]]\nurl = "{HOOK}"\nsigned = false\n')
    alerts = load_settings(path, environ={}).alerts
    assert sink_problems(alerts, {}) == []
    (target,) = configured_targets(alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"})
    assert target.secret is None  # unsigned even when a secret exists


@pytest.mark.parametrize(
    ("url", "why"),
    [("https://hooks.example.com:99999/a", "malformed URL"),
     ("https://hooks.example.com:x/a", "malformed URL")],
)  # fmt: skip
def test_a_malformed_port_is_caught_before_any_send(
    tmp_path: Path, redis_url: str, url: str, why: str
) -> None:
    s = settings_with(tmp_path, redis_url, webhook_urls=[url])
    (problem,) = sink_problems(s.alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"})
    assert why in problem


async def test_deliveries_name_their_sink_and_probes_never_raise(
    tmp_path: Path, redis_url: str
) -> None:
    s = settings_with(tmp_path, redis_url, webhook_urls=[HOOK], slack_webhook_url=SLACK,
                      backoff_s=0, max_attempts=1)  # fmt: skip
    with respx.mock:
        respx.post(f"https://{PUBLIC_IP}/a").mock(return_value=httpx.Response(200))
        respx.post(f"https://{PUBLIC_IP}/services/T/B/XSECRETPATH").mock(
            return_value=httpx.Response(500)
        )
        sinks = build_sinks(s.alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"}, resolver=public)
        results = await sinks.deliver("alert.opened", _alert())
        await sinks.aclose()
    assert [(r.target, r.ok) for r in results] == [
        ("log", True), (sink_label("webhook", HOOK), True), (sink_label("slack", SLACK), False),
    ]  # fmt: skip

    async def down(host: str, port: int) -> list[str]:
        raise OSError("Temporary failure in name resolution")

    faults = await probe_sinks(s.alerts, {}, resolver=down)
    assert set(faults) == {sink_label("webhook", HOOK), sink_label("slack", SLACK)}


def test_health_shows_each_sinks_last_delivery(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings_with(tmp_path, redis_url, webhook_urls=[HOOK], slack_webhook_url=SLACK)
    monkeypatch.setenv("EVALUATOR_WEBHOOK_SECRET", "k")
    hook, slack = sink_label("webhook", HOOK), sink_label("slack", SLACK)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    store = Store(s.database.url)
    for i, (hook_ok, slack_ok) in enumerate([(False, True), (True, False)]):
        at = (t0 + timedelta(minutes=i)).isoformat()
        store_alert(store, i, [
            {"event": "alert.opened", "at": at, "sink": "webhook", "target": hook,
             "ok": hook_ok, "attempts": 4, "status": None if hook_ok else 503,
             "error": "" if hook_ok else "HTTP 503"},
            {"event": "alert.opened", "at": at, "sink": "slack", "target": slack,
             "ok": slack_ok, "attempts": 1, "status": 200 if slack_ok else 500,
             "error": "" if slack_ok else "HTTP 500"},
        ])  # fmt: skip
    store.close()
    c = check_sinks(s, public)
    by = {x["sink"]: x for x in c["sinks"]}
    assert c["ok"] is True  # degraded is a warning: the service runs
    assert by[hook]["last_delivery"]["ok"] is True and by[hook]["state"] == "ok"
    assert by[slack]["last_delivery"] == {"at": (t0 + timedelta(minutes=1)).isoformat(),
                                          "event": "alert.opened", "ok": False, "status": 500,
                                          "attempts": 1, "error": "HTTP 500"}  # fmt: skip
    assert by[slack]["state"] == "degraded" and "HTTP 500" in c["warning"]
    text = "\n".join(sink_lines(c))
    assert "XSECRETPATH" not in text + json.dumps(c)
    monkeypatch.delenv("EVALUATOR_WEBHOOK_SECRET")
    c = check_sinks(s, public)
    assert c["ok"] is False and "EVALUATOR_WEBHOOK_SECRET" in c["error"]
    assert {x["sink"]: x["state"] for x in c["sinks"]}[hook] == "misconfigured"

    async def down(host: str, port: int) -> list[str]:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setenv("EVALUATOR_WEBHOOK_SECRET", "k")
    c = check_sinks(s, down)  # unreachable: degraded, never failed
    assert c["ok"] is True and {x["state"] for x in c["sinks"]} == {"degraded"}


def store_alert(store: Store, i: int, deliveries: list[dict[str, Any]]) -> None:
    from sqlmodel import Session

    now = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=i)
    alert = AlertRecord(
        group_key=f"version|faith|pv=v{i}", kind="version", rubric="faith", labels={},
        test="e-process", p_value=0.001, e_value=1000.0, baseline_mean=0.9, current_mean=0.2,
        baseline_n=40, current_n=40, summary={}, changed={}, worst_traces=[], message="m",
        opened_at=now, updated_at=now, deliveries=deliveries, status="resolved",
    )  # fmt: skip
    with Session(store.engine) as session:
        session.add(alert)
        session.commit()


def _alert() -> dict[str, Any]:
    return {
        "id": "a1", "kind": "version", "status": "open", "rubric": "faith",
        "labels": {"prompt_version": "v18"}, "summary": {}, "changed": {}, "p_value": 0.001,
        "test": "e-process", "worst_traces": [], "message": "faith dropped",
    }  # fmt: skip
