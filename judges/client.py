"""JudgeClient: structured-output calls to any OpenAI-compatible endpoint.

One layer owns HTTP retries: the `openai` SDK (timeouts, 429 with Retry-After, 5xx), sized by
the caller. This client adds what the SDK does not: a JSON-schema reply validated against a
Pydantic model, one re-ask that quotes the validation error, token/cost accounting for every
attempt, and a concurrency limit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ValidationError

from .errors import JudgeError, JudgeOutputError, JudgeTransientError
from .types import Usage

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


def _no_price(_model: str, _in: int, _out: int) -> float:
    return 0.0


def _strip_fences(text: str) -> str:
    # Some servers in json_object mode still wrap the object in ``` fences.
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text.strip()


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
    ) -> None:
        self.model = model
        self.response_format = response_format
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self._price = price
        self._limit = asyncio.Semaphore(max_concurrency)
        self._sdk = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )

    async def close(self) -> None:
        await self._sdk.close()

    def _format(self, schema: type[BaseModel]) -> dict[str, Any]:
        if self.response_format == "json_object":
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }

    async def complete(
        self,
        messages: list[dict[str, str]],
        schema: type[T],
        *,
        model: str | None = None,
        temperature: float | None = None,
    ) -> JudgeReply[T]:
        """One call, plus one re-ask if the reply does not validate. Raises JudgeError."""
        model = model or self.model
        usage = Usage()
        conversation = list(messages)
        problem = ""
        raw: str | None = None
        for attempt in range(2):
            raw, finish, refusal, used = await self._call(
                conversation, schema, model, temperature, usage
            )
            usage = usage + used
            problem = self._problem(raw, finish, refusal)
            if not problem:
                try:
                    parsed = schema.model_validate_json(_strip_fences(raw or ""))
                except ValidationError as exc:
                    problem = f"it did not match the schema: {_first_errors(exc)}"
                else:
                    return JudgeReply(parsed=parsed, raw=raw or "", model=model, usage=usage)
            if attempt == 0:
                conversation = [
                    *messages,
                    {"role": "assistant", "content": raw or ""},
                    {"role": "user", "content": _REASK.format(problem=problem)},
                ]
        raise JudgeOutputError(
            f"judge reply unusable after one re-ask: {problem}", raw_output=raw, usage=usage
        )

    @staticmethod
    def _problem(raw: str | None, finish: str | None, refusal: str | None) -> str:
        if refusal:
            return f"the model refused: {refusal[:200]}"
        if finish == "length":
            return "it was cut off (finish_reason=length)"
        if not raw or not raw.strip():
            return "it was empty"
        try:
            json.loads(_strip_fences(raw))
        except json.JSONDecodeError as exc:
            return f"it was not valid JSON ({exc.msg} at position {exc.pos})"
        return ""

    async def _call(
        self,
        messages: list[dict[str, str]],
        schema: type[BaseModel],
        model: str,
        temperature: float | None,
        usage_so_far: Usage,
    ) -> tuple[str | None, str | None, str | None, Usage]:
        try:
            async with self._limit:
                response = await self._sdk.chat.completions.create(
                    model=model,
                    messages=messages,  # type: ignore[arg-type]
                    response_format=self._format(schema),  # type: ignore[arg-type]
                    temperature=self.temperature if temperature is None else temperature,
                    max_tokens=self.max_output_tokens,
                )
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise JudgeTransientError(f"judge unreachable: {exc}", usage=usage_so_far) from exc
        except openai.RateLimitError as exc:
            raise JudgeTransientError(
                f"judge rate limit (HTTP 429) after retries: {_body(exc)}",
                retry_after_s=_retry_after(exc.response),
                usage=usage_so_far,
            ) from exc
        except openai.InternalServerError as exc:
            raise JudgeTransientError(
                f"judge server error (HTTP {exc.status_code}) after retries: {_body(exc)}",
                usage=usage_so_far,
            ) from exc
        except openai.APIStatusError as exc:
            raise JudgeError(
                f"judge refused the request (HTTP {exc.status_code}): {_body(exc)}",
                usage=usage_so_far,
            ) from exc
        except openai.OpenAIError as exc:  # e.g. a 200 whose body is not a completion
            raise JudgeOutputError(
                f"judge reply unreadable: {exc}", raw_output=None, usage=usage_so_far
            ) from exc
        if not isinstance(response, ChatCompletion):
            # A 200 whose body is not JSON (a proxy's HTML page): the SDK hands back text.
            raise JudgeOutputError(
                "judge reply is not a chat completion",
                raw_output=str(response)[:2000],
                usage=usage_so_far,
            )
        tokens_in = response.usage.prompt_tokens if response.usage else 0
        tokens_out = response.usage.completion_tokens if response.usage else 0
        used = Usage(
            calls=1,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=self._price(model, tokens_in, tokens_out),
        )
        if not response.choices:
            return None, None, None, used
        choice = response.choices[0]
        refusal = getattr(choice.message, "refusal", None)
        return choice.message.content, choice.finish_reason, refusal, used


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _body(exc: openai.APIStatusError) -> str:
    try:
        return exc.response.text[:300]
    except Exception:  # the body may be a stream that is already closed
        return str(exc)[:300]


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
