"""Method ``ragas``: faithfulness and answer relevancy computed by ragas 0.4.3 (extra ``[ragas]``).

For teams that want the standard RAGAS numbers under the same rubric and record format. ragas
computes the value (its ``Faithfulness`` and ``AnswerRelevancy`` collections metrics); the
method only wires ragas to our judge endpoint and local embedder, records what ragas asked
and got back, and turns the result into a ``Score``:

- the LLM is ragas's own instructor LLM (``llm_factory``) on a fresh ``AsyncOpenAI`` client for
  the judge's base URL, API key, timeout and model (the rubric's ``judge.model`` wins). That
  client's HTTP retries are the only retry layer for HTTP errors (``judge.max_retries``,
  honouring Retry-After); instructor only re-asks once when a reply does not parse, as
  ``JudgeClient`` does;
- each call waits on the judge's shared rate limiter and adaptive concurrency, like
  ``JudgeClient`` calls; the reply cache is not used (ragas's prompts are its own);
- embeddings for AnswerRelevancy come from ``clients.embedder`` (the bundled all-MiniLM-L6-v2,
  offline), never from the endpoint;
- tokens are taken from the ``usage`` of every completion ragas received (ragas itself reports
  none) and priced with the judge's price table; ``details["usage"]`` says where they came from;
- ragas's NaN for an answer without statements follows ``options.no_claims`` like the judge
  method; any other NaN, and every exception ragas raises, is an ``error`` Score with the cause.

ragas is imported lazily (and in a thread: the import takes seconds), so the core never needs
it; without it the scorer is ``skipped`` and names the install command. The wiring (endpoint,
LLM and embedding adapters, usage recording) is in ``judges.scorers.ragas_adapters``.

    >>> score = await score_faithfulness_ragas(case, rubric, Clients(judge=judge))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

from judges.llm.client import JudgeClient
from judges.llm.embedder import EmbedderUnavailable
from judges.rubric import Rubric
from judges.scorers.faithfulness_prompts import no_claims_policy
from judges.scorers.ragas_adapters import (
    METHOD,
    RagasRun,
    adapter_classes,
    endpoint_of,
    error_score,
    ragas_llm,
    ragas_version,
)
from judges.types import Clients, EvalCase, Score, Status

# Bump when a change here can change a verdict (the ragas version is in the identity too).
IMPLEMENTATION_VERSION = "1"

DEFAULT_STRICTNESS = 3  # ragas's default number of generated questions


# --- faithfulness ----------------------------------------------------------------------


async def score_faithfulness_ragas(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> Score:
    """ragas Faithfulness: share of the answer's statements that the contexts support."""
    version = await ragas_version()
    if isinstance(version, Score):
        return version
    from ragas.metrics.collections import Faithfulness

    endpoint = endpoint_of(judge, rubric)
    run = RagasRun(model=endpoint.model, price=endpoint.price)
    llm, sdk = ragas_llm(endpoint, run)
    try:
        result = await Faithfulness(llm=llm).ascore(
            user_input=case.question,
            response=case.answer,
            retrieved_contexts=[c.text for c in case.contexts],
        )
    except Exception as exc:  # ragas documents no error types: record whatever it raised
        return error_score(exc, "faithfulness", run, ragas_version=version)
    finally:
        await sdk.close()
    return faithfulness_score(float(result.value), run, rubric, ragas_version=version)


def faithfulness_score(value: float, run: RagasRun, rubric: Rubric, *, ragas_version: str) -> Score:
    """The Score for ragas's faithfulness value and the replies it was computed from (pure)."""
    statements = [s for r in run.of("StatementGeneratorOutput") for s in r.statements]
    checks = [c for r in run.of("NLIStatementOutput") for c in r.statements]
    claims = [
        {
            "claim": c.statement,
            "verdict": "supported" if c.verdict else "not_supported",
            "reason": c.reason,
        }
        for c in checks
    ]
    supported = sum(1 for c in checks if c.verdict)
    details: dict[str, Any] = {
        "statements": statements,
        "claims": claims,
        "counts": {"supported": supported, "not_supported": len(checks) - supported},
        "ragas_version": ragas_version,
        "usage": run.usage_note(),
    }
    common: dict[str, Any] = {"method": METHOD, "judge_model": run.model, "usage": run.usage}
    if math.isnan(value):
        if statements:
            return Score.error(
                f"ragas returned NaN: the judge gave {len(checks)} verdicts for "
                f"{len(statements)} statements",
                details=details,
                **common,
            )
        details["ragas_value"] = "nan"
        if no_claims_policy(rubric) == "skip":
            return Score(
                Status.SKIPPED,
                explanation="the answer makes no factual statement",
                details=details,
                **common,
            )
        return Score(
            Status.OK,
            1.0,
            "no_claims",
            True,
            "ragas found no statement in the answer (its value is NaN), so none is unsupported",
            details,
            **common,
        )
    if not 0.0 <= value <= 1.0:
        return Score.error(f"ragas returned {value!r}, outside [0, 1]", details=details, **common)
    passed = value >= rubric.pass_threshold
    explanation = f"ragas: {supported} of {len(checks)} statements supported"
    bad = [c["claim"] for c in claims if c["verdict"] != "supported"][:3]
    if bad:
        explanation += "; not supported: " + "; ".join(repr(b) for b in bad)
    return Score(
        Status.OK, value, "pass" if passed else "fail", passed, explanation, details, **common
    )


# --- answer relevancy ------------------------------------------------------------------


async def score_answer_relevance_ragas(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """ragas AnswerRelevancy: similarity of questions generated from the answer to the question."""
    judge, embedder = clients.judge, clients.embedder
    assert judge is not None and embedder is not None  # the registry's precheck: both needed
    strictness = _strictness(rubric)
    version = await ragas_version()
    if isinstance(version, Score):
        return version
    from ragas.metrics.collections import AnswerRelevancy

    endpoint = endpoint_of(judge, rubric)
    run = RagasRun(model=endpoint.model, price=endpoint.price)
    llm, sdk = ragas_llm(endpoint, run)
    _, local_embeddings = adapter_classes()
    metric = AnswerRelevancy(
        llm=llm, embeddings=local_embeddings(embedder, run), strictness=strictness
    )
    try:
        result = await metric.ascore(user_input=case.question, response=case.answer)
    except EmbedderUnavailable as exc:
        return Score.skipped(f"ragas AnswerRelevancy needs embeddings: {exc}", method=METHOD)
    except Exception as exc:  # ragas documents no error types: record whatever it raised
        return error_score(exc, "answer_relevancy", run, ragas_version=version)
    finally:
        await sdk.close()
    return relevancy_score(
        float(result.value),
        run,
        rubric,
        question=case.question,
        strictness=strictness,
        ragas_version=version,
    )


def relevancy_score(
    value: float,
    run: RagasRun,
    rubric: Rubric,
    *,
    question: str,
    strictness: int,
    ragas_version: str,
) -> Score:
    """The Score for ragas's answer relevancy value and its generated questions (pure)."""
    target = run.vectors.get(question)
    generated = [r for r in run.of("AnswerRelevanceOutput") if r.question]
    rows = [
        {
            "question": r.question,
            "noncommittal": bool(r.noncommittal),
            # The cosine ragas averaged, from the same vectors it was given.
            "similarity": _cosine(target, run.vectors.get(r.question)),
        }
        for r in generated
    ]
    noncommittal = bool(rows) and all(r["noncommittal"] for r in rows)
    details: dict[str, Any] = {
        "questions": rows,
        "noncommittal": noncommittal,
        "strictness": strictness,
        "ragas_version": ragas_version,
        "usage": run.usage_note(),
    }
    common: dict[str, Any] = {"method": METHOD, "judge_model": run.model, "usage": run.usage}
    if math.isnan(value):
        return Score.error("ragas returned NaN for answer relevancy", details=details, **common)
    if not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
        return Score.error(f"ragas returned {value!r}, outside [-1, 1]", details=details, **common)
    if not 0.0 <= value <= 1.0:
        # A mean cosine below 0 (or a rounding hair above 1): the Score contract is [0, 1].
        details["raw_score"] = value
        value = min(1.0, max(0.0, value))
    passed = value >= rubric.pass_threshold
    if not rows:
        explanation = "ragas generated no question from the answer (it scores 0)"
    elif noncommittal:
        explanation = "ragas judged the answer noncommittal (it scores 0)"
    else:
        explanation = (
            f"ragas: mean similarity {value:.3f} between the question and "
            f"{len(rows)} questions generated from the answer"
        )
    return Score(
        Status.OK, value, "pass" if passed else "fail", passed, explanation, details, **common
    )


def _strictness(rubric: Rubric) -> int:
    return int(rubric.typed_options.strictness)  # validated with the rubric (judges/options.py)


def _cosine(a: list[float] | None, b: list[float] | None) -> float | None:
    if a is None or b is None:
        return None
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return None
    return round(sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb), 4)
