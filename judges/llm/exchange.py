"""The HTTP half of JudgeClient: one chat-completion request, its retries, and its slot.

`JudgeExchange` is mixed into JudgeClient (judges.llm.client), which sets the state it uses:
`_sdk` / `_aio` (the transport), `concurrency` (judges.llm.concurrency), `_rate` (a shared
RateLimiter), `max_retries`, `max_wait_s`, `_price`, `_on_event` and `_warned_usage`.

What is retried (each try with its own timeout, `timeout_s`; waits from
judges.llm.backoff, or the server's Retry-After): timeouts, connection errors, 408, 429 and
5xx — as JudgeTransientError once the tries are spent. A 4xx is not retried (JudgeError),
except that a 400/422 naming the response format raises FormatRefused for the client to
ask in the next format. Every answer and timeout is fed back to the concurrency limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from judges.errors import JudgeDeferred, JudgeError, JudgeOutputError, JudgeTransientError
from judges.llm.aio import AiohttpPoster, Unreachable
from judges.llm.backoff import backoff_s
from judges.llm.completions import read_completion, retry_after_s
from judges.llm.concurrency import AdaptiveConcurrency, Outcome, SlotTimeout, slot_deadline
from judges.llm.formats import refuses_format
from judges.llm.limits import RateLimiter
from judges.types import Usage

PriceFn = Callable[[str, int, int], float]
_log = logging.getLogger("judges.llm.concurrency")


class JudgeExchange:
    """One request with retries inside a concurrency slot (see the module docstring)."""

    _sdk: AsyncOpenAI
    _aio: AiohttpPoster | None
    concurrency: AdaptiveConcurrency
    _rate: RateLimiter
    max_retries: int
    max_wait_s: float
    timeout_s: float  # per attempt; also how long a slot is awaited with no answer at all
    _price: PriceFn
    _on_event: Callable[[str], Awaitable[None]] | None
    _warned_usage: bool

    async def _call_with_retries(
        self, request: dict[str, Any], kind: str, usage_so_far: Usage
    ) -> tuple[str | None, str | None, str | None, Usage, str | None]:
        """One request, retried on retryable causes only (timeouts, connection errors, 429,
        5xx) with the one back-off policy (judges.llm.backoff); each try has its own
        timeout (`timeout_s`)."""
        text = sum(len(m.get("content") or "") for m in request["messages"])
        estimate = text // 4 + int(request["max_tokens"])
        attempt = 0
        while True:
            attempt += 1
            await self._rate.acquire(estimate)
            try:
                return await self._call(request, kind, usage_so_far)
            except JudgeTransientError as exc:
                if exc.rate_limited:
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
                deadline = slot_deadline()
                late = deadline is not None and time.monotonic() + wait >= deadline
                if attempt > self.max_retries or wait > self.max_wait_s or late:
                    # Out of attempts, told to wait longer than a job should, or a retry
                    # would start past the job's deadline (refused then): hand it back (the
                    # caller records the cause, or defers the job by retry_after_s).
                    raise JudgeTransientError(
                        f"{exc} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})",
                        retry_after_s=exc.retry_after_s,
                        rate_limited=exc.rate_limited,
                        usage=exc.usage,
                    ) from exc
                await self._event("retries")
                await asyncio.sleep(wait)

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
        except openai.APITimeoutError as exc:
            raise Unreachable(str(exc), timed_out=True) from exc
        except openai.APIConnectionError as exc:
            raise Unreachable(str(exc)) from exc
        except openai.APIStatusError as exc:
            try:
                content = exc.response.content
            except Exception:  # the body may be a stream that is already closed
                content = str(exc).encode()
            return exc.status_code, exc.response.headers, content
        return response.status_code, response.headers, response.content

    async def _exchange(
        self, request: dict[str, Any], kind: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The POST inside one concurrency slot, its outcome fed back to the limiter."""
        try:  # waits its turn while the endpoint answers; the job's deadline (slots_until)
            ticket = await self.concurrency.acquire(self.timeout_s)
        except SlotTimeout as exc:  # stalled or out of time: as if this attempt timed out
            raise Unreachable(str(exc), timed_out=True) from exc
        outcome: Outcome = "error"
        try:
            status, headers, content = await self._post(request)
            outcome = _outcome_of(status)
            return status, headers, content
        except Unreachable as exc:
            outcome = "timeout" if exc.timed_out else "error"
            raise
        finally:
            change = await self.concurrency.release(ticket, outcome, kind)
            if change is not None:
                limiter = self.concurrency  # where it went, for a run's log (bench/real_demo.py)
                _log.info(
                    "judge concurrency %s: limit %d, %d in flight, %d waiting",
                    change,
                    limiter.limit,
                    limiter.in_flight,
                    limiter.stats()["waiting"],
                )
                await self._event(f"concurrency_{change.partition(':')[0]}")

    async def _call(
        self, request: dict[str, Any], kind: str, usage_so_far: Usage
    ) -> tuple[str | None, str | None, str | None, Usage, str | None]:
        model = str(request["model"])
        try:
            status, headers, content = await self._exchange(request, kind)
        except Unreachable as exc:
            what = "timed out" if exc.timed_out else "unreachable"
            raise JudgeTransientError(f"judge {what}: {exc}", usage=usage_so_far) from exc
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
        if refuses_format(status, _text(content)) and "response_format" in request:
            raise FormatRefused(f"judge refused the request (HTTP {status}): {_text(content)}")
        if status >= 500 or status == 408:
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


class FormatRefused(Exception):
    """The endpoint answered 400 to the response format itself: try the next format."""


def _outcome_of(status: int) -> Outcome:
    # 503 is how an overloaded server (llama.cpp with a full queue, a proxy) says "too many".
    if status in (429, 503):
        return "rate_limited"
    if status == 408:
        return "timeout"
    return "ok" if status < 400 else "error"


def _text(content: bytes) -> str:
    return content[:1200].decode("utf-8", "replace")[:300]
