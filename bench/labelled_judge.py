"""Label-aware faithfulness verdicts for the loopback judge (bench/judge_server.py).

    python -m bench.judge_server --labels ../shared/data/ragtruth_qa/ragtruth_qa.jsonl \\
        --p-correct 0.9 [--drift-at 500 --p-after 0.6]

With `--labels`, a reply whose schema has per-claim verdicts (`claims[].verdict`, the one-call
and combined methods, or `checks[].verdict`, two-step's verify) is made to agree with the
human label of the answer the prompt fences (`<data kind="answer" …>`): RAGTruth calls an
answer hallucinated iff its `labels` list is non-empty. The judge is right with probability
`p_correct` per request (one seeded draw per request); from chat request number `drift_at`
on (1-based, 0 = never) it is right with `p_after` instead — a judge that drifts. A right
verdict is every claim "supported" for a faithful answer and the first claim "contradicted"
for a hallucinated one; a wrong verdict is the other way round. Everything else in the
reply (relevance verdicts, reasons) is the schema's plain instance, as without labels.
Answers not in the file are left alone and counted (`/stats`: labelled, unlabelled).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ANSWER = re.compile(
    r'<data kind="answer" nonce="([0-9a-f]+)"[^>]*>\n(.*?)\n</data nonce="\1">', re.S
)
_VERDICT_LISTS = ("claims", "checks")


def normalise(text: str) -> str:
    return " ".join(text.split())


def load_labels(path: str | Path) -> dict[str, bool]:
    """Answer text (whitespace-normalised) → hallucinated, from RAGTruth QA records."""
    out: dict[str, bool] = {}
    with Path(path).open() as f:
        for line in f:
            record = json.loads(line)
            for response in record["responses"]:
                out[normalise(response["response"])] = bool(response["labels"])
    return out


def fenced_answer(prompt: str) -> str | None:
    m = _ANSWER.search(prompt)
    return normalise(m.group(2)) if m else None


@dataclass
class LabelledVerdicts:
    labels: dict[str, bool]
    p_correct: float = 1.0
    drift_at: int = 0
    p_after: float = 1.0

    def p_at(self, request_no: int) -> float:
        return self.p_after if self.drift_at and request_no >= self.drift_at else self.p_correct

    def apply(self, reply: Any, prompt: str, request_no: int, rng: random.Random) -> bool | None:
        """Set the reply's claim verdicts in place; the label used, or None if unknown."""
        if not isinstance(reply, dict):
            return None
        key = next((k for k in _VERDICT_LISTS if isinstance(reply.get(k), list) and reply[k]), None)
        answer = fenced_answer(prompt) if key else None
        if key is None or answer is None or answer not in self.labels:
            return None
        hallucinated = self.labels[answer]
        right = rng.random() < self.p_at(request_no)
        says_hallucinated = hallucinated if right else not hallucinated
        items = reply[key]
        for i, item in enumerate(items):
            if isinstance(item, dict):
                item["verdict"] = "contradicted" if says_hallucinated and i == 0 else "supported"
        if "no_factual_claims" in reply:
            reply["no_factual_claims"] = False
        return hallucinated
