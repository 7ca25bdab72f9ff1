"""Per-task calibration of the local faithfulness model: one pass mark (0.5) on every task.

The answer-level model (`judges.scorers.local_model`) ranks answers well across tasks, but its
raw output does not mean the same thing on each: extractive news summaries all look well
supported, one-sentence summaries all look novel, RAG answers sit in between. So the task is
detected from the input's structure, and the raw logit is mapped to P(hallucinated) under equal
priors by a Platt map fitted for that task type on development data:

    >>> detect_task(question="Who won?", contexts=["..."], claims=2)
    'qa'
    >>> detect_task(question="", contexts=["A long article. " * 50], claims=1)
    'extreme_summary'

Task types and where their map comes from (`bench/local_faithfulness.py --fit`):

- ``qa``: a question is present. RAGTruth QA.
- ``summary``: no question, one document, a multi-sentence answer. FRANK `valid`
  (multi-sentence summaries, nearly all CNN/DM).
- ``extreme_summary``: no question, one document, a one-sentence answer. FRANK `valid`
  (one-sentence summaries, nearly all XSum).
- ``data_to_text`` (a context is a JSON record), ``dialogue`` (the question or a context holds
  speaker turns), ``other``: no labelled data here, so the *pooled* map (all development sets,
  each (set, class) cell weighted equally) is used. Their pass mark is an extrapolation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from judges.scorers.local_contexts import record_units

TASKS = ("qa", "summary", "extreme_summary", "data_to_text", "dialogue", "other")
# "User: ...", "Assistant: ...", "Speaker 2: ..." at the start of a line: a conversation.
_TURN_RE = re.compile(
    r"^\s*(?:(?i:user|assistant|human|ai|bot|agent|customer|system|speaker\s*\w+"
    r"|apprentice|wizard)|[A-Z][a-z]{1,15})\s*:\s",
    re.MULTILINE,
)
# A document shorter than this (characters) is not something one summarises.
SUMMARY_MIN_CHARS = 400

# (slope, intercept) of P(hallucinated) = sigmoid(slope · raw logit + intercept), per task.
# Fitted by bench/local_faithfulness.py --fit: qa on RAGTruth QA (all answers, logits of the
# shipped weights), summary / extreme_summary on FRANK valid (multi- / one-sentence answers;
# out-of-sample, the weights never saw FRANK), pooled on both, each (set, class) cell equal.
CALIBRATION: dict[str, tuple[float, float]] = {
    "qa": (1.137, -0.001),
    "summary": (1.356, 4.748),
    "extreme_summary": (0.287, 0.406),
    "pooled": (0.317, 0.353),
}  # fmt: skip


def _turns(text: str) -> int:
    return len(_TURN_RE.findall(text))


def detect_task(question: str, contexts: Sequence[str], claims: int) -> str:
    """The task type of an evaluation case, from its structure alone (see module doc)."""
    if any(record_units(c) is not None for c in contexts):
        return "data_to_text"
    if _turns(question) >= 2 or any(_turns(c) >= 3 for c in contexts):
        return "dialogue"
    if question.strip():
        return "qa"
    docs = [c for c in contexts if c.strip()]
    if len(docs) == 1 and len(docs[0]) >= SUMMARY_MIN_CHARS:
        return "extreme_summary" if claims <= 1 else "summary"
    return "other"


def calibration_key(task: str, table: dict[str, tuple[float, float]] | None = None) -> str:
    """Which fitted map a task type uses (the pooled one when it has no labelled data)."""
    return task if task in (table or CALIBRATION) else "pooled"


def calibrate(
    logit: float, task: str, table: dict[str, tuple[float, float]] | None = None
) -> float:
    """P(hallucinated) under equal priors from the model's raw logit, for this task type.

    Monotone increasing in `logit` for every task (the fitted slopes are positive), so the
    calibration never reorders answers of one task; it only moves the pass mark.
    """
    slope, intercept = (table or CALIBRATION)[calibration_key(task, table)]
    z = slope * logit + intercept
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
