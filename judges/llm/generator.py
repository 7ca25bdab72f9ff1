"""Generator: fresh samples from the application's own model, for self-consistency checks.

Same transport as the judge (any OpenAI-compatible endpoint through the `openai` SDK, which
owns HTTP retries), but free text instead of a schema, and several answers per prompt. One
request with ``n=N`` is cheapest (the prompt is paid once); servers that ignore ``n`` (Ollama,
llama.cpp) or reject it get the missing samples as single requests in parallel.

On the judge's own endpoint (`concurrency=` the judge's AdaptiveConcurrency) its requests
take slots of the judge's adaptive limit and feed it their outcomes, so re-sampling and
judging together never send a small server more than the capacity the limit has found.

    >>> gen = Generator(base_url="http://localhost:8000/v1")  # doctest: +SKIP
    >>> texts, usage = await gen.sample(messages, "gpt-4o-mini", 3)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from judges.errors import JudgeError, JudgeTransientError
from judges.llm.completions import retry_after_s
from judges.llm.concurrency import AdaptiveConcurrency, Outcome
from judges.types import Usage

PriceFn = Callable[[str, int, int], float]

# Request parameters worth replaying. Not `seed` (identical samples would prove nothing),
# not `temperature` (sampling needs spread even if the app ran at 0), not tools or streams.
_REPLAYED = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
    }
)


def _no_price(_model: str, _in: int, _out: int) -> float:
    return 0.0


def chat_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """OTel GenAI messages (``parts``) or OpenAI messages (``content``) → OpenAI chat form.

    Only text survives: tool calls and binary parts cannot be replayed faithfully.
    """
    out = []
    for message in messages:
        role = str(message.get("role", "user"))
        content = message.get("content")
        if not isinstance(content, str):
            parts = message.get("parts", content)
            texts = (
                [
                    p.get("content", p.get("text", ""))
                    for p in parts
                    if isinstance(p, dict) and p.get("type", "text") == "text"
                ]
                if isinstance(parts, list)
                else []
            )
            content = "\n".join(t for t in texts if isinstance(t, str))
        if content or role == "user":
            out.append({"role": role, "content": content})
    return out


def request_params(generation: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in generation.items() if k in _REPLAYED and v is not None}


class Generator:
    """Draw N answers for the same messages from an OpenAI-compatible endpoint."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        max_retries: int = 2,
        temperature: float = 1.0,
        price: PriceFn = _no_price,
        max_concurrency: int = 8,
        http_client: httpx.AsyncClient | None = None,
        concurrency: AdaptiveConcurrency | None = None,
        max_output_tokens: int | None = None,
    ) -> None:
        self.temperature = temperature
        # A sample's budget when the app's call named none: without one a server may write
        # until its context is full (a base model on llama.cpp: thousands of tokens, minutes
        # of a CPU server that every other call then waits behind).
        self.max_output_tokens = max_output_tokens
        self._price = price
        self._limit = asyncio.Semaphore(max_concurrency)
        self._shared = concurrency  # the judge's limit, when both use one endpoint
        self._sdk = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )

    async def aclose(self) -> None:
        await self._sdk.close()

    async def sample(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str,
        n: int,
        temperature: float | None = None,
        **generation: Any,
    ) -> tuple[list[str], Usage]:
        """Up to `n` non-empty answers and what they cost.

        Raises a JudgeError subclass only when no sample at all could be drawn.
        """
        if n < 1:
            return [], Usage()
        chat = chat_messages(messages)
        params = request_params(generation)
        params["temperature"] = self.temperature if temperature is None else temperature
        if self.max_output_tokens and not {"max_tokens", "max_completion_tokens"} & set(params):
            params["max_tokens"] = self.max_output_tokens
        try:
            texts, usage = await self._create(chat, model, n, params, Usage())
        except JudgeError as exc:
            # Some servers refuse n > 1 outright; single requests still work there.
            if n == 1 or not isinstance(exc.__cause__, openai.BadRequestError):
                raise
            texts, usage = [], exc.usage
        missing = n - len(texts)
        if missing > 0:
            results = await asyncio.gather(
                *(self._create(chat, model, 1, params, Usage()) for _ in range(missing)),
                return_exceptions=True,
            )
            failures: list[BaseException] = []
            for result in results:
                if isinstance(result, BaseException):
                    failures.append(result)
                else:
                    texts += result[0]
                    usage = usage + result[1]
            # A partial set is still evidence (the caller records how many it got); nothing is not.
            if failures and not texts:
                first = failures[0]
                if isinstance(first, JudgeError):
                    first.usage = usage + first.usage
                raise first
        return texts[:n], usage

    async def _create(
        self, chat: list[dict[str, str]], model: str, n: int, params: dict[str, Any], spent: Usage
    ) -> tuple[list[str], Usage]:
        # `n` is left out for one sample: a few servers reject the parameter altogether.
        request: dict[str, Any] = {"model": model, "messages": chat, **params}
        if n > 1:
            request["n"] = n
        try:
            async with self._limit:
                if self._shared is None:
                    response = await self._sdk.chat.completions.create(**request)
                else:
                    response = await self._in_shared_slot(request)
        except openai.OpenAIError as exc:
            raise translate(exc, spent) from exc
        tokens_in = response.usage.prompt_tokens if response.usage else 0
        tokens_out = response.usage.completion_tokens if response.usage else 0
        used = Usage(
            calls=1,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=self._price(model, tokens_in, tokens_out),
        )
        texts = [
            c.message.content.strip()
            for c in response.choices or []
            if c.message and c.message.content and c.message.content.strip()
        ]
        return texts, used

    async def _in_shared_slot(self, request: dict[str, Any]) -> Any:
        assert self._shared is not None
        ticket = await self._shared.acquire()
        outcome: Outcome = "error"
        try:
            response = await self._sdk.chat.completions.create(**request)
            outcome = "ok"
            return response
        except openai.APITimeoutError:
            outcome = "timeout"
            raise
        except openai.APIStatusError as exc:
            outcome = "rate_limited" if exc.status_code in (429, 503) else "error"
            raise
        finally:
            change = await self._shared.release(ticket, outcome, "generator")
            if change is not None:  # as the judge's calls log it (judges.llm.exchange)
                logging.getLogger("judges.llm.concurrency").info(
                    "judge concurrency %s: limit %d (a generator call), %d in flight",
                    change,
                    self._shared.limit,
                    self._shared.in_flight,
                )


def translate(exc: openai.OpenAIError, usage: Usage) -> JudgeError:
    """SDK exception (after its own retries) → this library's error tree."""
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return JudgeTransientError(f"generator unreachable: {exc}", usage=usage)
    if isinstance(exc, openai.RateLimitError | openai.InternalServerError):
        return JudgeTransientError(
            f"generator HTTP {exc.status_code} after retries",
            retry_after_s=retry_after_s(exc.response.headers),
            usage=usage,
        )
    if isinstance(exc, openai.APIStatusError):
        return JudgeError(
            f"generator refused the request (HTTP {exc.status_code}): {exc.message}", usage=usage
        )
    return JudgeError(f"generator reply unreadable: {exc}", usage=usage)
