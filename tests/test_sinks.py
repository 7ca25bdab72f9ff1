"""Alert sinks: the SSRF guard (configuration and send time), signed webhooks with retries,
Slack messages. respx intercepts every HTTP call; DNS answers come from a fake resolver."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from evaluator.analytics.certification_job import KIND as CERT_WITHDRAWN
from evaluator.analytics.judge_drift import FLOOR_KIND as JUDGE_FLOOR
from evaluator.analytics.judge_drift import KIND as JUDGE_DRIFT
from evaluator.config.settings import AlertsSettings
from evaluator.config.urls import check_url_static, resolve_safe
from evaluator.errors import SettingsError, UnsafeURL
from evaluator.outputs.webhooks import (
    SIGNATURE_HEADER,
    WebhookSender,
    WebhookTarget,
    build_sinks,
    slack_message,
)
from tests.conftest import REDIS_URL, make_settings

PUBLIC_IP = "93.184.216.34"
ALLOW = ("hooks.example.com", ".slack.test")
# Listed on purpose: the address checks must refuse them even when the allowlist admits them.
INTERNAL_HOSTS = (
    "127.0.0.1",
    "::1",
    "10.0.0.5",
    "192.168.1.1",
    "172.16.0.1",
    "169.254.169.254",
    "fe80::1",
    "::ffff:127.0.0.1",
    "localhost",
    "metadata.google.internal",
)


def resolver_for(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


PUBLIC = resolver_for({"hooks.example.com": [PUBLIC_IP], "x.slack.test": [PUBLIC_IP]})


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://hooks.example.com/x",
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:8080/hook",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://user:pw@hooks.example.com/hook",
        "https://evil.example.org/hook",  # not in the allowlist
    ],
)
def test_internal_or_unlisted_targets_are_refused_at_configuration(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url_static(
            url,
            (*ALLOW, *INTERNAL_HOSTS),
            allow_private=False,
        )


def test_allow_private_admits_private_hosts_but_never_metadata() -> None:
    allow = ("10.0.0.5", "169.254.169.254")
    assert check_url_static("http://10.0.0.5/h", allow, allow_private=True) == "10.0.0.5"
    with pytest.raises(UnsafeURL, match="metadata"):
        check_url_static("http://169.254.169.254/h", allow, allow_private=True)


def test_allowlist_suffix_entries_match_subdomains_only() -> None:
    assert check_url_static("https://x.slack.test/a", ALLOW, allow_private=False)
    with pytest.raises(UnsafeURL, match="allowlist"):
        check_url_static("https://xslack.test/a", ALLOW, allow_private=False)


def test_settings_refuse_a_bad_webhook_url_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"alerts: Value error, webhook URL refused.*169\.254"):
        make_settings(
            tmp_path,
            REDIS_URL,
            alerts={"webhook_urls": ["http://169.254.169.254/x"], "allowlist": ["169.254.169.254"]},
        )


async def test_a_host_that_resolves_to_any_internal_address_is_refused_at_send_time() -> None:
    # DNS rebinding: the name passed the static check, one of its addresses is internal.
    rebinding = resolver_for({"hooks.example.com": [PUBLIC_IP, "10.1.2.3"]})
    with pytest.raises(UnsafeURL, match="private"):
        await resolve_safe(
            "https://hooks.example.com/h", ALLOW, allow_private=False, resolver=rebinding
        )
    meta = resolver_for({"hooks.example.com": ["169.254.169.254"]})
    sender = WebhookSender(allowlist=ALLOW, allow_private=True, resolver=meta, backoff_s=0)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.route()
        result = await sender.send(
            WebhookTarget("webhook", "https://hooks.example.com/h", "s"), {"x": 1}, {}
        )
        assert not route.called
    assert not result.ok and "metadata" in result.error
    await sender.aclose()


async def test_webhook_is_signed_pinned_to_the_checked_address_and_retried() -> None:
    sender = WebhookSender(allowlist=ALLOW, allow_private=False, resolver=PUBLIC, backoff_s=0)
    target = WebhookTarget("webhook", "https://hooks.example.com/alerts?x=1", "s3cret")
    with respx.mock:
        route = respx.post(f"https://{PUBLIC_IP}/alerts?x=1").mock(
            side_effect=[httpx.Response(503), httpx.ConnectError("reset"), httpx.Response(204)]
        )
        result = await sender.send(target, {"event": "alert.opened", "n": 1}, {"X-A": "b"})
    assert result.ok and result.attempts == 3 and result.status == 204
    assert route.call_count == 3
    req = route.calls.last.request
    body = req.content
    assert json.loads(body) == {"event": "alert.opened", "n": 1}
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert req.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert req.headers["Host"] == "hooks.example.com" and req.headers["X-A"] == "b"
    await sender.aclose()


async def test_client_errors_are_not_retried_and_redirects_are_not_followed() -> None:
    sender = WebhookSender(allowlist=ALLOW, allow_private=False, resolver=PUBLIC, backoff_s=0)
    with respx.mock:
        bad = respx.post(f"https://{PUBLIC_IP}/bad").mock(return_value=httpx.Response(400))
        moved = respx.post(f"https://{PUBLIC_IP}/moved").mock(
            return_value=httpx.Response(302, headers={"Location": "http://169.254.169.254/"})
        )
        r1 = await sender.send(
            WebhookTarget("webhook", "https://hooks.example.com/bad", "s"), {}, {}
        )
        r2 = await sender.send(
            WebhookTarget("webhook", "https://hooks.example.com/moved", "s"), {}, {}
        )
    assert (r1.ok, r1.attempts, bad.call_count) == (False, 1, 1)
    assert (r2.ok, r2.error, moved.call_count) == (False, "redirect refused", 1)
    await sender.aclose()


async def test_retries_stop_after_max_attempts() -> None:
    sender = WebhookSender(
        allowlist=ALLOW, allow_private=False, resolver=PUBLIC, backoff_s=0, max_attempts=3
    )
    with respx.mock:
        route = respx.post(f"https://{PUBLIC_IP}/h").mock(return_value=httpx.Response(500))
        r = await sender.send(WebhookTarget("webhook", "https://hooks.example.com/h", "s"), {}, {})
    assert (r.ok, r.attempts, route.call_count, r.error) == (False, 3, 3, "HTTP 500")
    await sender.aclose()


def _alert(status: str = "open") -> dict[str, Any]:
    side = {"n": 200, "mean": 0.94, "mean_ci_low": 0.92, "mean_ci_high": 0.96, "pass_rate": 0.95}
    return {
        "id": "a1",
        "status": status,
        "rubric": "faithfulness",
        "kind": "version",
        "labels": {"prompt_version": "v18", "model": "gpt-4o", "feature": "qa"},
        "summary": {"baseline": side, "current": {**side, "mean": 0.6, "n": 20}},
        "p_value": 0.0004,
        "test": "e-process",
        "changed": {"text": "prompt_version v17 -> v18"},
        "worst_traces": [{"trace_id": "t-9", "score": 0.0}],
        "message": "faithfulness dropped",
        "resolution": "",
    }


def test_slack_message_has_fallback_text_and_blocks_naming_the_next_step() -> None:
    msg = slack_message(_alert())
    assert msg["text"].startswith("Version regression: faithfulness prompt_version=v18")
    text = json.dumps(msg["blocks"])
    assert "prompt_version v17 -> v18" in text and "t-9" in text and "e-process" in text
    assert msg["blocks"][0]["type"] == "header"


@pytest.mark.parametrize(
    ("kind", "opened", "resolved"),
    [
        ("drop", "Regression", "Resolved (regression)"),
        ("version", "Version regression", "Resolved (version regression)"),
        (JUDGE_DRIFT, "Judge drift", "Resolved (judge drift)"),
        (JUDGE_FLOOR, "Judge below floor", "Resolved (judge below floor)"),
        (CERT_WITHDRAWN, "Certification withdrawn", "Resolved (certification withdrawn)"),
        ("new_kind", "new_kind", "Resolved (new_kind)"),
    ],
)
def test_slack_message_is_titled_by_the_alert_kind(kind: str, opened: str, resolved: str) -> None:
    """Every kind the analytics jobs open says what it is (it used to say "Regression")."""
    for status, title in (("open", opened), ("resolved", resolved)):
        msg = slack_message(_alert(status) | {"kind": kind, "labels": {}})
        assert msg["blocks"][0]["text"]["text"] == f"{title}: faithfulness"
        assert msg["text"] == f"{title}: faithfulness: faithfulness dropped"


async def test_build_sinks_sends_generic_and_slack_and_refuses_without_secret(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path,
        REDIS_URL,
        alerts={
            "webhook_urls": ["https://hooks.example.com/a"],
            "slack_webhook_url": "https://x.slack.test/services/T/B/X",
            "allowlist": list(ALLOW),
            "backoff_s": 0,
        },
    )
    with respx.mock:
        generic = respx.post(f"https://{PUBLIC_IP}/a").mock(return_value=httpx.Response(200))
        slack = respx.post(f"https://{PUBLIC_IP}/services/T/B/X").mock(
            return_value=httpx.Response(200, text="ok")
        )
        sinks = build_sinks(settings.alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"}, resolver=PUBLIC)
        results = await sinks.deliver("alert.opened", _alert())
        await sinks.aclose()
        unsigned = build_sinks(settings.alerts, {}, resolver=PUBLIC)
        refused = await unsigned.deliver("alert.opened", _alert())
        await unsigned.aclose()
    assert [r.sink for r in results] == ["log", "webhook", "slack"] and all(r.ok for r in results)
    body = json.loads(generic.calls[0].request.content)
    assert body["event"] == "alert.opened" and body["alert"]["labels"]["prompt_version"] == "v18"
    assert generic.calls[0].request.headers["X-Evaluator-Delivery"] == "a1:alert.opened"
    assert "blocks" in json.loads(slack.calls[0].request.content)
    assert SIGNATURE_HEADER not in slack.calls[0].request.headers
    assert refused[1].ok is False and "secret" in refused[1].error and generic.call_count == 1


def test_alerts_disabled_sends_nothing_whatever_the_sinks() -> None:
    """alerts.enabled = false: every job builds an empty sink set (anchors and certification
    alerts included), as health's sink check says."""
    alerts = AlertsSettings(
        enabled=False,
        webhook_urls=("https://hooks.example.com/x",),
        allowlist=("hooks.example.com",),
    )
    sinks = build_sinks(alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"})
    assert sinks.targets == ()
    enabled = build_sinks(
        alerts.model_copy(update={"enabled": True}), {"EVALUATOR_WEBHOOK_SECRET": "k"}
    )
    assert [t.label for t in enabled.targets] != []
