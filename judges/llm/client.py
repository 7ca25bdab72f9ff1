"""JudgeClient: structured-output calls to any OpenAI-compatible endpoint.

One layer owns HTTP retries: this client (the SDK's own retries are switched off), so it sees
every 429, honours Retry-After, and shrinks its concurrency while the endpoint is saturated.
It also validates the JSON-schema reply against a Pydantic model with one re-ask that quotes
the validation error, accounts tokens and cost for every attempt, waits on a shared rate
limiter, and serves repeated prompts from a reply cache (re-evaluating costs nothing).
The cache key is `VerdictIdentity.cache_key` (judges.provenance): endpoint, model, prompt,
schema, rubric and scorer version, so a reply is never reused where it would not be true.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import openai
from openai import AsyncOpenAI
from pydantic import BaseModel, ValidationError

from judges.errors import JudgeDeferred, JudgeError, JudgeOutputError, JudgeTransientError
from judges.llm.aio import AiohttpPoster, Unreachable
from judges.llm.backoff import backoff_s
from judges.llm.completions import read_completion, retry_after_s, strip_fences
from judges.llm.limits import AdaptiveConcurrency, NoRateLimit, RateLimiter, ReplyCache
from judges.provenance import VerdictIdentity, current, endpoint_of
from judges.types import Usage

T = TypeVar("T", bound=BaseModel)
PriceFn = Callable[[str, int, int], float]

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


class JudgeClient:
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
    ) -> None:
        self.model = model
        self.response_format = response_format
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self._price = price
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self.concurrency = AdaptiveConcurrency(max_concurrency)
        self._rate = rate_limiter or NoRateLimit()
        self._cache = cache
        # Told "rate_limited" on each 429 and "retries" before each retry (for metrics).
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

    close = aclose  # the older name

    def _format(self, schema: type[BaseModel]) -> dict[str, Any]:
        if self.response_format == "json_object":
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": _schema_of(schema)},
        }

    def request_body(
        self,
        messages: list[dict[str, str]],
        schema: type[BaseModel],
        *,
        model: str | None = None,
        temperature: float | None = None,
    ) -> dict[str, Any]:
        """The /chat/completions body of one call: sent online, or as one Batch API line."""
        return {
            "model": model or self.model,
            "messages": messages,
            "response_format": self._format(schema),
            "temperature": self.temperature if temperature is None else temperature,
            "max_tokens": self.max_output_tokens,
        }

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
        """One call, plus one re-ask if the reply does not validate. Raises JudgeError.

        `identity` (default: the attributed scorer run's, judges.provenance.attributing)
        keys the reply cache together with the rendered request. `use_cache=False` neither
        reads nor writes it (anchor runs: the provider may have changed the model)."""
        cache = self._cache if use_cache else None
        model = model or self.model
        temp = self.temperature if temperature is None else temperature
        calls = current()
        if identity is None:
            identity = calls.identity if calls is not None else VerdictIdentity()
        key = ""
        if cache is not None:  # hashing the prompt costs ~0.2 ms: only with a cache
            key = self.cache_key(identity, messages, schema, model, temp)
            hit = _read_entry(await cache.get(key), schema)
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
        problem = ""
        raw: str | None = None
        for attempt in range(2):
            raw, finish, refusal, used, reported = await self._call_with_retries(
                conversation, schema, model, temp, usage
            )
            usage = usage + used
            if calls is not None:
                calls.reported(reported)
            valid, problem = parse_reply(raw, finish, refusal, schema)
            if valid is not None:
                if cache is not None:
                    entry = {"raw": strip_fences(raw or ""), "model": reported}
                    await cache.set(key, json.dumps(entry, ensure_ascii=False))
                return JudgeReply(
                    parsed=valid,
                    raw=raw or "",
                    model=model,
                    usage=usage,
                    reported_model=reported,
                )
            if attempt == 0:
                conversation = [
                    *messages,
                    {"role": "assistant", "content": raw or ""},
                    {"role": "user", "content": _REASK.format(problem=problem)},
                ]
        raise JudgeOutputError(
            f"judge reply unusable after one re-ask: {problem}", raw_output=raw, usage=usage
        )

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
            response_format=self.response_format,
        )
        # The response format's kind is in the identity; its name and schema are here.
        request = {
            "messages": messages,
            "schema_name": schema.__name__,
            "schema": _schema_of(schema),
            "max_tokens": self.max_output_tokens,
        }
        return call.cache_key(request)

    async def _call_with_retries(
        self,
        messages: list[dict[str, str]],
        schema: type[BaseModel],
        model: str,
        temperature: float,
        usage_so_far: Usage,
    ) -> tuple[str | None, str | None, str | None, Usage, str | None]:
        estimate = sum(len(m.get("content") or "") for m in messages) // 4 + self.max_output_tokens
        attempt = 0
        while True:
            attempt += 1
            await self._rate.acquire(estimate)
            try:
                result = await self._call(messages, schema, model, temperature, usage_so_far)
            except JudgeTransientError as exc:
                if exc.rate_limited:
                    self.concurrency.on_rate_limited()
                    await self._event("rate_limited")
                    if exc.retry_after_s:
                        await self._rate.pause(exc.retry_after_s)
                wait = exc.retry_after_s if exc.retry_after_s is not None else backoff_s(attempt)
                if exc.retry_after_s is not None and wait > self.max_wait_s:
                    # The server named a time beyond what a job should sleep: defer the job.
                    raise JudgeDeferred(
                        f"judge asked to retry after {wait:.0f} s (> judge.max_wait_s "
                        f"{self.max_wait_s:.0f} s): {exc}",
                        retry_after_s=wait,
                        usage=exc.usage,
                    ) from exc
                if attempt > self.max_retries or wait > self.max_wait_s:
                    # Out of attempts, or told to wait longer than a job should: hand it back
                    # (the caller records the cause, or defers the job by retry_after_s).
                    raise JudgeTransientError(
                        f"{exc} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})",
                        retry_after_s=exc.retry_after_s,
                        rate_limited=exc.rate_limited,
                        usage=exc.usage,
                    ) from exc
                await self._event("retries")
                await asyncio.sleep(wait)
                continue
            self.concurrency.on_success()
            return result

    async def _event(self, kind: str) -> None:
        if self._on_event is None:
            return
        try:
            await self._on_event(kind)
        except Exception:  # metrics must never fail a judge call
            logging.getLogger("judges.llm.client").debug("on_event(%s) failed", kind, exc_info=True)

    async def _post(self, request: dict[str, Any]) -> tuple[int, Mapping[str, str], bytes]:
        """POST a chat completion: (status, headers, body); raises Unreachable when no
        response came back."""
        if self._aio is not None:
            return await self._aio.post("/chat/completions", request)
        try:
            # The SDK's low-level post: its auth, base URL and timeouts, without the typed
            # request transform and response model, which cost ~1.5 ms of CPU per call
            # (bench/http_floor.py) for fields we read by hand.
            response = await self._sdk.post(
                "/chat/completions", body=request, cast_to=httpx.Response
            )
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise Unreachable(str(exc)) from exc
        except openai.APIStatusError as exc:
            try:
                content = exc.response.content
            except Exception:  # the body may be a stream that is already closed
                content = str(exc).encode()
            return exc.status_code, exc.response.headers, content
        return response.status_code, response.headers, response.content

    async def _call(
        self,
        messages: list[dict[str, str]],
        schema: type[BaseModel],
        model: str,
        temperature: float,
        usage_so_far: Usage,
    ) -> tuple[str | None, str | None, str | None, Usage, str | None]:
        request = self.request_body(messages, schema, model=model, temperature=temperature)
        try:
            async with self.concurrency:
                status, headers, content = await self._post(request)
        except Unreachable as exc:
            raise JudgeTransientError(f"judge unreachable: {exc}", usage=usage_so_far) from exc
        except openai.OpenAIError as exc:
            raise JudgeOutputError(
                f"judge reply unreadable: {exc}", raw_output=None, usage=usage_so_far
            ) from exc
        if status == 429:
            raise JudgeTransientError(
                f"judge rate limit (HTTP 429): {_text(content)}",
                retry_after_s=retry_after_s(headers),
                rate_limited=True,
                usage=usage_so_far,
            )
        if status >= 500:
            raise JudgeTransientError(
                f"judge server error (HTTP {status}): {_text(content)}", usage=usage_so_far
            )
        if status >= 400:
            raise JudgeError(
                f"judge refused the request (HTTP {status}): {_text(content)}",
                usage=usage_so_far,
            )
        try:
            completion = read_completion(content)
        except ValueError as exc:
            # A 200 whose body is not a completion (a proxy's HTML page, a truncated body).
            raise JudgeOutputError(
                f"judge reply is not a chat completion: {exc}",
                raw_output=content.decode("utf-8", "replace")[:2000],
                usage=usage_so_far,
            ) from exc
        if completion.usage_problem and not self._warned_usage:
            self._warned_usage = True  # once per client: a server that does it, does it always
            logging.getLogger("judges.llm.client").warning(
                "judge reply usage unreadable, tokens counted as 0: %s", completion.usage_problem
            )
        used = Usage(
            calls=1,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost_usd=self._price(model, completion.input_tokens, completion.output_tokens),
        )
        return (
            completion.content,
            completion.finish_reason,
            completion.refusal,
            used,
            completion.model,
        )


def _problem(raw: str | None, finish: str | None, refusal: str | None) -> str:
    if refusal:
        return f"the model refused: {refusal[:200]}"
    if finish == "length":
        return "it was cut off (finish_reason=length)"
    if not raw or not raw.strip():
        return "it was empty"
    try:
        json.loads(strip_fences(raw))
    except json.JSONDecodeError as exc:
        return f"it was not valid JSON ({exc.msg} at position {exc.pos})"
    return ""


def parse_reply(
    raw: str | None, finish: str | None, refusal: str | None, schema: type[T]
) -> tuple[T | None, str]:
    """(the validated reply, "") or (None, what is wrong with it): online and batch replies
    are judged by this one function."""
    problem = _problem(raw, finish, refusal)
    if problem:
        return None, problem
    try:
        return schema.model_validate_json(strip_fences(raw or "")), ""
    except ValidationError as exc:
        return None, f"it did not match the schema: {_first_errors(exc)}"


def _read_entry(entry: str | None, schema: type[T]) -> tuple[T, str, str | None] | None:
    """A cache entry as (parsed, raw, reported model); None when absent or unusable."""
    if entry is None:
        return None
    try:
        stored = json.loads(entry)
        raw, reported = str(stored["raw"]), stored.get("model")
        return schema.model_validate_json(raw), raw, reported if isinstance(reported, str) else None
    except (ValueError, TypeError, KeyError):  # ValidationError is a ValueError
        return None  # an entry from an older format or schema: ask again


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _text(content: bytes) -> str:
    return content[:1200].decode("utf-8", "replace")[:300]
