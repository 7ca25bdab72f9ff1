"""Self-consistency hallucination check (the SelfCheckGPT idea).

A model that knows a fact tends to repeat it when asked again; an invented detail changes
from sample to sample. So: take N other answers to the same request — the trace's own
``samples`` if it carries at least N, otherwise the missing ones drawn from the generator
(the original messages and model, at the generator's temperature) — and measure, per sentence
of the answer, how well the samples support it.

- ``embeddings``: support(sentence) = mean over samples of the max cosine similarity to that
  sample's sentences (clipped to [0, 1]); needs the ``[embeddings]`` extra.
- ``judge``: ONE judge call per sample checks ALL answer sentences against it (N calls, not
  N × sentences); support(sentence) = share of samples that support it.

value = mean support over the answer's sentences: the expected share of the answer that an
independent sample backs up (continuous, so no second threshold to calibrate). Sentences
whose support is below the rubric's pass threshold are listed as ``unsupported`` in details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, create_model, field_validator

from judges.errors import JudgeError
from judges.llm.client import JudgeClient
from judges.options import MAX_SAMPLES as OPTIONS_MAX_SAMPLES
from judges.prompts import DATA_RULES, fence, numbered
from judges.rubric import Rubric
from judges.text import split_sentences
from judges.types import Clients, EvalCase, Score, Status, Usage

# Bump when a change here can change a verdict: it starts a new evaluator epoch.
IMPLEMENTATION_VERSION = "1"

DEFAULT_SAMPLES = 3
MAX_SAMPLES = OPTIONS_MAX_SAMPLES  # bounds options.samples (judges/options.py)
_SAMPLE_CHARS = 2000  # samples are kept in details as evidence, truncated


class SentenceVerdict(BaseModel):
    id: int
    supported: bool


class _Verdicts(BaseModel):
    verdicts: list[SentenceVerdict]

    @field_validator("verdicts")
    @classmethod
    def _each_once(cls, items: list[SentenceVerdict]) -> list[SentenceVerdict]:
        if sorted(v.id for v in items) != list(range(1, len(items) + 1)):
            raise ValueError("give exactly one verdict for each sentence number 1..n")
        return sorted(items, key=lambda v: v.id)


def verdicts_schema(n_sentences: int) -> type[_Verdicts]:
    return create_model(
        "SentenceVerdicts",
        __base__=_Verdicts,
        verdicts=(list[SentenceVerdict], Field(min_length=n_sentences, max_length=n_sentences)),
    )


# --- pure parts ------------------------------------------------------------------------


def sample_count(rubric: Rubric) -> int:
    return int(rubric.typed_options.samples)  # validated with the rubric (judges/options.py)


def answer_sentences(answer: str) -> list[str]:
    return split_sentences(answer) or [answer.strip()]


def render_check(sentences: Sequence[str], sample: str) -> list[dict[str, str]]:
    system = (
        "You compare an AI answer with a reference answer written independently for the same "
        f"request.\n{DATA_RULES}\n"
        "For each numbered sentence of the answer: supported = true only if the reference "
        "states or implies the same thing; false if it contradicts it or does not mention it.\n"
        'Reply with JSON: {"verdicts": [{"id": sentence number, "supported": bool}]}, '
        "one per sentence."
    )
    user = (
        "Reference:\n"
        + fence("sample", sample)
        + "\n\nAnswer sentences:\n"
        + fence("answer", numbered(sentences))
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def embedding_support(answer_vecs: np.ndarray, sample_vecs: Sequence[np.ndarray]) -> list[float]:
    """Per answer sentence: mean over samples of its best cosine match in that sample."""
    per_sample = [
        np.clip((answer_vecs @ vecs.T).max(axis=1), 0.0, 1.0)
        if len(vecs)
        else np.zeros(len(answer_vecs))
        for vecs in sample_vecs
    ]
    return [float(x) for x in np.mean(per_sample, axis=0)]


def judge_support(verdicts: Sequence[Sequence[bool]]) -> list[float]:
    """Per sentence: share of samples (rows) that support it."""
    return [sum(col) / len(col) for col in zip(*verdicts, strict=True)]


def build_score(
    sentences: Sequence[str],
    support: Sequence[float],
    rubric: Rubric,
    *,
    method: str,
    extra: dict[str, Any],
    per_sample: Sequence[Sequence[bool]] | None = None,
    judge_model: str | None = None,
    usage: Usage,
) -> Score:
    rows: list[dict[str, Any]] = []
    for i, (sentence, value) in enumerate(zip(sentences, support, strict=True)):
        row: dict[str, Any] = {"sentence": sentence, "support": round(value, 4)}
        if per_sample is not None:
            row["supported_by"] = [bool(s[i]) for s in per_sample]
        rows.append(row)
    value = min(1.0, max(0.0, sum(support) / len(support)))
    unsupported = [r["sentence"] for r in rows if r["support"] < rubric.pass_threshold]
    passed = value >= rubric.pass_threshold
    explanation = f"mean support {value:.2f} over {len(rows)} sentences"
    if unsupported:
        explanation += f"; weakest: {min(rows, key=lambda r: r['support'])['sentence']!r}"
    return Score(
        status=Status.OK,
        value=value,
        label="pass" if passed else "fail",
        passed=passed,
        explanation=explanation,
        details={"sentences": rows, "unsupported": unsupported, **extra},
        method=method,
        judge_model=judge_model,
        usage=usage,
    )


# --- calls -----------------------------------------------------------------------------


async def score_embeddings(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """Support by sentence similarity to the samples (the [embeddings] extra)."""
    embedder = clients.embedder
    assert embedder is not None  # the registry's precheck: this method needs embeddings
    drawn = await _draw(case, rubric, clients)
    if isinstance(drawn, Score):
        return drawn
    sentences, samples, extra, gen_usage = drawn
    # Encoding is CPU-bound: run it off the event loop.
    support = await asyncio.to_thread(_embed_support, embedder, sentences, samples)
    extra["embedder"] = "all-MiniLM-L6-v2"
    return build_score(
        sentences, support, rubric, method="embeddings", extra=extra, usage=gen_usage
    )


async def score_judge(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """Support as the share of samples the judge says back each sentence up."""
    judge = clients.judge
    assert judge is not None  # the registry's precheck: this method needs a judge
    drawn = await _draw(case, rubric, clients)
    if isinstance(drawn, Score):
        return drawn
    sentences, samples, extra, gen_usage = drawn
    return await _judge(case, sentences, samples, rubric, judge, extra, gen_usage)


async def _draw(
    case: EvalCase, rubric: Rubric, clients: Clients
) -> tuple[list[str], list[str], dict[str, Any], Usage] | Score:
    """The answer's sentences, the samples and what to record of them, or why there are none."""
    method = rubric.resolved_method
    try:
        n = sample_count(rubric)
    except ValueError as exc:
        return Score.error(str(exc), method=method)
    drawn = await _samples(case, n, clients, method)
    if isinstance(drawn, Score):
        return drawn
    samples, source, gen_usage = drawn
    extra: dict[str, Any] = {
        "n_samples": len(samples),
        "samples_source": source,
        "samples": [s[:_SAMPLE_CHARS] for s in samples],
    }
    if gen_usage.calls:  # the record's usage adds the judge's: say which part re-sampled
        extra["generator_calls"] = gen_usage.calls
        extra["generator_cost_usd"] = gen_usage.cost_usd
    return answer_sentences(case.answer), samples, extra, gen_usage


async def _samples(
    case: EvalCase, n: int, clients: Clients, method: str
) -> tuple[list[str], str, Usage] | Score:
    have = [s for s in case.samples if s.strip()][:n]
    if len(have) >= n:
        return have, "trace", Usage()
    missing = n - len(have)
    why = f"the trace carries {len(have)} sample(s) and the rubric asks for {n}"
    if clients.generator is None:
        return Score.skipped(f"{why}, and no generator is configured ([generator])", method=method)
    if not case.messages or not case.model:
        return Score.skipped(
            f"{why}, and the trace lacks the original messages or model to re-sample",
            method=method,
        )
    # The app's own temperature is not replayed: a run at 0 would just echo the answer.
    generation = {k: v for k, v in case.generation.items() if k != "temperature"}
    try:
        drawn, usage = await clients.generator.sample(
            case.messages, case.model, missing, **generation
        )
    except JudgeError as exc:
        return Score.error(f"drawing samples failed: {exc}", method=method, usage=exc.usage)
    if not drawn:
        return Score.error("the generator returned no usable sample", method=method, usage=usage)
    return have + drawn, "generator" if not have else "trace+generator", usage


def _embed_support(embedder: Any, sentences: list[str], samples: list[str]) -> list[float]:
    sample_sentences = [answer_sentences(s) for s in samples]
    vecs = embedder.encode([*sentences, *(s for group in sample_sentences for s in group)])
    answer_vecs, start, groups = vecs[: len(sentences)], len(sentences), []
    for group in sample_sentences:
        groups.append(vecs[start : start + len(group)])
        start += len(group)
    return embedding_support(answer_vecs, groups)


async def _judge(
    case: EvalCase,
    sentences: list[str],
    samples: list[str],
    rubric: Rubric,
    judge: JudgeClient,
    extra: dict[str, Any],
    gen_usage: Usage,
) -> Score:
    schema = verdicts_schema(len(sentences))
    results = await asyncio.gather(
        *(
            judge.complete(
                render_check(sentences, sample),
                schema,
                model=rubric.judge.model,
                temperature=rubric.judge.temperature,
            )
            for sample in samples
        ),
        return_exceptions=True,
    )
    usage = gen_usage
    per_sample: list[list[bool]] = []
    failures: list[BaseException] = []
    for result in results:
        if isinstance(result, BaseException):
            failures.append(result)
            usage = usage + getattr(result, "usage", Usage())
        else:
            usage = usage + result.usage
            per_sample.append([v.supported for v in result.parsed.verdicts])
    judge_model = rubric.judge.model or judge.model
    if failures:
        first = failures[0]
        if not isinstance(first, JudgeError):
            raise first
        raw = [getattr(f, "raw_output", None) for f in failures]
        return Score.error(
            f"{len(failures)} of {len(samples)} sample checks failed: {first}",
            method="judge",
            details={"raw_output": [r for r in raw if r is not None], **extra},
            judge_model=judge_model,
            usage=usage,
        )
    return build_score(
        sentences,
        judge_support(per_sample),
        rubric,
        method="judge",
        extra=extra,
        per_sample=per_sample,
        judge_model=judge_model,
        usage=usage,
    )
