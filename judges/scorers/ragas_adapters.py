"""The plumbing between ragas 0.4.3 and our judge endpoint and local embedder (no scoring).

Imports ragas lazily and reports its version, copies what ragas needs from a ``JudgeClient``
(``Endpoint``), builds ragas's instructor LLM behind the judge's rate limit and concurrency with
a single re-ask on unparseable replies, puts our offline ``Embedder`` behind ragas's embedding
interface, and records every reply, vector and completion's token usage in a ``RagasRun``.
Turning ragas's values into ``Score``s is ``judges.scorers.ragas_method``'s job.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from judges.rubric import Rubric
from judges.types import Score, Usage

if TYPE_CHECKING:
    from judges.llm.client import JudgeClient
    from judges.llm.embedder import Embedder

METHOD = "ragas"
INSTALL_HINT = "pip install -e '.[ragas]'"
USAGE_FROM_ENDPOINT = "from the judge endpoint's completions (ragas itself reports no usage)"
USAGE_NOT_REPORTED = "not reported by ragas"


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


async def ragas_version() -> str | Score:
    try:
        return await asyncio.to_thread(_import_ragas)
    except ImportError as exc:
        return Score.skipped(
            f"method 'ragas' needs the optional extra: {INSTALL_HINT} ({exc})", method=METHOD
        )


@functools.cache
def adapter_classes() -> tuple[Any, Any]:
    """ragas-typed wrappers: ragas's metrics accept only its own LLM/embedding base classes."""
    from ragas.embeddings.base import BaseRagasEmbedding
    from ragas.llms.base import InstructorBaseRagasLLM

    # ragas has no type information (an Any base): mypy --strict refuses subclassing Any.
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

    class LocalEmbeddings(BaseRagasEmbedding):  # type: ignore[misc]  # an Any base, as above
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


def ragas_llm(endpoint: Endpoint, run: RagasRun) -> tuple[Any, Any]:
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
    recording_llm, _ = adapter_classes()
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


def error_score(exc: BaseException, metric: str, run: RagasRun, **details: Any) -> Score:
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
    completion: Any = getattr(exc, "last_completion", None)
    try:
        return str(completion.choices[0].message.content)[:2000]
    except (AttributeError, IndexError, TypeError):
        return None
