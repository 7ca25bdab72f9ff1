"""Replay a dataset under two prompt templates and score both answers, item by item.

The service stores rendered messages, not templates, so the user supplies both templates:
text files whose `{question}` and `{contexts}` (and `{context_1}`, ...) placeholders are
filled from each dataset item. Both are sent to the configured OpenAI-compatible generator
(`generator.*`, else the judge's endpoint) and scored with the rubric under the current
judge, so the pair differs only in the prompt. Pairs where either side could not be scored
are counted and left out, never scored as 0 or 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.errors import ConfigError, InputError
from evaluator.traces.cases import build_case
from evaluator.traces.model import parse_trace
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.types import Clients, EvalCase, Status


@dataclass(frozen=True)
class ReplayOutcome:
    pairs: list[tuple[float, float]]
    skipped: list[tuple[str, str]]  # (trace id, why the pair is left out)
    generator_calls: int
    judge_calls: int
    cost_usd: float


def read_dataset(path: Path) -> Iterator[EvalCase]:
    """Cases from a dataset JSONL: `{"trace": {...}, ...}` lines (the labelled format) or
    bare trace documents; a bad line raises InputError naming it."""
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                trace = parse_trace(doc.get("trace", doc) if isinstance(doc, dict) else doc)
                yield build_case(trace)
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path}:{number}: {exc}") from None


def render(template: str, case: EvalCase) -> str:
    """Fill a template's placeholders from a case; an unknown placeholder is a ConfigError."""
    values: dict[str, str] = {
        "question": case.question,
        "contexts": "\n\n".join(c.text for c in case.contexts),
    }
    values.update({f"context_{i}": c.text for i, c in enumerate(case.contexts, 1)})
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = sorted(names - set(values))
    if unknown:
        raise ConfigError(f"template placeholder(s) {unknown} unknown; use {sorted(values)[:4]}")
    return template.format(**{name: values[name] for name in names})


async def _answer(clients: Clients, case: EvalCase, template: str, model: str) -> tuple[str, Any]:
    assert clients.generator is not None
    messages = [{"role": "user", "content": render(template, case)}]
    # The app's own reply budget (gen_ai.request.max_tokens, ...) goes with the prompt: without
    # it a server generates until its context is full (minutes per item on a CPU server).
    params = {k: v for k, v in case.generation.items() if k != "temperature"}
    texts, usage = await clients.generator.sample(messages, model, 1, temperature=0.0, **params)
    return (texts[0] if texts else ""), usage


async def _score_pair(
    case: EvalCase, templates: tuple[str, str], rubric: Rubric, clients: Clients, model: str
) -> tuple[tuple[float, float] | None, str, int, int, float]:
    scores: list[float] = []
    gen_calls = judge_calls = 0
    cost = 0.0
    for template in templates:
        answer, usage = await _answer(clients, case, template, model)
        gen_calls += 1
        cost += usage.cost_usd
        score = await run_scorer(dataclasses.replace(case, answer=answer), rubric, clients)
        judge_calls += score.usage.calls
        cost += score.usage.cost_usd
        if score.status is not Status.OK or score.value is None:
            return None, f"{score.status}: {score.explanation[:120]}", gen_calls, judge_calls, cost
        scores.append(score.value)
    return (scores[0], scores[1]), "", gen_calls, judge_calls, cost


async def replay(
    cases: Sequence[EvalCase],
    templates: tuple[str, str],
    rubric: Rubric,
    clients: Clients,
    *,
    model: str | None = None,
    concurrency: int = 8,
) -> ReplayOutcome:
    """Generate and score (baseline, candidate) for every case, `concurrency` at a time."""
    if clients.generator is None:
        raise ConfigError("replay needs a generator: set generator.base_url (or judge.base_url)")
    limit = asyncio.Semaphore(concurrency)

    async def one(case: EvalCase) -> tuple[tuple[float, float] | None, str, int, int, float]:
        async with limit:
            chosen = model or case.model
            if not chosen:
                return None, "no model: pass --model or store gen_ai.request.model", 0, 0, 0.0
            return await _score_pair(case, templates, rubric, clients, chosen)

    results = await asyncio.gather(*(one(c) for c in cases))
    pairs, skipped = [], []
    for case, (pair, why, *_rest) in zip(cases, results, strict=True):
        if pair is None:
            skipped.append((case.trace_id, why))
        else:
            pairs.append(pair)
    return ReplayOutcome(
        pairs,
        skipped,
        sum(r[2] for r in results),
        sum(r[3] for r in results),
        sum(r[4] for r in results),
    )
