"""Judging one reply (pure): usable against its schema, or what is wrong with it.

Online and Batch API replies go through `parse_reply`, so both read a reply the same way:
tolerantly (judges.llm.formats.extract_json: code fences and surrounding prose cut away),
and a reply cut at its token limit is usable only if what arrived is a complete object that
validates (a server may report "length" on a reply that closed exactly at the limit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from judges.llm.formats import extract_json

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ReadReply(Generic[T]):
    """The outcome of reading one reply: `parsed` or a `problem`, and how it was read."""

    parsed: T | None
    problem: str
    extracted: bool = False  # dug out of prose or a code fence
    truncated: bool = False  # unusable, and cut at its token limit


def read_reply(
    raw: str | None, finish: str | None, refusal: str | None, schema: type[T]
) -> ReadReply[T]:
    if refusal:
        return ReadReply(None, f"the model refused: {refusal[:200]}")
    cut = finish == "length"
    if not raw or not raw.strip():
        why = "it was empty" + (" (cut off: finish_reason=length)" if cut else "")
        return ReadReply(None, why, truncated=cut)
    text, extracted = extract_json(raw)
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if cut:
            why = "it was cut off at its token limit (finish_reason=length)"
            return ReadReply(None, why, truncated=True)
        return ReadReply(None, f"it was not valid JSON ({exc.msg} at position {exc.pos})")
    try:
        return ReadReply(schema.model_validate_json(text), "", extracted)
    except ValidationError as exc:
        problem = f"it did not match the schema: {first_errors(exc)}"
        if cut:
            problem += " (cut off: finish_reason=length)"
        return ReadReply(None, problem, extracted, truncated=cut)


def parse_reply(
    raw: str | None, finish: str | None, refusal: str | None, schema: type[T]
) -> tuple[T | None, str]:
    """(the validated reply, "") or (None, what is wrong with it): online and batch replies
    are judged by this one function."""
    read = read_reply(raw, finish, refusal, schema)
    return read.parsed, read.problem


def read_entry(entry: str | None, schema: type[T]) -> tuple[T, str, str | None] | None:
    """A cache entry as (parsed, raw, reported model); None when absent or unusable."""
    if entry is None:
        return None
    try:
        stored = json.loads(entry)
        raw, reported = str(stored["raw"]), stored.get("model")
        return schema.model_validate_json(raw), raw, reported if isinstance(reported, str) else None
    except (ValueError, TypeError, KeyError):  # ValidationError is a ValueError
        return None  # an entry from an older format or schema: ask again


def first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
