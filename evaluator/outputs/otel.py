"""Write eval records back as OpenTelemetry `gen_ai.evaluation.result` events (OTLP/HTTP).

In the OpenTelemetry data model an event is a log record with an `event_name`; its
`trace_id`/`span_id` parent it to the span it is about. Each record becomes one such log
record, sent to `<endpoint>/v1/logs` as protobuf, so the score shows up next to the
evaluated span in the user's trace backend:

    gen_ai.evaluation.name           rubric name
    gen_ai.evaluation.score.value    normalised score in [0, 1] (absent on error)
    gen_ai.evaluation.score.label    the judge's label, else "pass" / "fail"
    gen_ai.evaluation.explanation    the judge's reasoning, or the cause of an error
    error.type                       on status "error" only
    gen_ai.evaluation.evaluator.id       the record's evaluator epoch (judges.provenance)
    gen_ai.evaluation.evaluator.version  rubric version + scorer implementation version
    gen_ai.evaluation.evaluator.type     llm_judge | deterministic | human
    evaluator.*                      trace/span IDs as stored, rubric version, scorer, ...

Regression alerts (opened and resolved) go out the same way as `evaluator.regression.alert`
events (`build_alert_request`), not parented to a span. An alert is an aggregate, so each
mean travels with its interval and level, under our own namespace until the conventions
name them (semantic-conventions-genai issue #43):

    evaluator.score.mean / .n              the current window's mean score and size
    evaluator.score.ci.lower / .upper      its interval
    evaluator.score.ci.level               the interval's confidence level (alerts.confidence)
    evaluator.baseline.mean / .n / .ci.lower / .ci.upper   the same for the baseline
    evaluator.alert.id / .kind / .event / .p_value, gen_ai.evaluation.name, evaluator.label.*

The `gen_ai.evaluation.evaluator.*` attributes follow an open proposal
(open-telemetry/semantic-conventions-genai PR #359), not yet a released convention.

IDs: OTLP needs a 16-byte trace ID and an 8-byte span ID. Stored IDs that already are hex
of that size (everything the OTLP receiver stored) are used as they are, so the event lands
on the user's real span. A 16-hex trace ID (64-bit, Zipkin/Jaeger style) is left-padded with
zeros, the usual 64→128-bit widening. Any other ID is hashed (SHA-256, first 16 or 8 bytes,
see `otel_ids`), which is stable: every record of one trace lands in the same OTel trace.
The original IDs always travel as `evaluator.trace_id` / `evaluator.span_id`, which is how a
consumer maps an event back. Records with status "skipped" are not results and not sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import (
    SEVERITY_NUMBER_INFO,
    SEVERITY_NUMBER_WARN,
    LogRecord,
    ResourceLogs,
    ScopeLogs,
)

from evaluator.store.models import EvalRecord
from evaluator.store.store import as_utc
from judges.llm.backoff import wait_s
from judges.llm.completions import retry_after_s

log = logging.getLogger("evaluator.outputs.otel")

EVENT_NAME = "gen_ai.evaluation.result"
ALERT_EVENT_NAME = "evaluator.regression.alert"
_HEX = frozenset("0123456789abcdef")
_RETRY_STATUS = frozenset({429, 502, 503, 504})  # the OTLP spec's retryable codes
SEVERITY_INFO, SEVERITY_WARN = SEVERITY_NUMBER_INFO, SEVERITY_NUMBER_WARN  # 9, 13
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and set(value.lower()) <= _HEX and set(value) != {"0"}


def otel_ids(trace_id: str, span_id: str) -> tuple[bytes, bytes]:
    """(16-byte trace ID, 8-byte span ID or b"" when the record has no span)."""
    if _is_hex(trace_id, 32):
        tid = bytes.fromhex(trace_id)
    elif _is_hex(trace_id, 16):
        tid = bytes(8) + bytes.fromhex(trace_id)
    else:
        tid = hashlib.sha256(b"evaluator-trace\x00" + trace_id.encode()).digest()[:16]
    if not span_id:
        sid = b""
    elif _is_hex(span_id, 16):
        sid = bytes.fromhex(span_id)
    else:  # the trace goes into the hash: span IDs like "c1" repeat across traces
        raw = b"evaluator-span\x00" + trace_id.encode() + b"\x00" + span_id.encode()
        sid = hashlib.sha256(raw).digest()[:8]
    return tid, sid


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _attrs(values: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in values.items() if v is not None]


def evaluator_attributes(record: EvalRecord) -> dict[str, Any]:
    """Who produced the verdict: id = epoch, version, type (see the module docstring)."""
    prov = record.provenance or {}
    impl = prov.get("implementation")
    if record.method == "human":
        kind = "human"
    elif prov:
        kind = "llm_judge" if prov.get("endpoint") else "deterministic"
    else:  # a legacy record: a judge model or judge calls say a judge decided
        kind = "llm_judge" if record.judge_model or record.judge_calls else "deterministic"
    return {
        "gen_ai.evaluation.evaluator.id": record.epoch,
        "gen_ai.evaluation.evaluator.version": (
            f"{record.rubric_version}+{impl}" if impl else record.rubric_version
        ),
        "gen_ai.evaluation.evaluator.type": kind,
    }


def event_attributes(record: EvalRecord) -> dict[str, Any]:
    """The event's attributes for one record (None values are left out)."""
    label = record.label
    if label is None and record.passed is not None:
        label = "pass" if record.passed else "fail"
    error_type = None
    if record.status == "error":
        error_type = str(record.details.get("error_type") or "evaluation_error")
    return {
        "gen_ai.evaluation.name": record.rubric,
        "gen_ai.evaluation.score.value": record.score,
        "gen_ai.evaluation.score.label": label,
        "gen_ai.evaluation.explanation": record.explanation or None,
        **evaluator_attributes(record),
        "error.type": error_type,
        "evaluator.trace_id": record.trace_id,
        "evaluator.span_id": record.span_id or None,
        "evaluator.record.id": str(record.id),
        "evaluator.rubric.version": record.rubric_version,
        "evaluator.scorer": record.scorer,
        "evaluator.method": record.method or None,
        "evaluator.status": record.status,
        "evaluator.passed": record.passed,
        "evaluator.judge.model": record.judge_model,
        "prompt.version": record.prompt_version,
    }


def build_request(
    records: Iterable[EvalRecord], *, service_name: str = "llm-evaluator"
) -> ExportLogsServiceRequest:
    """One ExportLogsServiceRequest holding an event per exportable record (pure)."""
    out: list[LogRecord] = []
    for record in records:
        if record.status not in ("ok", "error"):
            continue
        tid, sid = otel_ids(record.trace_id, record.span_id)
        at = as_utc(record.created_at)
        nanos = (at - _EPOCH) // timedelta(microseconds=1) * 1000  # exact, no float
        out.append(
            LogRecord(
                time_unix_nano=nanos,
                observed_time_unix_nano=nanos,
                severity_number=SEVERITY_WARN if record.status == "error" else SEVERITY_INFO,
                severity_text="WARN" if record.status == "error" else "INFO",
                event_name=EVENT_NAME,
                trace_id=tid,
                span_id=sid,
                attributes=_attrs(event_attributes(record)),
            )
        )
    return _wrap(out, service_name)


def alert_attributes(event: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of one alert event (alert = evaluator.analytics.alerts.alert_to_json)."""
    summary = alert.get("summary") or {}
    level = summary.get("ci_level") or summary.get("current", {}).get("ci_level")
    out: dict[str, Any] = {
        "gen_ai.evaluation.name": alert.get("rubric"),
        "evaluator.alert.id": alert.get("id"),
        "evaluator.alert.kind": alert.get("kind"),
        "evaluator.alert.event": event,
        "evaluator.alert.status": alert.get("status"),
        "evaluator.alert.p_value": alert.get("p_value"),
    }
    for side, prefix in (("current", "evaluator.score"), ("baseline", "evaluator.baseline")):
        stats = summary.get(side) or {}
        out |= {
            f"{prefix}.mean": stats.get("mean"),
            f"{prefix}.n": stats.get("n"),
            f"{prefix}.ci.lower": stats.get("mean_ci_low"),
            f"{prefix}.ci.upper": stats.get("mean_ci_high"),
            f"{prefix}.ci.level": stats.get("ci_level", level),
        }
    estimator = summary.get("estimator")  # a cascade rubric's alert: which estimator decided
    if isinstance(estimator, Mapping) and estimator.get("estimator"):
        out["evaluator.score.estimator"] = estimator["estimator"]
    for key, value in (alert.get("labels") or {}).items():
        out[f"evaluator.label.{key}"] = None if value is None else str(value)
    return out


def build_alert_request(
    events: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    service_name: str = "llm-evaluator",
    now: datetime | None = None,
) -> ExportLogsServiceRequest:
    """One ExportLogsServiceRequest with an `evaluator.regression.alert` event per
    (event, alert JSON) pair (pure). Severity WARN for alert.opened, INFO otherwise."""
    at = now or datetime.now(UTC)
    nanos = (at - _EPOCH) // timedelta(microseconds=1) * 1000
    out = [
        LogRecord(
            time_unix_nano=nanos,
            observed_time_unix_nano=nanos,
            severity_number=SEVERITY_WARN if event.endswith("opened") else SEVERITY_INFO,
            severity_text="WARN" if event.endswith("opened") else "INFO",
            event_name=ALERT_EVENT_NAME,
            attributes=_attrs(alert_attributes(event, alert)),
        )
        for event, alert in events
    ]
    return _wrap(out, service_name)


def _wrap(out: list[LogRecord], service_name: str) -> ExportLogsServiceRequest:
    resource = ResourceLogs(scope_logs=[ScopeLogs(log_records=out)])
    resource.resource.attributes.extend(_attrs({"service.name": service_name}))
    resource.scope_logs[0].scope.name = "llm-evaluator"
    return ExportLogsServiceRequest(resource_logs=[resource] if out else [])


def _logs_url(endpoint: str) -> str:
    # Like OTEL_EXPORTER_OTLP_ENDPOINT: a bare base URL gets the signal path appended.
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/logs") else f"{base}/v1/logs"


class EvaluationExporter:
    """Sends records to an OTLP/HTTP endpoint; retries 429/502/503/504 and network errors.

        exporter = EvaluationExporter("http://otel-collector:4318")
        await exporter.export(records)

    Export failures are logged and reported by the return value, never raised: a down
    collector must not fail an evaluation whose records are already stored.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        service_name: str = "llm-evaluator",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = _logs_url(endpoint)
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.service_name = service_name
        self._headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self._client = client or httpx.AsyncClient(timeout=timeout_s)

    async def export(self, records: Iterable[EvalRecord]) -> int:
        """Send the records' events; returns how many were accepted (0 on failure)."""
        return await self._send(build_request(records, service_name=self.service_name))

    async def take(self, records: Sequence[EvalRecord], new: Sequence[EvalRecord]) -> None:
        """As a record sink: exports the new records only (a re-run sends no event twice)."""
        if new:
            await self.export(new)

    async def export_alerts(self, events: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Send alert events ((event, alert JSON) pairs); the same retries and silence."""
        return await self._send(build_alert_request(events, service_name=self.service_name))

    async def _send(self, request: ExportLogsServiceRequest) -> int:
        count = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
        if not count:
            return 0
        body = request.SerializeToString()
        for attempt in range(1, self.max_attempts + 1):
            try:
                reply = await self._client.post(self.url, content=body, headers=self._headers)
            except httpx.HTTPError as exc:
                problem, wait = f"{type(exc).__name__}: {exc}", None
            else:
                if reply.is_success:
                    return count
                problem = f"HTTP {reply.status_code}: {reply.text[:200]}"
                if reply.status_code not in _RETRY_STATUS:
                    break
                wait = retry_after_s(reply.headers)
                wait = None if wait is None else min(30.0, wait)
            if attempt < self.max_attempts:
                await asyncio.sleep(wait_s(attempt, wait, base=self.backoff_s, cap=30.0))
        log.warning(
            "otel export of %d evaluation events to %s failed: %s", count, self.url, problem
        )
        return 0

    async def aclose(self) -> None:
        await self._client.aclose()


def decode_events(body: bytes, name: str = EVENT_NAME) -> list[dict[str, Any]]:
    """An ExportLogsServiceRequest's events called `name` as dicts (for receivers and tests):
    {"trace_id": hex, "span_id": hex, "time_unix_nano": int, "attributes": {...}}."""
    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    events = []
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                if rec.event_name != name:
                    continue
                attrs = {
                    kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in rec.attributes
                }
                events.append(
                    {
                        "trace_id": rec.trace_id.hex(),
                        "span_id": rec.span_id.hex(),
                        "time_unix_nano": rec.time_unix_nano,
                        "severity_number": rec.severity_number,
                        "attributes": attrs,
                    }
                )
    return events
