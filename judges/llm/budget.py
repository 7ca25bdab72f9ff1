"""Reply budgets (`max_tokens`) sized from the reply's JSON schema (pure).

One budget for every reply wastes time or cuts replies: a 1,024-token budget lets a base
model ramble for half a minute on a CPU before it is cut mid-JSON, and the same budget is
too small for a faithfulness reply listing twenty claims. The budget of a call is instead
estimated from the schema the reply must match:

- a string: `maxLength / 3` tokens when bounded (about 3 characters per token, on the safe
  side of English's ~4), else `STRING_TOKENS` (a sentence of reasoning); an enum, its
  longest value;
- a number, integer, boolean or null: `SCALAR_TOKENS`;
- an array: `maxItems` (else `minItems`, else `ARRAY_ITEMS`) times its item, plus brackets;
- an object: each property's name (about len/3 + 3 tokens of quotes, colon and comma) and
  value, plus braces; `$ref`s resolved; `anyOf`/`oneOf`, the largest branch;

then times `MARGIN` plus `OVERHEAD` (whitespace, a preamble some servers add), within
[`FLOOR`, the ceiling] — the ceiling is `judge.max_output_tokens`. A rubric's
`[judge] max_output_tokens` replaces the estimate. A reply cut at its budget is retried
once with `retry_budget` (twice the budget), never with the same request.

    >>> estimate_tokens({"type": "object", "properties": {"score": {"type": "integer"}}})
    10
    >>> reply_budget({"type": "object", "properties": {"score": {"type": "integer"}}}, 1024)
    64
    >>> retry_budget(64)
    128
"""

from __future__ import annotations

import math
from typing import Any

STRING_TOKENS = 64
SCALAR_TOKENS = 3
ARRAY_ITEMS = 8
MARGIN = 1.5
OVERHEAD = 16
FLOOR = 64
_DEPTH = 12  # deeper than any reply schema; stops a recursive $ref


def estimate_tokens(schema: dict[str, Any]) -> int:
    """Tokens a compact JSON reply matching `schema` is expected to take (no margin)."""
    return _estimate(schema, schema.get("$defs") or schema.get("definitions") or {}, 0)


def _estimate(node: Any, defs: dict[str, Any], depth: int) -> int:
    if not isinstance(node, dict) or depth > _DEPTH:
        return SCALAR_TOKENS
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _estimate(defs.get(ref.rsplit("/", 1)[-1], {}), defs, depth + 1)
    branches = node.get("anyOf") or node.get("oneOf") or node.get("allOf")
    if isinstance(branches, list) and branches:
        return max(_estimate(b, defs, depth + 1) for b in branches)
    if "enum" in node or "const" in node:
        values = node.get("enum") or [node.get("const")]
        return max(math.ceil(len(str(v)) / 3) for v in values) + 2
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        props = node.get("properties") or {}
        inner = sum(
            math.ceil(len(name) / 3) + 3 + _estimate(value, defs, depth + 1)
            for name, value in props.items()
        )
        return 2 + inner
    if kind == "array":
        items = node.get("maxItems") or node.get("minItems") or ARRAY_ITEMS
        return 2 + int(items) * (_estimate(node.get("items", {}), defs, depth + 1) + 1)
    if kind == "string":
        bound = node.get("maxLength")
        return (math.ceil(int(bound) / 3) if bound else STRING_TOKENS) + 2
    return SCALAR_TOKENS


def reply_budget(schema: dict[str, Any], ceiling: int, override: int | None = None) -> int:
    """`max_tokens` for a reply matching `schema`: the rubric's override when set, else the
    estimate with its margin, within [FLOOR, ceiling]."""
    if override is not None:
        return override
    wanted = math.ceil(estimate_tokens(schema) * MARGIN) + OVERHEAD
    return max(min(FLOOR, ceiling), min(wanted, ceiling))


def retry_budget(budget: int) -> int:
    """The budget of the one retry after a reply was cut: twice the first (never the same
    request again; it may exceed the ceiling, which bounds first attempts only)."""
    return budget * 2
