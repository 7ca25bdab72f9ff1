"""Reading OpenAI-compatible replies (pure): the chat-completion fields a judge uses, a JSON
reply inside code fences, and how long a 429 or 503 asks the caller to wait."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Completion:
    """The fields of a chat completion the judge reads (the first choice only)."""

    content: str | None
    finish_reason: str | None
    refusal: str | None
    input_tokens: int
    output_tokens: int
    # A usage block that could not be read: the verdict stands, its tokens count as 0.
    usage_problem: str | None = None
    model: str | None = None  # what the provider reports having run (may differ from asked)


def read_completion(body: bytes) -> Completion:
    """Parse an OpenAI chat-completion body; ValueError names what is missing or wrong."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON ({exc})") from exc
    return completion_of(payload)


def completion_of(payload: Any) -> Completion:
    """Read a decoded chat-completion body (a Batch API output line carries one)."""
    if not isinstance(payload, dict):
        raise ValueError(f"body is a JSON {type(payload).__name__}, not an object")
    if "choices" not in payload:
        raise ValueError("body has no 'choices'")
    usage = payload.get("usage") or {}
    problems: list[str] = []
    if not isinstance(usage, dict):
        problems.append(f"'usage' is a {type(usage).__name__}, not an object")
        usage = {}
    tokens_in = _count(usage.get("prompt_tokens"), "usage.prompt_tokens", problems)
    tokens_out = _count(usage.get("completion_tokens"), "usage.completion_tokens", problems)
    problem = "; ".join(problems) or None
    reported = payload.get("model") if isinstance(payload.get("model"), str) else None
    choices = payload["choices"]
    if not isinstance(choices, list):
        raise ValueError("'choices' is not a list")
    if not choices:
        return Completion(None, None, None, tokens_in, tokens_out, problem, reported)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ValueError("choices[0] has no 'message' object")
    content = message.get("content")
    refusal = message.get("refusal")
    finish = choice.get("finish_reason")
    for name, value in (("content", content), ("refusal", refusal), ("finish_reason", finish)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"choices[0] {name} is a {type(value).__name__}, not a string")
    return Completion(content, finish, refusal, tokens_in, tokens_out, problem, reported)


def _count(value: Any, name: str, problems: list[str]) -> int:
    # Some servers send 12.0 for 12; anything else is noted and counted as 0.
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    problems.append(f"{name} is {value!r}, not a token count")
    return 0


def strip_fences(text: str) -> str:
    # Some servers in json_object mode still wrap the object in ``` fences.
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None when
    absent or unreadable. `headers` must look keys up case-insensitively (httpx's do)."""
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except (ValueError, TypeError):
        return None
