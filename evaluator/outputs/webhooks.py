"""Where alerts go: a log line, generic signed webhooks and Slack-compatible webhooks.

Webhook URLs come from configuration, but the hosts they name resolve at send time, so a
URL that was safe at start-up can point at the metadata service later (DNS rebinding). Two
checks therefore: `check_url_static` when settings load (scheme, allowlist, literal
addresses) and `resolve_safe` before every send, which resolves the host, refuses the send
if *any* address is internal, and pins the connection to a checked address (the TLS name
and Host header stay the hostname). Redirects are never followed.

    UnsafeURL            the target is refused (configuration or send time)
    DeliveryResult       what one sink did with one event (ok, attempts, status, error)
    sink_problems        configuration faults that would keep a sink from ever sending

Nothing is silently off: a configuration fault (a signed webhook without its secret, a
malformed URL, a refused scheme or host) stops `evaluator worker` at start with one line
(exit 2) and is reported by `rubrics check` and `health`; a sink says `signed = false` to go
unsigned. A reachability fault (DNS, a refused connection, an HTTP error) never blocks a
start: it is logged once at start (`probe_sinks`) and at each failed delivery, and `health`
shows the sink degraded with its last delivery result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from evaluator.config.urls import (
    Resolver,
    check_url_static,
    resolve_safe,
    system_resolver,
)
from evaluator.errors import ConfigError, UnsafeURL
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
    target: str = ""  # which sink (`sink_label`): health shows each one's last result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WebhookTarget:
    name: str  # "webhook" | "slack"
    url: str
    secret: str | None  # HMAC key ("" = missing: refuse); None = unsigned (Slack)

    @property
    def label(self) -> str:
        return sink_label(self.name, self.url)


def sink_label(name: str, url: str) -> str:
    """A sink's name in results and `health`: kind, host and a digest of the URL (a Slack
    URL's path is its credential, so the URL itself is never shown)."""
    try:
        host = urlsplit(url).hostname or "?"
    except ValueError:
        host = "?"
    return f"{name} {host} #{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def configured_targets(alerts: AlertsSettings, environ: Mapping[str, str]) -> list[WebhookTarget]:
    """Every configured sink; a signed webhook carries the secret ("" when missing)."""
    secret = environ.get(alerts.hmac_secret_env, "")
    targets = [
        WebhookTarget("webhook", sink.url, secret if sink.signed else None)
        for sink in alerts.webhook_sinks
    ]
    if alerts.slack_webhook_url:
        targets.append(WebhookTarget("slack", alerts.slack_webhook_url, None))
    return targets


def sink_problems(alerts: AlertsSettings, environ: Mapping[str, str]) -> list[str]:
    """One line per sink that cannot send because of configuration (never of the network):
    a signed webhook without its secret, a URL that is malformed or refused. Alerts disabled:
    none (nothing would be sent)."""
    if not alerts.enabled:
        return []
    problems = []
    for target in configured_targets(alerts, environ):
        where = f"alerts: {target.label}"
        try:
            check_url_static(target.url, alerts.allowlist, allow_private=alerts.allow_private)
            _ = urlsplit(target.url).port  # "host:99999" or "host:x" fail only here
        except UnsafeURL as exc:
            problems.append(f"{where}: URL refused: {exc}")
            continue
        except ValueError as exc:
            problems.append(f"{where}: malformed URL: {exc}")
            continue
        if target.secret == "":
            problems.append(
                f"{where}: signed webhook but ${alerts.hmac_secret_env} is not set: set it, "
                "or list the sink under [[alerts.webhooks]] with signed = false"
            )
    return problems


def refuse_unsendable(alerts: AlertsSettings, environ: Mapping[str, str]) -> None:
    """Raise ConfigError (one line, exit 2) when a configured sink could never send."""
    problems = sink_problems(alerts, environ)
    if problems:
        raise ConfigError("; ".join(problems))


async def probe_sinks(
    alerts: AlertsSettings,
    environ: Mapping[str, str],
    resolver: Resolver = system_resolver,
    timeout_s: float = 3.0,
) -> dict[str, str]:
    """Resolve each sink's host as a send would (no request is sent); {label: fault} for
    those that cannot be reached now. Never raises: reachability never blocks a start."""

    async def one(target: WebhookTarget) -> str | None:
        try:
            async with asyncio.timeout(timeout_s):
                await resolve_safe(
                    target.url,
                    alerts.allowlist,
                    allow_private=alerts.allow_private,
                    resolver=resolver,
                )
        except TimeoutError:
            return f"{target.label}: no DNS answer within {timeout_s:g} s"
        except (UnsafeURL, ValueError) as exc:
            return str(exc)
        return None

    targets = configured_targets(alerts, environ)
    found = await asyncio.gather(*(one(t) for t in targets))
    return {t.label: fault for t, fault in zip(targets, found, strict=True) if fault}


async def log_unreachable_sinks(alerts: AlertsSettings, environ: Mapping[str, str]) -> None:
    """At worker start: one warning per sink that cannot be reached now (never blocks)."""
    try:
        faults = await probe_sinks(alerts, environ)
    except Exception as exc:  # a probe must never take the worker down
        log.warning("alert sinks: probe failed: %r", exc)
        return
    for label, fault in faults.items():
        log.warning("alert sink %s unreachable now (alerts will retry at send): %s", label, fault)


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

    async def send(
        self, target: WebhookTarget, payload: dict[str, Any], headers: dict[str, str]
    ) -> DeliveryResult:
        result = await self._send(target, payload, headers)
        return dataclasses.replace(result, target=target.label)

    async def _send(
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
                    target.url,
                    self.allowlist,
                    allow_private=self.allow_private,
                    resolver=self.resolver,
                )
            except UnsafeURL as exc:
                log.error("alert %s refused: %s", target.name, exc)
                return DeliveryResult(target.name, False, attempt, None, f"refused: {exc}")
            retry_after: float | None = None
            try:
                resp = await self._client.post(
                    pinned,
                    content=body,
                    headers={**head, "Host": _host_header(target.url)},
                    extensions={"sni_hostname": host},
                )
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


# A title per alert kind (`AlertRecord.kind`, evaluator.analytics): a page must say what
# happened before anyone opens it. An unknown kind shows as itself.
TITLES = {
    "drop": "Regression",
    "version": "Version regression",
    "judge_drift": "Judge drift",
    "judge_floor": "Judge below floor",
    "cert_withdrawn": "Certification withdrawn",
}


def slack_message(alert: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook body (`text` fallback + Block Kit blocks), titled by kind:
    "Regression: faithfulness prompt_version=v18", "Resolved (judge drift): tone"."""
    opened = alert["status"] == "open"
    kind = TITLES.get(alert["kind"], alert["kind"])
    head = kind if opened else f"Resolved ({kind.lower()})"
    labels = ", ".join(f"{k}={v}" for k, v in alert["labels"].items())
    title = f"{head}: {alert['rubric']} {labels}".rstrip()
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
        results = [DeliveryResult("log", True, 1, target="log")]
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


def build_sinks(
    alerts: AlertsSettings,
    environ: Mapping[str, str],
    *,
    resolver: Resolver = system_resolver,
    client: httpx.AsyncClient | None = None,
) -> AlertSinks:
    # alerts.enabled = false: alerts are still stored and shown, never sent (as sink_problems says).
    targets = configured_targets(alerts, environ) if alerts.enabled else []
    if not targets:
        return AlertSinks(None, ())
    sender = WebhookSender(
        allowlist=alerts.allowlist,
        allow_private=alerts.allow_private,
        timeout_s=alerts.timeout_s,
        max_attempts=alerts.max_attempts,
        backoff_s=alerts.backoff_s,
        resolver=resolver,
        client=client,
    )
    return AlertSinks(sender, targets)
