"""GenAI semantic conventions, old and new, onto the trace format's attributes (pure).

Instrumentations disagree on where a model call's messages live: `gen_ai.input.messages`
as JSON strings (current semconv), OpenLLMetry's indexed `gen_ai.prompt.N.*` /
`gen_ai.completion.N.*`, plain `gen_ai.prompt` / `gen_ai.completion`, span events, and
OpenInference's `retrieval.documents.N.*`. `normalize_genai` folds them into one shape.
"""

from __future__ import annotations

import json
from typing import Any

_JSON_ATTRS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.retrieval.documents",
    "gen_ai.tool.definitions",
    "evaluator.samples",
)
# Span kinds other instrumentations use → gen_ai.operation.name.
_KIND_TO_OPERATION = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "llm": "chat",
    "retriever": "retrieval",
    "tool": "execute_tool",
    "agent": "invoke_agent",
}
_OLD_USAGE = {
    "gen_ai.usage.prompt_tokens": "gen_ai.usage.input_tokens",
    "gen_ai.usage.completion_tokens": "gen_ai.usage.output_tokens",
}


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{", '"'):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """`{prefix}0.role`, `{prefix}0.content`, ... → [{"role", "content"}, ...] by index."""
    items: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if index.isdigit() and rest:
            items.setdefault(int(index), {})[rest] = value
    return [items[i] for i in sorted(items)]


def _content_text(content: Any) -> Any:
    # OpenLLMetry writes multimodal content as a JSON list of {"type": "text", "text": ...}.
    parsed = _maybe_json(content)
    if isinstance(parsed, list) and all(isinstance(p, dict) for p in parsed):
        return "\n".join(str(p.get("text", p.get("content", ""))) for p in parsed)
    return content


def _flat_message(flat: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": flat.get("role", "user")}
    content = _content_text(flat.get("content"))
    calls = _indexed(flat, "tool_calls.")
    if calls:
        parts: list[dict[str, Any]] = [{"type": "text", "content": content}] if content else []
        parts += [
            {
                "type": "tool_call",
                "id": c.get("id"),
                "name": c.get("name"),
                "arguments": _maybe_json(c.get("arguments")),
            }
            for c in calls
        ]
        message["parts"] = parts
    else:
        message["content"] = "" if content is None else content
    if "finish_reason" in flat:
        message["finish_reason"] = flat["finish_reason"]
    return message


def _messages(value: Any, default_role: str) -> list[dict[str, Any]] | None:
    """The JSON-string `gen_ai.prompt` / `gen_ai.completion` forms → messages."""
    parsed = _maybe_json(value)
    if isinstance(parsed, dict):
        parsed = parsed.get("messages", parsed.get("choices", [parsed]))
    if isinstance(parsed, list):
        out = [m.get("message", m) for m in parsed if isinstance(m, dict)]
        return [m if "role" in m else {"role": default_role, **m} for m in out] or None
    if isinstance(parsed, str) and parsed:
        return [{"role": default_role, "content": parsed}]
    return None


def _from_events(attrs: dict[str, Any], events: tuple[tuple[str, dict[str, Any]], ...]) -> None:
    """Older instrumentations put content on span events instead of attributes."""
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for name, ev in events:
        if name in ("gen_ai.content.prompt", "gen_ai.content.completion"):
            for key in ("gen_ai.prompt", "gen_ai.completion"):
                if key in ev:
                    attrs.setdefault(key, ev[key])
        elif name == "gen_ai.client.inference.operation.details":
            for key, value in ev.items():
                attrs.setdefault(key, value)
        elif name.startswith("gen_ai.") and name.endswith(".message") and "content" in ev:
            role = ev.get("role", name.removeprefix("gen_ai.").removesuffix(".message"))
            inputs.append({"role": role, "content": _content_text(ev["content"])})
        elif name == "gen_ai.choice":
            message = _maybe_json(ev.get("message", {"content": ev.get("content", "")}))
            if isinstance(message, dict):
                outputs.append({"role": "assistant", **message})
                if "finish_reason" in ev:
                    outputs[-1]["finish_reason"] = ev["finish_reason"]
    if inputs:
        attrs.setdefault("gen_ai.input.messages", inputs)
    if outputs:
        attrs.setdefault("gen_ai.output.messages", outputs)


def _documents(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    # OpenInference: retrieval.documents.0.document.id / .content
    docs = _indexed(attrs, "retrieval.documents.")
    if not docs:
        return None
    return [
        {
            "id": str(d.get("document.id", i)),
            "content": str(d.get("document.content", "")),
            **({"score": d["document.score"]} if "document.score" in d else {}),
        }
        for i, d in enumerate(docs)
    ]


def normalize_genai(
    attributes: dict[str, Any], events: tuple[tuple[str, dict[str, Any]], ...] = ()
) -> dict[str, Any]:
    """Span attributes → the trace format's attributes (JSON strings decoded, older and
    indexed forms turned into `gen_ai.input.messages` / `gen_ai.output.messages`)."""
    attrs = dict(attributes)
    _from_events(attrs, events)
    for key in _JSON_ATTRS:
        if key in attrs:
            attrs[key] = _maybe_json(attrs[key])
    for prefix, target, role in (
        ("gen_ai.prompt.", "gen_ai.input.messages", "user"),
        ("gen_ai.completion.", "gen_ai.output.messages", "assistant"),
    ):
        flat = _indexed(attrs, prefix)
        if flat:  # drop the flattened keys: they are now one structured attribute
            attrs = {k: v for k, v in attrs.items() if not k.startswith(prefix)}
            attrs.setdefault(target, [_flat_message({"role": role, **m}) for m in flat])
        bare = attrs.get(prefix[:-1])
        if target not in attrs and bare is not None:
            messages = _messages(bare, role)
            if messages:
                attrs[target] = messages
    for old, new in _OLD_USAGE.items():
        if old in attrs:
            attrs.setdefault(new, attrs[old])
    documents = _documents(attrs)
    if documents is not None:
        attrs = {k: v for k, v in attrs.items() if not k.startswith("retrieval.documents.")}
        attrs.setdefault("gen_ai.retrieval.documents", documents)
    if "gen_ai.operation.name" not in attrs:
        kind = attrs.get("llm.request.type") or attrs.get("openinference.span.kind")
        operation = _KIND_TO_OPERATION.get(str(kind).lower()) if kind else None
        if operation is None and "gen_ai.output.messages" in attrs:
            operation = "chat"
        elif operation is None and "gen_ai.retrieval.documents" in attrs:
            operation = "retrieval"
        if operation:
            attrs["gen_ai.operation.name"] = operation
    return attrs
