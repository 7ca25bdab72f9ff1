"""POST /v1/traces as the OTLP/HTTP spec answers it: decode, screen, buffer, reply.

- 200 with an empty ExportTraceServiceResponse when every span was buffered;
- 200 with `partial_success` {rejected_spans, error_message} when some spans were refused
  (each named with its field and reason) and the rest buffered: the exporter must not
  retry, and retrying would not help;
- 400 when the body cannot be decoded, or when every span in it was refused;
- 413 / 415 for size and media type; 503 only when the database is unreachable (retry).

Refused spans are counted (evaluator.sources.quarantine) under source "otlp".
"""

from __future__ import annotations

import json
import logging

from sqlalchemy.exc import SQLAlchemyError

from evaluator.errors import OtlpError
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.sources.otlp.decode import JSON_TYPE, decode_request
from evaluator.sources.quarantine import Refusal, record_refusals

log = logging.getLogger("evaluator.sources.otlp.receive")
PROTOBUF_RESPONSE_TYPE = "application/x-protobuf"
MAX_MESSAGE_REFUSALS = 5  # error_message names the first few; the count says how many


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def rpc_status(code: int, message: str) -> bytes:
    """google.rpc.Status {code = 1, message = 2} in protobuf wire format."""
    text = message.encode()
    return _field(1, 0, _varint(code)) + _field(2, 2, _varint(len(text)) + text)


def partial_success(rejected: int, message: str) -> bytes:
    """ExportTraceServiceResponse {partial_success = 1 {rejected_spans = 1, error_message = 2}}."""
    text = message.encode()
    inner = _field(1, 0, _varint(rejected)) + _field(2, 2, _varint(len(text)) + text)
    return _field(1, 2, _varint(len(inner)) + inner)


def refusal_message(refusals: list[Refusal]) -> str:
    shown = "; ".join(f"{r.item}: {r.reason}" for r in refusals[:MAX_MESSAGE_REFUSALS])
    more = len(refusals) - MAX_MESSAGE_REFUSALS
    return shown + (f"; and {more} more" if more > 0 else "")


def handle_otlp_traces(
    body: bytes,
    content_type: str,
    content_encoding: str | None,
    *,
    assembler: SpanAssembler,
) -> tuple[int, bytes, str]:
    """(HTTP status, response body, response content type) for one export request."""
    is_json = content_type.split(";", 1)[0].strip().lower() == JSON_TYPE
    reply_type = JSON_TYPE if is_json else PROTOBUF_RESPONSE_TYPE

    def error(status: int, message: str) -> tuple[int, bytes, str]:
        code = 14 if status == 503 else 3  # UNAVAILABLE (retryable) / INVALID_ARGUMENT
        if is_json:
            return status, json.dumps({"code": code, "message": message}).encode(), reply_type
        return status, rpc_status(code, message), reply_type

    try:
        spans = decode_request(
            body, content_type, content_encoding, max_bytes=assembler.config.max_body_bytes
        )
    except OtlpError as exc:
        return error(exc.status, str(exc))
    try:
        refused = assembler.add(spans)
    except SQLAlchemyError as exc:
        log.exception("otlp: buffering %d spans failed", len(spans))
        return error(503, f"span buffer unavailable: {type(exc).__name__}")
    record_refusals(assembler.redis, assembler.key_prefix, "otlp", refused)
    if not refused:
        return 200, (b"{}" if is_json else b""), reply_type
    message = refusal_message(refused)
    if len(refused) == len(spans):
        return error(400, f"every span refused: {message}")
    if is_json:  # proto3 JSON mapping: int64 as a string
        doc = {"partialSuccess": {"rejectedSpans": str(len(refused)), "errorMessage": message}}
        return 200, json.dumps(doc).encode(), reply_type
    return 200, partial_success(len(refused), message), reply_type
