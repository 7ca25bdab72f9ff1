"""How a structured reply is asked for, and read back tolerantly (pure).

Endpoints differ in what they honour. OpenAI and llama.cpp constrain the reply to a
`json_schema`; some OpenAI-compatible servers accept only `json_object`, some answer 400 to
either, and some accept the field and ignore it, replying in prose or in a ```json fence.
The client walks down `FORMATS` when an endpoint shows it does not honour the current one:

1. `json_schema` — the schema in `response_format` (the server constrains the reply);
2. `json_object_schema` — `{"type": "json_object", "schema": ...}`, which llama-cpp-python's
   server (it refuses `json_schema`: HTTP 500, a validation error) turns into a grammar;
3. `json_object` — `{"type": "json_object"}` plus the schema in the prompt;
4. `prompt` — no `response_format` at all, the schema in the prompt only.

Formats 2-4 also carry the schema in the prompt, at the end of the last user message (not a
system message: some chat templates drop system messages or refuse one after the first).

Whatever the format, a reply is read tolerantly (`extract_json`): a code fence is
stripped, and prose around one JSON object is cut away. The path taken is recorded with
each record (`details.judge_format`, `details.judge_reply_extracted`).

    >>> extract_json('Sure! ```json\\n{"score": 3}\\n``` Hope this helps.')
    ('{"score": 3}', True)
    >>> extract_json('{"score": 3}')
    ('{"score": 3}', False)
    >>> next_format("json_schema"), next_format("json_object"), next_format("prompt")
    ('json_object_schema', 'prompt', None)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

FORMATS = ("json_schema", "json_object_schema", "json_object", "prompt")

SCHEMA_NOTE = (
    "Reply with only one JSON object that matches this JSON schema, with no prose and no "
    "code fences:\n{schema}"
)
BREVITY_NOTE = (
    "Your previous reply was cut off at its length limit. Reply again with the same JSON "
    "object, keeping every free-text field to a few words."
)
# Words a server's 400 uses when it refuses the response format itself (not the prompt).
_FORMAT_WORDS = ("response_format", "json_schema", "json_object", "grammar", "schema")


def next_format(current: str) -> str | None:
    """The format to fall back to after `current`; None after the last."""
    index = FORMATS.index(current)
    return FORMATS[index + 1] if index + 1 < len(FORMATS) else None


def response_format(kind: str, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The request's `response_format` field for `kind`; None = leave it out."""
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if kind == "json_object_schema":
        return {"type": "json_object", "schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def with_schema_note(
    messages: list[dict[str, str]], kind: str, schema: dict[str, Any]
) -> list[dict[str, str]]:
    """The messages of a `kind` request: formats other than `json_schema` carry the schema
    in the prompt, appended to the last user message (after the stable prefix, which stays
    cacheable), or as a user message of its own when the last one is not the user's."""
    if kind == "json_schema":
        return messages
    note = SCHEMA_NOTE.format(schema=json.dumps(schema, separators=(",", ":")))
    last = messages[-1] if messages else None
    if last is not None and last.get("role") == "user":
        return [*messages[:-1], {**last, "content": f"{last.get('content') or ''}\n\n{note}"}]
    return [*messages, {"role": "user", "content": note}]


def system_as_user(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The messages with every system message moved to the front of the first user message
    (`judge.system_role = "user"`): for chat templates without a system turn, which drop it
    (llama-cpp-python's `gemma` format does, silently) and with it the judge's instructions.

    >>> system_as_user([{"role": "system", "content": "Grade."}, {"role": "user", "content": "A"}])
    [{'role': 'user', 'content': 'Grade.\\n\\nA'}]
    """
    system = [m.get("content") or "" for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    if not system:
        return messages
    prefix = "\n\n".join(system)
    for i, message in enumerate(rest):
        if message.get("role") == "user":
            folded = {**message, "content": f"{prefix}\n\n{message.get('content') or ''}"}
            return [*rest[:i], folded, *rest[i + 1 :]]
    return [{"role": "user", "content": prefix}, *rest]


def refuses_format(status: int, body: str) -> bool:
    """A 400/422 that names the response format: the endpoint does not support it. Also a
    500 whose body is a validation error on `response_format` (llama-cpp-python's server
    answers `json_schema` so: a literal_error at body.response_format.type)."""
    text = body.lower()
    if status in (400, 422):
        return any(word in text for word in _FORMAT_WORDS)
    return (
        status == 500
        and "response_format" in text
        and any(word in text for word in ("validation", "literal_error", "not supported"))
    )


def extract_json(text: str) -> tuple[str, bool]:
    """(the JSON object text of a reply, whether it had to be dug out).

    Tried in order: the reply as is; inside its first code fence; the first balanced
    `{...}` in it (quotes and escapes respected). When none parses, the stripped reply is
    returned unchanged, for the caller to report why it is not JSON.
    """
    stripped = text.strip()
    if _parses(stripped):
        return stripped, False
    fenced = _inside_fence(stripped)
    if fenced is not None and _parses(fenced):
        return fenced, True
    for found in _objects(stripped):
        if _parses(found):
            return found, True
    return stripped, False


def looks_like_json(text: str | None) -> bool:
    """Whether a reply at least starts a JSON object somewhere; a reply without one means
    the endpoint ignored the response format (a cut or broken object does not)."""
    return "{" in (text or "")


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _inside_fence(text: str) -> str | None:
    start = text.find("```")
    if start < 0:
        return None
    body = text[start + 3 :]
    newline = body.find("\n")
    body = body[newline + 1 :] if newline >= 0 else ""  # drop the info string ("json")
    end = body.find("```")
    return (body[:end] if end >= 0 else body).strip()


def _objects(text: str) -> Iterator[str]:
    """Balanced {...} spans of `text`, left to right, each starting after the last. Stops
    at one that never closes (a cut reply): an object nested inside it is not the reply."""
    start = text.find("{")
    while start >= 0:
        depth, in_string, escaped, end = 0, False, False, -1
        for i in range(start, len(text)):
            char = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end < 0:
            return
        yield text[start : end + 1]
        start = text.find("{", end + 1)
