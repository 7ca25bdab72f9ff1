"""Structured logs: one JSON object per line, extra fields, trace_id context, no trace content."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from evaluator.config.logs import (
    REDACTED,
    LogFormatError,
    configure_logging,
    log_context,
    resolve_format,
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_with_fixed_keys_and_extra_fields(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("evaluator.worker.pipeline")

    log.info("scored %d rubrics", 3, extra={"trace_id": "4bf9", "rubric": "tone", "n": 2})
    log.debug("not shown at INFO")

    [entry] = lines(stream)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "evaluator.worker.pipeline"
    assert entry["message"] == "scored 3 rubrics"
    assert (entry["trace_id"], entry["rubric"], entry["n"]) == ("4bf9", "tone", 2)
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]


def test_trace_content_in_extra_fields_is_never_written(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    secret = "the customer's SSN is 123-45-6789"

    logging.getLogger("evaluator").warning(
        "bad trace",
        extra={"trace_id": "t1", "payload": {"spans": [secret]}, "answer": secret},
    )

    assert secret not in stream.getvalue()
    [entry] = lines(stream)
    assert entry["payload"] == entry["answer"] == REDACTED
    assert entry["trace_id"] == "t1"


def test_log_context_adds_trace_id_across_threads(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("evaluator.worker.app")

    async def job() -> None:
        with log_context(trace_id="t-42", job="evaluate"):
            log.info("start")
            await asyncio.to_thread(log.info, "in a thread")
        log.info("after")

    asyncio.run(job())

    first, second, after = lines(stream)
    assert first["trace_id"] == second["trace_id"] == "t-42"
    assert "trace_id" not in after


def test_exceptions_and_fixed_keys_are_kept_safe(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    try:
        raise RuntimeError("judge exploded")
    except RuntimeError:
        logging.getLogger("x").exception("failed", extra={"level": "DEBUG", "logger": "spoofed"})

    [entry] = lines(stream)
    assert (entry["level"], entry["logger"]) == ("ERROR", "x")
    assert (entry["extra.level"], entry["extra.logger"]) == ("DEBUG", "spoofed")
    assert entry["exc_type"] == "RuntimeError"
    assert "judge exploded" in entry["exc"]


def test_unserialisable_extra_values_become_strings(stream: io.StringIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    logging.getLogger("x").info("odd", extra={"when": object(), "ids": ("a", "b")})

    [entry] = lines(stream)
    assert entry["when"].startswith("<object object")
    assert entry["ids"] == ["a", "b"]


def test_text_format_is_the_default(stream: io.StringIO) -> None:
    configure_logging("WARNING", resolve_format(None, environ={}), stream=stream)
    logging.getLogger("evaluator.intake.drain").warning("slow", extra={"trace_id": "t1"})

    assert stream.getvalue() == "WARNING evaluator.intake.drain: slow\n"


def test_format_from_flag_then_environment() -> None:
    assert resolve_format(None, environ={"EVALUATOR_LOG__FORMAT": "JSON"}) == "json"
    assert resolve_format("text", environ={"EVALUATOR_LOG__FORMAT": "json"}) == "text"
    assert resolve_format(None, environ={}, default="json") == "json"  # settings log.format
    with pytest.raises(LogFormatError, match="EVALUATOR_LOG__FORMAT: unknown log format 'xml'"):
        resolve_format(None, environ={"EVALUATOR_LOG__FORMAT": "xml"})
    with pytest.raises(LogFormatError, match="use text or json"):
        configure_logging("INFO", "yaml")
