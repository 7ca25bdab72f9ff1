"""JudgeClient: structured-output calls to any OpenAI-compatible endpoint.

One layer owns HTTP retries: this client (the SDK's own retries are switched off), so it sees
every timeout and 429, honours Retry-After, and adapts its concurrency to the endpoint
(judges.llm.concurrency: AIMD, starting at 2, bounded by `max_concurrency`). Only retryable
causes are retried (timeouts, connection errors, 408, 429, 5xx), each try with its own
timeout, with the one back-off policy (judges.llm.backoff).

A reply is validated against a Pydantic model. Its budget (`max_tokens`) is sized from the
schema (judges.llm.budget) or the rubric's `[judge] max_output_tokens`; an unusable reply
gets one retry that is never the same request: a reply cut at its budget
(`finish_reason == "length"`) is asked again with twice the budget and a request to be
brief, anything else is re-asked quoting what was wrong. Endpoints that ignore or refuse
`json_schema` are asked in the next format (judges.llm.formats). Tokens and cost are
accounted for every attempt; a shared rate limiter is waited on; repeated prompts are
served from a reply cache keyed by `VerdictIdentity.cache_key` (judges.provenance):
endpoint, model, prompt, schema, rubric and scorer version, so a reply is never reused
where it would not be true.

Errors (judges.errors): JudgeTransientError (retryable causes, after the retries),
JudgeTruncatedError (cut at the budget twice), JudgeOutputError (unusable after the re-ask,
both problems named), JudgeError (a 4xx), JudgeDeferred (a Retry-After beyond max_wait_s).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import openai
from openai import AsyncOpenAI
from pydantic import BaseModel

from judges.errors import JudgeError, JudgeOutputError, JudgeTruncatedError
from judges.llm.aio import AiohttpPoster
from judges.llm.budget import reply_budget, retry_budget
from judges.llm.concurrency import AdaptiveConcurrency
from judges.llm.exchange import FormatRefused, JudgeExchange, PriceFn
from judges.llm.formats import (
    BREVITY_NOTE,
    FORMATS,
    extract_json,
    looks_like_json,
    next_format,
    response_format,
    system_as_user,
    with_schema_note,
)
from judges.llm.limits import NoRateLimit, RateLimiter, ReplyCache
from judges.llm.replies import parse_reply, read_entry, read_reply
from judges.provenance import VerdictIdentity, current, endpoint_of
from judges.types import Usage

__all__ = ["JudgeClient", "JudgeReply", "PriceFn", "parse_reply", "sdk_http_client"]

T = TypeVar("T", bound=BaseModel)

_REASK = (
    "Your previous reply could not be used: {problem}\n"
    "Reply again with only a JSON object that matches the schema. No prose, no code fences."
)


@dataclass(frozen=True, slots=True)
class JudgeReply(Generic[T]):
    parsed: T
    raw: str
    model: str
    usage: Usage
    cached: bool = False
    reported_model: str | None = None  # the model the provider said it ran


@functools.cache
def _schema_of(schema: type[BaseModel]) -> dict[str, Any]:
    # Pydantic rebuilds the JSON schema on every call (~1.5 ms); a reply model never changes.
    return schema.model_json_schema()


def sdk_http_client(transport: str) -> httpx.AsyncClient | None:
    """The HTTP client to hand the openai SDK: None = the SDK's own httpx client.

    "aiohttp" is the SDK's `DefaultAioHttpClient` (httpx's interface over aiohttp's
    connection handling): about 2.4x less CPU per judge request than httpx's own transport
    (bench/http_floor.py, BENCHMARKS.md §5b). Its session is created lazily inside the running
    event loop, so a client may be built outside one.
    """
    if transport == "httpx":
        return None
    if transport == "aiohttp":
        return openai.DefaultAioHttpClient()
    raise ValueError(f"unknown HTTP transport {transport!r}: expected 'aiohttp' or 'httpx'")


def _no_price(_model: str, _in: int, _out: int) -> float:
    return 0.0


class JudgeClient(JudgeExchange):
    """Ask a model for a reply that validates against `schema`.

    >>> client = JudgeClient(base_url="http://localhost:8000/v1", model="judge")  # doctest: +SKIP
    >>> reply = await client.complete(messages, Verdict)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        timeout_s: float = 30.0,
        max_retries: int = 2,
        max_concurrency: int = 8,
        response_format: str = "json_schema",
        temperature: float = 0.0,
        max_output_tokens: int = 1024,
        price: PriceFn = _no_price,
        http_client: httpx.AsyncClient | None = None,
        http_transport: str | None = None,
        rate_limiter: RateLimiter | None = None,
        cache: ReplyCache | None = None,
        max_wait_s: float = 60.0,
        on_event: Callable[[str], Awaitable[None]] | None = None,
        initial_concurrency: int = 2,
        system_role: str = "system",
    ) -> None:
        if response_format not in FORMATS:
            raise ValueError(f"unknown response format {response_format!r}: one of {FORMATS}")
        if system_role not in ("system", "user"):
            raise ValueError(f"unknown system role {system_role!r}: 'system' or 'user'")
        self.model = model
        # "user": system messages go into the first user message (judges.llm.formats).
        self.system_role = system_role
        self.response_format = response_format  # as configured
        self.format = response_format  # in use: lowered when the endpoint ignores it
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self._price = price
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.timeout_s = timeout_s
        # Shared by every rubric of the process (the worker builds one client).
        self.concurrency = AdaptiveConcurrency(max_concurrency, initial=initial_concurrency)
        self._rate = rate_limiter or NoRateLimit()
        self._cache = cache
        # Told "rate_limited" on each 429, "retries" before each retry, and
        # "concurrency_increase" / "concurrency_decrease" when the limit moves (for metrics).
        self._on_event = on_event
        self._warned_usage = False
        self._sdk = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout_s,
            max_retries=0,  # retries are ours: see the module docstring
            http_client=http_client,
        )
        self._endpoint = endpoint_of(str(self._sdk.base_url))
        # "aiohttp": chat completions on a bare aiohttp session (judges.llm.aio); else
        # through the SDK's post over `http_client` (None = the SDK's own httpx client).
        if http_transport not in (None, "aiohttp", "httpx"):
            raise ValueError(
                f"unknown HTTP transport {http_transport!r}: expected 'aiohttp' or 'httpx'"
            )
        self._aio = (
            AiohttpPoster(
                base_url=str(self._sdk.base_url),
                api_key=api_key,
                timeout_s=timeout_s,
                pool=max_concurrency,
            )
            if http_transport == "aiohttp"
            else None
        )

    @property
    def endpoint(self) -> str:
        """The base URL without credentials: part of every verdict's identity."""
        return self._endpoint

    # Read-only views for other clients of the same endpoint (e.g. the ragas method).
    @property
    def base_url(self) -> str:
        return str(self._sdk.base_url)

    @property
    def api_key(self) -> str:
        return str(self._sdk.api_key)

    @property
    def timeout(self) -> Any:
        return self._sdk.timeout

    @property
    def price(self) -> PriceFn:
        return self._price

    @property
    def rate_limiter(self) -> RateLimiter:
        return self._rate

    async def aclose(self) -> None:
        await self._sdk.close()
        if self._aio is not None:
            await self._aio.aclose()

    def reply_budget(self, schema: type[BaseModel], override: int | None = None) -> int:
        """max_tokens of a first attempt: `override` (the rubric's [judge]
        max_output_tokens, read from the attributed run when not given), else estimated
        from the schema and capped at `max_output_tokens` (judges.llm.budget)."""
        if override is None:
            calls = current()
            override = calls.max_output_tokens if calls is not None else None
        return reply_budget(_schema_of(schema), self.max_output_tokens, override)

    def request_body(
        self,
        messages: list[dict[str, str]],
        schema: type[BaseModel],
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        fmt: str | None = None,
    ) -> dict[str, Any]:
        """The /chat/completions body of one call: sent online, or as one Batch API line.
        `max_tokens` is this request's budget (default: `reply_budget(schema)`); `fmt` the
        response format (default: the client's current one, judges.llm.formats)."""
        fmt = fmt or self.format
        if self.system_role == "user":
            messages = system_as_user(messages)
        body: dict[str, Any] = {
            "model": model or self.model,
            "messages": with_schema_note(messages, fmt, _schema_of(schema)),
            "temperature": self.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or self.reply_budget(schema),
        }
        shape = response_format(fmt, schema.__name__, _schema_of(schema))
        if shape is not None:
            body["response_format"] = shape
        return body

    async def complete(
        self,
        messages: list[dict[str, str]],
        schema: type[T],
        *,
        model: str | None = None,
        temperature: float | None = None,
        identity: VerdictIdentity | None = None,
        use_cache: bool = True,
    ) -> JudgeReply[T]:
        """One call, plus at most one retry when the reply is unusable. Raises JudgeError.

        The retry is never the same request: a reply cut at its budget is asked again with
        twice the budget and a request to be brief (JudgeTruncatedError if cut again); any
        other unusable reply is re-asked quoting what was wrong (JudgeOutputError naming
        both problems). A reply that holds no JSON at all under `json_schema` means the
        endpoint ignores the schema: the retry, and later calls, use the next format
        (judges.llm.formats). `identity` (default: the attributed scorer run's,
        judges.provenance.attributing) keys the reply cache together with the rendered
        request. `use_cache=False` neither reads nor writes it (anchor runs: the provider
        may have changed the model)."""
        cache = self._cache if use_cache else None
        model = model or self.model
        temp = self.temperature if temperature is None else temperature
        calls = current()
        if identity is None:
            identity = calls.identity if calls is not None else VerdictIdentity()
        key = ""
        if cache is not None:  # hashing the prompt costs ~0.2 ms: only with a cache
            key = self.cache_key(identity, messages, schema, model, temp)
            hit = read_entry(await cache.get(key), schema)
            if hit is not None:
                parsed, stored, stored_model = hit
                if calls is not None:
                    calls.hits += 1
                    calls.reported(stored_model)
                return JudgeReply(
                    parsed=parsed,
                    raw=stored,
                    model=model,
                    usage=Usage(),
                    cached=True,
                    reported_model=stored_model,
                )
        if calls is not None:
            calls.misses += 1
        usage = Usage()
        conversation = list(messages)
        problems: list[str] = []
        raw: str | None = None
        budget = self.reply_budget(schema)
        fmt = self.format
        for attempt in range(2):
            raw, finish, refusal, used, reported, fmt = await self._ask(
                conversation, schema, model, temp, usage, budget, fmt
            )
            usage = usage + used
            if calls is not None:
                calls.reported(reported)
            read = read_reply(raw, finish, refusal, schema)
            if read.parsed is not None:
                self._settle_format(fmt)
                if calls is not None:
                    calls.formats.append(fmt)
                    calls.extracted += int(read.extracted)
                if cache is not None:
                    text = extract_json(raw or "")[0]
                    await cache.set(key, json.dumps({"raw": text, "model": reported}))
                return JudgeReply(
                    parsed=read.parsed,
                    raw=raw or "",
                    model=model,
                    usage=usage,
                    reported_model=reported,
                )
            problems.append(read.problem)
            if attempt == 1:
                break
            if read.truncated:
                budget = retry_budget(budget)
                conversation = [*messages, {"role": "user", "content": BREVITY_NOTE}]
                if calls is not None:
                    calls.truncated_retries += 1
                continue
            if fmt == "json_schema" and not refusal and not looks_like_json(raw):
                fmt = next_format(fmt) or fmt  # the endpoint ignored the schema
            conversation = [
                *messages,
                {"role": "assistant", "content": raw or ""},
                {"role": "user", "content": _REASK.format(problem=read.problem)},
            ]
        if read.truncated:
            raise JudgeTruncatedError(
                f"judge reply cut at its token limit twice ({budget // 2} then {budget} "
                f"tokens): {'; then '.join(problems)}",
                raw_output=raw,
                max_tokens=budget,
                usage=usage,
            )
        raise JudgeOutputError(
            f"judge reply unusable after one re-ask: {'; then '.join(problems)}",
            raw_output=raw,
            usage=usage,
        )

    def _settle_format(self, fmt: str) -> None:
        """Use `fmt` from now on when it is lower than the current format (only ever down:
        a call that started before another lowered it must not raise it back)."""
        if FORMATS.index(fmt) > FORMATS.index(self.format):
            logging.getLogger("judges.llm.client").warning(
                "judge endpoint %s does not honour response format %r: using %r from now on",
                self._endpoint,
                self.format,
                fmt,
            )
            self.format = fmt

    async def _ask(
        self,
        messages: list[dict[str, str]],
        schema: type[BaseModel],
        model: str,
        temperature: float,
        usage: Usage,
        budget: int,
        fmt: str,
    ) -> tuple[str | None, str | None, str | None, Usage, str | None, str]:
        """One attempt (with its transient retries) in `fmt`, or in the next format while
        the endpoint refuses the current one with a 400 that names it."""
        while True:
            request = self.request_body(
                messages, schema, model=model, temperature=temperature, max_tokens=budget, fmt=fmt
            )
            try:
                result = await self._call_with_retries(request, schema.__name__, usage)
            except FormatRefused as exc:
                following = next_format(fmt)
                if following is None:
                    raise JudgeError(str(exc), usage=usage) from exc
                fmt = following
                self._settle_format(fmt)  # a refusal of the format itself is definitive
                continue
            return (*result, fmt)

    def cache_key(
        self,
        identity: VerdictIdentity,
        messages: list[dict[str, str]],
        schema: type[BaseModel],
        model: str,
        temperature: float,
    ) -> str:
        """The identity, with this call's endpoint and settings, plus the rendered request."""
        call = identity.for_call(
            endpoint=self._endpoint,
            model=model,
            temperature=temperature,
            response_format=self.format,
        )
        # The response format's kind is in the identity; its name and schema are here.
        request = {
            "messages": messages,
            "schema_name": schema.__name__,
            "schema": _schema_of(schema),
            "max_tokens": self.reply_budget(schema),
        }
        if self.system_role != "system":  # another prompt reaches the model
            request["system_role"] = self.system_role
        return call.cache_key(request)
