"""Logging set-up: the usual text lines, or one JSON object per line for log pipelines.

    configure_logging("INFO", "json")
    log.warning("judge call failed", extra={"trace_id": tid, "rubric": "faithfulness"})
    # {"ts": "2026-11-22T10:00:00.123Z", "level": "WARNING", "logger": "evaluator.worker.pipeline",
    #  "message": "judge call failed", "trace_id": "4bf9…", "rubric": "faithfulness"}

Fields passed with `extra=` become top-level keys. `log_context(trace_id=...)` adds fields
to every record logged inside it (the context variable follows `asyncio.to_thread`), so a
job's lines carry its trace_id without threading it through every call.

Trace content (prompts, answers, documents, payloads) is never logged: extra keys that name
such content are replaced by a marker, whatever the caller passed. Messages themselves are
the caller's responsibility; the service logs IDs, counts and causes, not content.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO, cast

from evaluator.errors import ConfigError

LogFormat = Literal["text", "json"]
FORMATS: tuple[str, ...] = ("text", "json")
ENV_FORMAT = "EVALUATOR_LOG__FORMAT"
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
REDACTED = "[trace content omitted]"

# Keys whose values are, or may hold, trace content.
CONTENT_KEYS = frozenset(
    {
        "payload",
        "trace",
        "spans",
        "attributes",
        "messages",
        "question",
        "answer",
        "contexts",
        "documents",
        "prompt",
        "completion",
        "content",
        "samples",
        "raw_output",
    }
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "evaluator_log_context", default=MappingProxyType({})
)


class LogFormatError(ConfigError, ValueError):
    """An unknown log format; the message lists the allowed ones."""


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (e.g. trace_id) to every record logged inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = {**_context.get(), **{k: v for k, v in vars(record).items() if k not in _STANDARD}}
        for key, value in extra.items():
            if key in out:
                key = f"extra.{key}"  # never let a caller overwrite the fixed keys
            out[key] = REDACTED if key in CONTENT_KEYS else _jsonable(value)
        if record.exc_info:
            out["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def resolve_format(
    cli_value: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    default: str = "text",
) -> LogFormat:
    """--log-format wins, then $EVALUATOR_LOG__FORMAT, then `default` (settings `log.format`)."""
    environ = os.environ if environ is None else environ
    value = (cli_value or environ.get(ENV_FORMAT) or default).strip().lower()
    if value not in FORMATS:
        source = "--log-format" if cli_value else ENV_FORMAT
        raise LogFormatError(f"{source}: unknown log format {value!r}; use text or json")
    return cast(LogFormat, value)  # checked against FORMATS above


def configure_logging(
    level: str | int = "WARNING", fmt: str = "text", *, stream: TextIO | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one writing `fmt` to `stream` (stderr)."""
    if fmt not in FORMATS:
        raise LogFormatError(f"unknown log format {fmt!r}; use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
