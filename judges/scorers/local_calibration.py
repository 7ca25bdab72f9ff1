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
# "User: ...", "Assistant: ...", "Speaker 2: ..." opening a line, with text after the colon.
_TURN_RE = re.compile(
    r"^[ \t]*((?i:user|assistant|human|ai|bot|agent|customer|system|speaker[ \t]*\w+"
    r"|apprentice|wizard)|[A-Z][a-z]{1,15})[ \t]*:[ \t]+\S",
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
    "summary": (1.32, 4.621),
    "extreme_summary": (0.289, 0.407),
    "pooled": (0.317, 0.353),
}


def is_dialogue(text: str) -> bool:
    """Whether the text is a conversation: at least three turns by at least two speakers, and
    turns open at least half of its lines (news captions such as "Injured: ..." do not)."""
    speakers = [m.group(1).lower() for m in _TURN_RE.finditer(text)]
    lines = sum(bool(line.strip()) for line in text.splitlines())
    return len(speakers) >= 3 and len(set(speakers)) >= 2 and 2 * len(speakers) >= lines


def detect_task(question: str, contexts: Sequence[str], claims: int) -> str:
    """The task type of an evaluation case, from its structure alone (see module doc)."""
    if any(record_units(c) is not None for c in contexts):
        return "data_to_text"
    if is_dialogue(question) or any(is_dialogue(c) for c in contexts):
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
