"""Scoring logic, usable as a library: a scorer takes an EvalCase and clients, returns a Score.

Knows nothing of Redis, SQL or arq. Names resolve lazily so that importing a leaf module
(`judges.types`, `judges.redact`) does not load the judge's HTTP SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Clients": "judges.types",
    "Context": "judges.types",
    "EvalCase": "judges.types",
    "Score": "judges.types",
    "Status": "judges.types",
    "Usage": "judges.types",
    "JudgeClient": "judges.llm.client",
    "Rubric": "judges.rubric",
    "run_scorer": "judges.scorers.registry",
}

__all__ = [
    "Clients",
    "Context",
    "EvalCase",
    "JudgeClient",
    "Rubric",
    "Score",
    "Status",
    "Usage",
    "run_scorer",
]

if TYPE_CHECKING:
    from judges.llm.client import JudgeClient
    from judges.rubric import Rubric
    from judges.scorers.registry import run_scorer
    from judges.types import Clients, Context, EvalCase, Score, Status, Usage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'judges' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
