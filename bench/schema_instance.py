"""Minimal valid instances of a JSON schema (pure), for the benchmark judge server.

The fake judge must answer every structured request with something the caller accepts, or
the benchmark measures re-asks instead of throughput. So the instance is *valid*, not
merely present: enums pick their first value, integers respect minimum/maximum, arrays
have at least `min_items` (and minItems) elements, and every declared property is filled
(a Pydantic validator may reject an object with only the required keys, e.g. an empty
claim list without its flag).

    >>> instance({"type": "object", "properties": {"v": {"enum": ["a", "b"]}}})
    {'v': 'a'}
"""

from __future__ import annotations

import json
from typing import Any

_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


def instance(schema: dict[str, Any], *, min_items: int = 1, string_words: int = 6) -> Any:
    """A value valid for `schema` (draft 2020-12 subset used by Pydantic and instructor)."""
    return _Gen(schema, min_items=min_items, string_words=string_words).value(schema, 0)


class _Gen:
    def __init__(self, root: dict[str, Any], *, min_items: int, string_words: int) -> None:
        self.root = root
        self.min_items = min_items
        self.text = " ".join(_WORDS[i % len(_WORDS)] for i in range(max(string_words, 1)))

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:  # "#/$defs/Name" or "#/definitions/Name"
            node: Any = self.root
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part] if part else node
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        return schema

    def value(self, schema: dict[str, Any] | bool, index: int) -> Any:
        if schema is True or schema == {}:
            return self.text
        if schema is False:
            raise ValueError("schema 'false' has no valid instance")
        assert isinstance(schema, dict)
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self.resolve(o) for o in schema[key]]
                non_null = [o for o in options if o.get("type") != "null"]
                return self.value((non_null or options)[0], index)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self.resolve(part)
                merged.setdefault("properties", {}).update(part.get("properties", {}))
                merged.update({k: v for k, v in part.items() if k != "properties"})
            return self.value(merged, index)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else ""
        return self.typed(kind, schema, index)

    def typed(self, kind: str, schema: dict[str, Any], index: int) -> Any:
        if kind == "object":
            props = schema.get("properties", {})
            return {name: self.value(sub, index) for name, sub in props.items()}
        if kind == "array":
            return self.array(schema)
        if kind in ("integer", "number"):
            return self.number(schema, index, integer=kind == "integer")
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return self.string(schema)

    def array(self, schema: dict[str, Any]) -> list[Any]:
        prefix = schema.get("prefixItems", [])
        count = max(schema.get("minItems", 0), self.min_items, len(prefix))
        if "maxItems" in schema:
            count = min(count, schema["maxItems"])
        items = schema.get("items", {})
        return [self.value(prefix[i] if i < len(prefix) else items, i) for i in range(count)]

    @staticmethod
    def number(schema: dict[str, Any], index: int, *, integer: bool) -> int | float:
        # Position + 1 inside an array: ids 1..n, which numbered-document replies expect.
        value: float = index + 1
        low = schema.get("minimum")
        if "exclusiveMinimum" in schema:
            low = schema["exclusiveMinimum"] + (1 if integer else 1e-6)
        high = schema.get("maximum")
        if "exclusiveMaximum" in schema:
            high = schema["exclusiveMaximum"] - (1 if integer else 1e-6)
        if low is not None:
            value = max(value, low)
        if high is not None:
            value = min(value, high)
        return int(value) if integer else float(value)

    def string(self, schema: dict[str, Any]) -> str:
        text = self.text
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if len(text) < low:
            text = (text + " ") * (low // (len(text) + 1) + 1)
        return text[:high] if high is not None else text[: max(low, len(text))]


def schema_in_text(text: str) -> dict[str, Any] | None:
    """The last JSON schema embedded in a prompt (JSON mode callers such as instructor and
    ragas paste the schema into the system message instead of sending it)."""
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict) and ("properties" in obj or "$defs" in obj):
            found = obj
        pos = text.find("{", end)
    return found
