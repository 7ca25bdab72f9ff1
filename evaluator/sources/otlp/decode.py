"""OTLP/HTTP trace requests → spans → trace documents (pure: no I/O, no clients).

Two steps, both pure so they are cheap to test:

- `decode_request(body, content_type, content_encoding)` reads an ExportTraceServiceRequest in
  protobuf (`application/x-protobuf`) or JSON (`application/json`, hex IDs as the OTLP spec
  says), optionally gzip/deflate-compressed, into `OtlpSpan`s. A malformed body raises
  `OtlpError` with the HTTP status and a message naming the field, e.g.
  ``resourceSpans.0.scopeSpans.0.spans.2.traceId: must be 32 hex characters``.
- `evaluator.sources.otlp.genai.normalize_genai` maps a span's attributes
  onto the trace format (README, "The trace format") following the GenAI conventions.

The buffering of spans until a trace is complete lives in `evaluator.sources.otlp.assembly`.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from evaluator.errors import OtlpError

MAX_BODY_BYTES = 16 * 1024 * 1024  # after decompression: a gzip bomb stops here
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPE = "application/json"
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
# Trace-level labels read from resource and span attributes (the prompt version is extra,
# under a configurable name). Root-span values win over children's.
DEFAULT_LABELS = (
    "feature",
    "tenant",
    "session.id",
    "user.id",
    "feedback",
    "cost_usd",
    "service.name",
    "deployment.environment",
)


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """How spans become traces. `prompt_version_attribute` is read from span or resource
    attributes and stored as the trace's `prompt.version`."""

    prompt_version_attribute: str = "prompt.version"
    label_attributes: tuple[str, ...] = DEFAULT_LABELS
    max_body_bytes: int = MAX_BODY_BYTES


@dataclass(frozen=True, slots=True)
class OtlpSpan:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def is_root(self) -> bool:
        return self.parent_span_id is None


# --- body → spans ------------------------------------------------------------------------


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        data = body
    elif enc in ("gzip", "deflate"):
        # wbits 47 = auto-detect zlib or gzip header; max_length bounds memory.
        inflater = zlib.decompressobj(47 if enc == "gzip" else 15)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise OtlpError(400, f"body is not valid {enc}: {exc}") from None
    else:
        raise OtlpError(415, f"Content-Encoding {encoding!r} not supported (gzip, deflate)")
    if len(data) > limit:
        raise OtlpError(413, f"request body exceeds {limit} bytes (after decompression)")
    return data


def decode_request(
    body: bytes,
    content_type: str,
    content_encoding: str | None = None,
    *,
    max_bytes: int = MAX_BODY_BYTES,
) -> list[OtlpSpan]:
    """Decode an OTLP/HTTP trace export body into spans (raises OtlpError)."""
    data = _decompress(body, content_encoding, max_bytes)
    media = content_type.split(";", 1)[0].strip().lower()
    if media in PROTOBUF_TYPES:
        return _from_protobuf(data)
    if media == JSON_TYPE:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise OtlpError(400, f"body is not valid JSON: {exc}") from None
        return _from_json(document)
    raise OtlpError(
        415, f"Content-Type {content_type!r} not supported; use application/x-protobuf or JSON"
    )


def _hex_id(raw: bytes, size: int, where: str, *, optional: bool = False) -> str | None:
    if optional and not raw:
        return None
    if len(raw) != size or not any(raw):
        raise OtlpError(400, f"{where}: must be {size} bytes and not all zero, got {raw.hex()!r}")
    return raw.hex()


def _proto_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_proto_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _proto_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _proto_attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _proto_value(kv.value) for kv in kvs}


def _from_protobuf(data: bytes) -> list[OtlpSpan]:
    try:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
    except ImportError:  # pragma: no cover - depends on the install
        raise OtlpError(415, "protobuf bodies need `pip install opentelemetry-proto`") from None
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise OtlpError(400, f"body is not an ExportTraceServiceRequest: {exc}") from None
    spans: list[OtlpSpan] = []
    for r, rs in enumerate(request.resource_spans):
        resource = _proto_attrs(rs.resource.attributes)
        for s, ss in enumerate(rs.scope_spans):
            for i, sp in enumerate(ss.spans):
                where = f"resource_spans.{r}.scope_spans.{s}.spans.{i}"
                spans.append(
                    OtlpSpan(
                        trace_id=_hex_id(sp.trace_id, 16, f"{where}.trace_id") or "",
                        span_id=_hex_id(sp.span_id, 8, f"{where}.span_id") or "",
                        parent_span_id=_hex_id(
                            sp.parent_span_id, 8, f"{where}.parent_span_id", optional=True
                        ),
                        name=sp.name,
                        start_ns=sp.start_time_unix_nano,
                        end_ns=sp.end_time_unix_nano,
                        status_code=sp.status.code,
                        status_message=sp.status.message,
                        attributes=_proto_attrs(sp.attributes),
                        events=tuple((e.name, _proto_attrs(e.attributes)) for e in sp.events),
                        resource=resource,
                    )
                )
    return spans


# --- JSON (OTLP/JSON: lowerCamelCase, hex IDs, int64 as strings) ------------------------


def _get(obj: Any, camel: str, where: str, default: Any = None) -> Any:
    if not isinstance(obj, dict):
        raise OtlpError(400, f"{where}: must be a JSON object")
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake, default))


def _list(obj: Any, camel: str, where: str) -> list[Any]:
    value = _get(obj, camel, where) or []
    if not isinstance(value, list):
        raise OtlpError(400, f"{where}.{camel}: must be a JSON array")
    return value


def _json_id(raw: Any, size: int, where: str, *, optional: bool = False) -> str | None:
    if optional and not raw:
        return None
    if not isinstance(raw, str):
        raise OtlpError(400, f"{where}: must be a hex string, got {type(raw).__name__}")
    try:
        data = bytes.fromhex(raw)
    except ValueError:
        try:  # protobuf's own JSON mapping writes bytes as base64; accept it too
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            data = b""
    if len(data) != size:
        raise OtlpError(400, f"{where}: must be {size * 2} hex characters, got {raw!r}")
    return _hex_id(data, size, where, optional=optional)


def _json_int(raw: Any, where: str) -> int:
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        raise OtlpError(400, f"{where}: must be an integer, got {raw!r}") from None


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    for key, convert in (
        ("stringValue", str),
        ("boolValue", bool),
        ("intValue", int),
        ("doubleValue", float),
    ):
        if key in value:
            return convert(value[key])
    if "arrayValue" in value:
        return [_json_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return _json_attrs((value["kvlistValue"] or {}).get("values", []))
    return value.get("bytesValue")


def _json_attrs(kvs: Any) -> dict[str, Any]:
    if not isinstance(kvs, list):
        return {}
    return {kv["key"]: _json_value(kv.get("value")) for kv in kvs if isinstance(kv, dict)}


def _json_status(raw: Any) -> int:
    code = raw.get("code", 0) if isinstance(raw, dict) else 0
    return _STATUS_NAMES.get(code, 0) if isinstance(code, str) else int(code or 0)


def _from_json(document: Any) -> list[OtlpSpan]:
    spans: list[OtlpSpan] = []
    try:
        for r, rs in enumerate(_list(document, "resourceSpans", "(request)")):
            rwhere = f"resourceSpans.{r}"
            resource = _json_attrs(_get(_get(rs, "resource", rwhere) or {}, "attributes", rwhere))
            for s, ss in enumerate(_list(rs, "scopeSpans", rwhere)):
                swhere = f"{rwhere}.scopeSpans.{s}"
                for i, sp in enumerate(_list(ss, "spans", swhere)):
                    w = f"{swhere}.spans.{i}"
                    spans.append(
                        OtlpSpan(
                            trace_id=_json_id(_get(sp, "traceId", w), 16, f"{w}.traceId") or "",
                            span_id=_json_id(_get(sp, "spanId", w), 8, f"{w}.spanId") or "",
                            parent_span_id=_json_id(
                                _get(sp, "parentSpanId", w), 8, f"{w}.parentSpanId", optional=True
                            ),
                            name=str(_get(sp, "name", w, "")),
                            start_ns=_json_int(_get(sp, "startTimeUnixNano", w), f"{w}.start"),
                            end_ns=_json_int(_get(sp, "endTimeUnixNano", w), f"{w}.end"),
                            status_code=_json_status(_get(sp, "status", w)),
                            status_message=str((_get(sp, "status", w) or {}).get("message", "")),
                            attributes=_json_attrs(_get(sp, "attributes", w)),
                            events=tuple(
                                (str(e.get("name", "")), _json_attrs(e.get("attributes")))
                                for e in _list(sp, "events", w)
                                if isinstance(e, dict)
                            ),
                            resource=resource,
                        )
                    )
    except RecursionError:  # kvlistValue inside kvlistValue, hundreds deep
        raise OtlpError(400, "malformed OTLP JSON: attribute values nested too deeply") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, OtlpError):
            raise
        raise OtlpError(400, f"malformed OTLP JSON: {type(exc).__name__}: {exc}") from None
    return spans


# --- GenAI semantic conventions: the many ways instrumentations write a model call -------
