"""JSON job serialization for arq: write access to Redis must not mean code execution
on the worker, which arq's default (pickle) would allow."""

from __future__ import annotations

import json
from typing import Any


def serialize(obj: Any) -> bytes:
    # default=str: arq stores a failed job's exception in its result; keep its text.
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def deserialize(data: bytes) -> Any:
    return json.loads(data)
