"""Text the databases refuse, removed before any write (pure).

PostgreSQL rejects NUL in text and in JSON (`\\u0000`), and no driver encodes a lone
surrogate; a judge reply or a trace may carry either. Every write path in store/ passes its
values through `clean` so that one odd character never makes a record unrecordable.
"""

from __future__ import annotations

import re
from typing import Any

_BAD = re.compile("[\x00\ud800-\udfff]")


def _replace(match: re.Match[str]) -> str:
    return "" if match.group() == "\x00" else "\ufffd"


def clean_text(text: str) -> str:
    return _BAD.sub(_replace, text) if _BAD.search(text) else text


def clean(value: Any) -> Any:
    """`value` with every string inside it (dict keys too) cleaned; other values as they are."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value
