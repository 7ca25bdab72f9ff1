"""Method ``ragas``: faithfulness and answer relevancy computed by ragas 0.4.3 (extra ``[ragas]``).

For teams that want the standard RAGAS numbers under the same rubric and record format. ragas
computes the value (its ``Faithfulness`` and ``AnswerRelevancy`` collections metrics); this
module only wires ragas to our judge endpoint and local embedder, records what ragas asked
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
it; without it the scorer is ``skipped`` and names the install command.

    >>> score = await score_faithfulness_ragas(case, rubric, Clients(judge=judge))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ScorerConfigError
from .faithfulness import no_claims_policy
from .rubric import Rubric
from .scorers import Clients
from .types import EvalCase, Score, Status, Usage

if TYPE_CHECKING:
    from .client import JudgeClient
    from .embedder import Embedder

METHOD = "ragas"
INSTALL_HINT = "pip install -e '.[ragas]'"
USAGE_FROM_ENDPOINT = "from the judge endpoint's completions (ragas itself reports no usage)"
USAGE_NOT_REPORTED = "not reported by ragas"
DEFAULT_STRICTNESS = 3  # ragas's default number of generated questions


# --- what one ragas run asked and got back ----------------------------------------------


@dataclass(slots=True)
class RagasRun:
    """Parsed replies, token usage and embeddings seen during one ``ascore``."""

    model: str
    price: Callable[[str, int, int], float]
    replies: list[Any] = field(default_factory=list)
    vectors: dict[str, list[float]] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    unreported: int = 0  # completions that carried no usage

    def on_completion(self, response: Any) -> None:
        """instructor hook: every completion ragas receives, parsed or not."""
        used = getattr(response, "usage", None)
        if used is None:
            self.unreported += 1
            self.usage = self.usage + Usage(calls=1)
            return
        tokens_in = int(getattr(used, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(used, "completion_tokens", 0) or 0)
        self.usage = self.usage + Usage(
            calls=1,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=self.price(self.model, tokens_in, tokens_out),
        )

    def usage_note(self) -> str:
        if self.usage.calls == 0 or self.unreported == self.usage.calls:
            return USAGE_NOT_REPORTED
        if self.unreported:
            return (
                f"{USAGE_FROM_ENDPOINT}; {self.unreported} of {self.usage.calls} completions "
                "carried no usage and count 0 tokens"
            )
        return USAGE_FROM_ENDPOINT

    def of(self, kind: str) -> list[Any]:
        """Replies whose model is named `kind` (e.g. ``"NLIStatementOutput"``), in order."""
        return [r for r in self.replies if type(r).__name__ == kind]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What ragas needs from a JudgeClient to call the same endpoint the same way."""

    base_url: str
    api_key: str
    timeout: Any  # float seconds or httpx.Timeout, as the judge's SDK client has it
    max_retries: int
    model: str
    temperature: float
    max_tokens: int
    price: Callable[[str, int, int], float]
    rate: Any
    concurrency: Any


def endpoint_of(judge: JudgeClient, rubric: Rubric) -> Endpoint:
    return Endpoint(
        base_url=judge.base_url,
        api_key=judge.api_key,
        timeout=judge.timeout,
        max_retries=judge.max_retries,
        model=rubric.judge.model or judge.model,
        temperature=(
            judge.temperature if rubric.judge.temperature is None else rubric.judge.temperature
        ),
        max_tokens=judge.max_output_tokens,
        price=judge.price,
        rate=judge.rate_limiter,
        concurrency=judge.concurrency,
    )


# --- ragas glue (defined once ragas is importable) --------------------------------------


def _import_ragas() -> str:
    # ragas sends usage analytics to its vendor unless told not to; an evaluation worker does
    # not phone home. Set before the import; an explicit user setting wins.
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    import ragas
    import ragas.metrics.collections  # the metrics this module uses

    return str(ragas.__version__)


async def _ragas_version() -> str | Score:
    try:
        return await asyncio.to_thread(_import_ragas)
    except ImportError as exc:
        return Score.skipped(
            f"method 'ragas' needs the optional extra: {INSTALL_HINT} ({exc})", method=METHOD
        )


@functools.cache
def _adapters() -> tuple[Any, Any]:
    """ragas-typed wrappers: ragas's metrics accept only its own LLM/embedding base classes."""
    from ragas.embeddings.base import BaseRagasEmbedding
    from ragas.llms.base import InstructorBaseRagasLLM

    class RecordingLLM(InstructorBaseRagasLLM):  # type: ignore[misc]
        """ragas's instructor LLM behind the judge's rate limit and concurrency, recorded."""

        def __init__(self, inner: Any, endpoint: Endpoint, run: RagasRun) -> None:
            self.inner, self.endpoint, self.run = inner, endpoint, run

        async def agenerate(self, prompt: str, response_model: type) -> Any:
            await self.endpoint.rate.acquire(len(prompt) // 4 + self.endpoint.max_tokens)
            async with self.endpoint.concurrency:
                reply = await self.inner.agenerate(prompt, response_model)
            self.run.replies.append(reply)
            return reply

        def generate(self, prompt: str, response_model: type) -> Any:
            raise NotImplementedError("the ragas method runs ragas asynchronously only")

    class LocalEmbeddings(BaseRagasEmbedding):  # type: ignore[misc]
        """Our offline Embedder behind ragas's embedding interface (encoding off the loop)."""

        def __init__(self, embedder: Embedder, run: RagasRun) -> None:
            super().__init__(cache=None)
            self.embedder, self.run = embedder, run

        def embed_texts(self, texts: list[str], **_: Any) -> list[list[float]]:
            vectors = [[float(x) for x in row] for row in self.embedder.encode(list(texts))]
            self.run.vectors.update(zip(texts, vectors, strict=True))
            return vectors

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_texts([text], **kwargs)[0]

        async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return await asyncio.to_thread(self.embed_texts, list(texts), **kwargs)

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return (await self.aembed_texts([text], **kwargs))[0]

    return RecordingLLM, LocalEmbeddings


def _llm(endpoint: Endpoint, run: RagasRun) -> tuple[Any, Any]:
    """(ragas LLM, the AsyncOpenAI client to close afterwards)."""
    from openai import AsyncOpenAI
    from ragas.llms.base import llm_factory

    sdk = AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        timeout=endpoint.timeout,
        max_retries=endpoint.max_retries,  # the one retry layer on this path
    )
    inner: Any = llm_factory(
        endpoint.model,
        client=sdk,
        temperature=endpoint.temperature,
        max_tokens=endpoint.max_tokens,
        max_retries=_one_reask(),  # passed through to instructor's create()
    )
    inner.client.on("completion:response", run.on_completion)
    recording_llm, _ = _adapters()
    return recording_llm(inner, endpoint, run), sdk


def _one_reask() -> Any:
    """instructor's retry policy: re-ask once on an unparseable reply, never on HTTP errors.

    instructor's default (3 attempts on any exception, no back-off) would multiply the SDK's
    HTTP retries; this matches JudgeClient's rule instead. tenacity keeps the attempt state on
    the object, so each run gets its own (ragas's steps run one after another within a run).
    """
    from json import JSONDecodeError

    from instructor.core.exceptions import AsyncValidationError
    from instructor.core.exceptions import ValidationError as InstructorValidationError
    from pydantic import ValidationError
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

    parse_errors = (
        ValidationError,
        JSONDecodeError,
        AsyncValidationError,
        InstructorValidationError,
    )
    return AsyncRetrying(stop=stop_after_attempt(2), retry=retry_if_exception_type(parse_errors))


def _error(exc: BaseException, metric: str, run: RagasRun, **details: Any) -> Score:
    raw = _raw_output(exc)
    if raw is not None:
        details["raw_output"] = raw
    return Score.error(
        f"ragas {metric} failed: {type(exc).__name__}: {str(exc)[:500]}",
        method=METHOD,
        details={**details, "usage": run.usage_note()},
        judge_model=run.model,
        usage=run.usage,
    )


def _raw_output(exc: BaseException) -> str | None:
    """The judge's text when instructor could not parse it (InstructorRetryException)."""
    completion = getattr(exc, "last_completion", None)
    try:
        return str(completion.choices[0].message.content)[:2000]  # type: ignore[union-attr]
    except (AttributeError, IndexError, TypeError):
        return None


# --- faithfulness ----------------------------------------------------------------------


async def score_faithfulness_ragas(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    """ragas Faithfulness: share of the answer's statements that the contexts support."""
    if clients.judge is None:
        return Score.skipped("method 'ragas' needs a judge and none is configured", method=METHOD)
    try:
        no_claims_policy(rubric)
    except ScorerConfigError as exc:
        return Score.error(str(exc), method=METHOD)
    version = await _ragas_version()
    if isinstance(version, Score):
        return version
    from ragas.metrics.collections import Faithfulness

    endpoint = endpoint_of(clients.judge, rubric)
    run = RagasRun(model=endpoint.model, price=endpoint.price)
    llm, sdk = _llm(endpoint, run)
    try:
        result = await Faithfulness(llm=llm).ascore(
            user_input=case.question,
            response=case.answer,
            retrieved_contexts=[c.text for c in case.contexts],
        )
    except Exception as exc:  # ragas documents no error types: record whatever it raised
        return _error(exc, "faithfulness", run, ragas_version=version)
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
    if clients.judge is None:
        return Score.skipped("method 'ragas' needs a judge and none is configured", method=METHOD)
    if clients.embedder is None:
        return Score.skipped(
            "ragas AnswerRelevancy needs embeddings and no local embedder is configured "
            "(install the extra: pip install -e '.[embeddings]')",
            method=METHOD,
        )
    try:
        strictness = _strictness(rubric)
    except ScorerConfigError as exc:
        return Score.error(str(exc), method=METHOD)
    version = await _ragas_version()
    if isinstance(version, Score):
        return version
    from ragas.metrics.collections import AnswerRelevancy

    from .embedder import EmbedderUnavailable

    endpoint = endpoint_of(clients.judge, rubric)
    run = RagasRun(model=endpoint.model, price=endpoint.price)
    llm, sdk = _llm(endpoint, run)
    _, local_embeddings = _adapters()
    metric = AnswerRelevancy(
        llm=llm, embeddings=local_embeddings(clients.embedder, run), strictness=strictness
    )
    try:
        result = await metric.ascore(user_input=case.question, response=case.answer)
    except EmbedderUnavailable as exc:
        return Score.skipped(f"ragas AnswerRelevancy needs embeddings: {exc}", method=METHOD)
    except Exception as exc:  # ragas documents no error types: record whatever it raised
        return _error(exc, "answer_relevancy", run, ragas_version=version)
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
    n = rubric.options.get("strictness", DEFAULT_STRICTNESS)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise ScorerConfigError(f"options.strictness must be an integer in [1, 10], got {n!r}")
    return n


def _cosine(a: list[float] | None, b: list[float] | None) -> float | None:
    if a is None or b is None:
        return None
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return None
    return round(sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb), 4)
