"""Where alerts go: a log line, generic signed webhooks and Slack-compatible webhooks.

Webhook URLs come from configuration, but the hosts they name resolve at send time, so a
URL that was safe at start-up can point at the metadata service later (DNS rebinding). Two
checks therefore: `check_url_static` when settings load (scheme, allowlist, literal
addresses) and `resolve_safe` before every send, which resolves the host, refuses the send
if *any* address is internal, and pins the connection to a checked address (the TLS name
and Host header stay the hostname). Redirects are never followed.

    UnsafeURL            the target is refused (configuration or send time)
    DeliveryResult       what one sink did with one event (ok, attempts, status, error)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from evaluator.config.urls import Resolver, UnsafeURL, resolve_safe, system_resolver
from judges.llm.backoff import wait_s
from judges.llm.completions import retry_after_s

if TYPE_CHECKING:
    from evaluator.config.settings import AlertsSettings

log = logging.getLogger("evaluator.analytics.alerts")

SIGNATURE_HEADER = "X-Evaluator-Signature"


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class DeliveryResult:
    sink: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WebhookTarget:
    name: str  # "webhook" | "slack"
    url: str
    secret: str | None  # HMAC key ("" = missing: refuse); None = unsigned (Slack)


class WebhookSender:
    """POSTs JSON to checked targets with retries (network errors, 429, 5xx) and back-off."""

    def __init__(
        self,
        *,
        allowlist: Sequence[str],
        allow_private: bool,
        timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_s: float = 1.0,
        resolver: Resolver = system_resolver,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.allowlist, self.allow_private = tuple(allowlist), allow_private
        self.max_attempts, self.backoff_s, self.resolver = max_attempts, backoff_s, resolver
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    close = aclose  # the older name

    async def send(
        self, target: WebhookTarget, payload: dict[str, Any], headers: dict[str, str]
    ) -> DeliveryResult:
        if target.secret == "":
            return DeliveryResult(target.name, False, 0, None, "no signing secret in environment")
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        head = {"Content-Type": "application/json", "User-Agent": "llm-evaluator", **headers}
        if target.secret is not None:
            head[SIGNATURE_HEADER] = sign(body, target.secret)
        status: int | None = None
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:  # resolve and check on every attempt: the answer may change between them
                pinned, host = await resolve_safe(
                    target.url, self.allowlist, allow_private=self.allow_private,
                    resolver=self.resolver,
                )  # fmt: skip
            except UnsafeURL as exc:
                log.error("alert %s refused: %s", target.name, exc)
                return DeliveryResult(target.name, False, attempt, None, f"refused: {exc}")
            retry_after: float | None = None
            try:
                resp = await self._client.post(
                    pinned, content=body, headers={**head, "Host": _host_header(target.url)},
                    extensions={"sni_hostname": host},
                )  # fmt: skip
                status = resp.status_code
                if 200 <= status < 300:
                    return DeliveryResult(target.name, True, attempt, status)
                if 300 <= status < 400:  # never follow: the next hop is unchecked
                    return DeliveryResult(target.name, False, attempt, status, "redirect refused")
                error = f"HTTP {status}"
                if status != 429 and status < 500:
                    break  # the receiver rejects this body; sending it again will not help
                retry_after = retry_after_s(resp.headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self.max_attempts:
                await asyncio.sleep(
                    min(30.0, wait_s(attempt, retry_after, base=self.backoff_s, cap=30.0))
                )
        log.error("alert %s delivery failed after %d attempts: %s", target.name, attempt, error)
        return DeliveryResult(target.name, False, attempt, status, error)


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1]


def slack_message(alert: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body (`text` fallback + Block Kit blocks)."""
    opened = alert["status"] == "open"
    title = f"{'Regression' if opened else 'Resolved'}: {alert['rubric']} " + ", ".join(
        f"{k}={v}" for k, v in alert["labels"].items()
    )
    fields = [
        f"*Baseline*\n{_side(alert['summary'].get('baseline', {}))}",
        f"*Current*\n{_side(alert['summary'].get('current', {}))}",
        f"*p-value*\n{alert['p_value']:.2g} ({alert['test']})",
        f"*What changed*\n{alert['changed'].get('text', 'nothing recorded')}",
    ]
    worst = ", ".join(f"`{t['trace_id']}` ({t['score']:.2f})" for t in alert["worst_traces"])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": alert["message"][:2900]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:1900]} for f in fields]},
    ]
    notes = [f"Worst traces: {worst}"] if worst else []
    if not opened and alert.get("resolution"):
        notes.append(alert["resolution"])
    for note in notes:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note[:2900]}]})
    return {"text": f"{title}: {alert['message']}"[:3000], "blocks": blocks}


def _side(s: dict[str, Any]) -> str:
    if not s or s.get("mean") is None:
        return "-"
    text = f"mean {s['mean']:.3f} [{s['mean_ci_low']:.3f}, {s['mean_ci_high']:.3f}], n={s['n']}"
    if s.get("pass_rate") is not None:
        text += f"\npass {s['pass_rate']:.1%}"
    return text


class AlertSinks:
    """Fan one alert event out to the log and every configured webhook."""

    def __init__(self, sender: WebhookSender | None, targets: Sequence[WebhookTarget]) -> None:
        self.sender, self.targets = sender, tuple(targets)

    async def deliver(self, event: str, alert: dict[str, Any]) -> list[DeliveryResult]:
        log.warning("alert %s: %s", event, alert["message"])
        results = [DeliveryResult("log", True, 1)]
        if self.sender is None:
            return results
        headers = {"X-Evaluator-Event": event, "X-Evaluator-Delivery": f"{alert['id']}:{event}"}
        for target in self.targets:
            if target.name == "slack":
                payload = slack_message(alert)
            else:
                payload = {"event": event, "alert": alert}
            results.append(await self.sender.send(target, payload, headers))
        return results

    async def aclose(self) -> None:
        if self.sender is not None:
            await self.sender.aclose()

    close = aclose  # the older name


def build_sinks(
    alerts: AlertsSettings,
    environ: Mapping[str, str],
    *,
    resolver: Resolver = system_resolver,
    client: httpx.AsyncClient | None = None,
) -> AlertSinks:
    targets = [WebhookTarget("webhook", url, environ.get(alerts.hmac_secret_env, ""))
               for url in alerts.webhook_urls]  # fmt: skip
    if alerts.slack_webhook_url:
        targets.append(WebhookTarget("slack", alerts.slack_webhook_url, None))
    if not targets:
        return AlertSinks(None, ())
    sender = WebhookSender(
        allowlist=alerts.allowlist, allow_private=alerts.allow_private,
        timeout_s=alerts.timeout_s, max_attempts=alerts.max_attempts,
        backoff_s=alerts.backoff_s, resolver=resolver, client=client,
    )  # fmt: skip
    return AlertSinks(sender, targets)
