"""How much of each judge request is a byte-stable prefix that provider prompt caches reuse.

    python -m bench.prefix_share

For every shipped rubric (evaluator/rubrics/*.toml; a rubric whose method makes no judge call
is measured with its `judge` method) plus the three RAG rubrics' `combined` method, the real
scorer renders its request for each demo trace (evaluator/data/ragtruth_sample.jsonl; the
agent rubrics use agent_sample.jsonl) into a capturing judge that sends nothing. The stable
prefix of a request is its system message plus the longest user-message prefix every trace
shares; share = stable bytes / (system + user bytes), averaged over traces. The reply schema
(`response_format`) is reported apart: some providers put it before the messages, so a schema
that differs between traces (lengths fixed per document count) splits their cache there.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evaluator.config.rubrics import load_rubrics
from evaluator.traces.cases import build_case
from evaluator.traces.model import parse_trace
from judges.errors import JudgeError
from judges.llm.client import JudgeClient
from judges.rubric import METHODS, Rubric
from judges.scorers.registry import needs_judge, run_scorer
from judges.types import Clients, EvalCase

from .report import command_line, machine, table

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "evaluator" / "data"
_AGENT = {"tool_use", "tool_selection"}


@dataclass
class Captured:
    requests: list[tuple[list[dict[str, str]], str]] = field(default_factory=list)


class CapturingJudge(JudgeClient):
    """Records what would be sent, then fails the call (the scorer records an error)."""

    def __init__(self, sink: Captured) -> None:
        super().__init__(base_url="http://127.0.0.1:9/v1", model="capture")
        self.sink = sink

    async def complete(self, messages: Any, schema: type[BaseModel], **_: Any) -> Any:
        self.sink.requests.append((messages, json.dumps(self._format(schema), sort_keys=True)))
        raise JudgeError("captured, not sent")


def load_cases(name: str) -> list[EvalCase]:
    with (DATA / name).open() as f:
        return [build_case(parse_trace(json.loads(line))) for line in f if line.strip()]


def common_prefix(texts: list[str]) -> str:
    """Longest prefix of every text, character by character (these are not paths)."""
    if not texts:
        return ""
    first, last = min(texts), max(texts)  # the extremes bound every other text's prefix
    n = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
    return first[:n]


def measured(rubric: Rubric) -> Rubric:
    if needs_judge(rubric):
        return rubric
    if "judge" in METHODS[rubric.scorer]:
        return rubric.model_copy(update={"method": "judge"})
    return rubric  # a local-only scorer: no request to measure


async def capture(rubric: Rubric, cases: list[EvalCase]) -> list[tuple[list[dict[str, str]], str]]:
    sink = Captured()
    judge = CapturingJudge(sink)
    for case in cases:
        # The first request of each case (two-step and self-consistency send more).
        before = len(sink.requests)
        await run_scorer(case, rubric, Clients(judge=judge))
        del sink.requests[before + 1 :]
    await judge.aclose()
    return sink.requests


def share_row(label: str, requests: list[tuple[list[dict[str, str]], str]]) -> list[str]:
    if not requests:
        return [label, "0", "no judge request", "", "", ""]
    systems = {m[0]["content"] for m, _ in requests}
    users = [m[1]["content"] for m, _ in requests]
    static_user = common_prefix(users).encode()
    shares, totals = [], []
    for messages, _ in requests:
        system, user = (m["content"].encode() for m in messages[:2])
        stable = len(system) + len(static_user)
        shares.append(stable / (len(system) + len(user)))
        totals.append(len(system) + len(user))
    schemas = {s for _, s in requests}
    return [
        label,
        str(len(requests)),
        f"{sum(shares) / len(shares):.1%} (min {min(shares):.1%})",
        f"{len(next(iter(systems)).encode()):,} + {len(static_user):,}"
        + ("" if len(systems) == 1 else f" (system varies: {len(systems)} forms)"),
        f"{sum(totals) / len(totals):,.0f}",
        f"{len(schemas)} ({len(next(iter(schemas))):,} B)",
    ]


async def main() -> None:
    rag, agent = load_cases("ragtruth_sample.jsonl"), load_cases("agent_sample.jsonl")
    rubrics = load_rubrics(REPO / "evaluator" / "rubrics").rubrics
    rows = []
    for rubric in sorted(rubrics, key=lambda r: r.name):
        r = measured(rubric)
        agentic = r.scorer in _AGENT or (r.llm_rubric and "tool_calls" in r.llm_rubric.inputs)
        cases = agent if agentic else rag
        label = f"{r.name} ({r.resolved_method})"
        rows.append(share_row(label, await capture(r, cases)))
    combined = Rubric(name="combined", version="1", scorer="faithfulness", method="combined")
    rows.append(share_row("faithfulness+relevance (combined)", await capture(combined, rag)))
    print(f"$ {command_line()}\nmachine: {machine()}\n")
    header = [
        "rubric (method measured)",
        "requests",
        "stable-prefix share, mean (min)",
        "stable bytes: system + user prefix",
        "mean request bytes (messages)",
        "distinct reply schemas (size)",
    ]
    print(table(header, rows))


if __name__ == "__main__":
    asyncio.run(main())
