"""Scoring logic, usable as a library: a scorer takes an EvalCase and clients, returns a Score.

Knows nothing of Redis, SQL or arq.
"""

from __future__ import annotations

from .client import JudgeClient
from .rubric import Rubric
from .scorers import Clients, run_scorer
from .types import Context, EvalCase, Score, Status, Usage

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
