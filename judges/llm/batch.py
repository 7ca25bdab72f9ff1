"""OpenAI's Batch API: many judge calls in one JSONL file, answered within a window, at half
the price of the same calls made online.

The flow (https://platform.openai.com/docs/guides/batch):

    POST /v1/files            purpose=batch, a JSONL file of {custom_id, method, url, body}
    POST /v1/batches          input_file_id, endpoint=/v1/chat/completions, completion_window=24h
    GET  /v1/batches/{id}     until status is completed | failed | expired | cancelled
    GET  /v1/files/{id}/content   the output file (and the error file): one line per request

Each request body is `JudgeClient.request_body` (the very body an online call sends) and each
answered line is judged by `judges.llm.replies.read_reply` (the online parser), so a rubric's
verdict does not depend on the mode. What batch mode cannot do is the online re-ask: an unusable
reply is an error with the raw output.

Pure parts (`batch_line`, `jsonl`, `read_results`, `reply_of`) are apart from the I/O
(`BatchClient`); the caller owns persistence and scheduling (evaluator/worker/batch.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import openai
from openai import AsyncOpenAI
from pydantic import BaseModel

from judges.errors import (
    JudgeError,
    JudgeOutputError,
    JudgeTransientError,
    JudgeTruncatedError,
)
from judges.llm.client import JudgeClient, JudgeReply, PriceFn
from judges.llm.completions import completion_of
from judges.llm.replies import read_reply
from judges.types import Usage

T = TypeVar("T", bound=BaseModel)

ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
COMPLETION_WINDOW: Literal["24h"] = "24h"
# The Batch API bills input and output tokens at half the online price.
PRICE_FACTOR = 0.5
# Statuses after which a batch never changes again.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# Error codes of a line the batch never ran: an expired or cancelled batch writes one such
# line per unfinished request into its error file. Not an answer: send it again.
NOT_RUN = frozenset({"batch_expired", "batch_cancelled"})


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """What GET /v1/batches/{id} says about one batch."""

    id: str
    status: str
    input_file_id: str = ""
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str = ""  # the batch's own errors (a failed validation), joined
    metadata: dict[str, str] = field(default_factory=dict)  # as given at creation

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One line of an output or error file: the completion body, or why there is none."""

    custom_id: str
    body: dict[str, Any] | None  # a chat completion when the line succeeded
    error: str | None = None
    code: str | None = None  # the line's `error.code` (batch_expired, ...), when it has one

    @property
    def not_run(self) -> bool:
        """The batch ended before running this request (no answer, nothing judged)."""
        return self.code in NOT_RUN


def metadata_for(name: str) -> dict[str, str]:
    """What marks a batch as this deployment's at the provider (`name`: its key prefix)."""
    return {"source": "evaluator", "name": name[:500]}


def batch_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request of the input file."""
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def jsonl(lines: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


def fitting(lines: Sequence[dict[str, Any]], max_bytes: int) -> int:
    """How many leading lines fit in one input file of at most `max_bytes` (as `jsonl`
    encodes them); at least one, so an oversized request is sent (and refused) on its own
    rather than blocking every request behind it."""
    total = 0
    for n, line in enumerate(lines):
        total += len(json.dumps(line, ensure_ascii=False).encode()) + 1
        if total > max_bytes:
            return max(n, 1)
    return len(lines)


def custom_ids_of(content: bytes) -> list[str]:
    """The custom_ids of an input file's requests (lines that name none are skipped)."""
    ids = []
    for raw in content.splitlines():
        try:
            line = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            ids.append(line["custom_id"])
    return ids


def read_results(content: bytes) -> list[BatchResult]:
    """Every line of an output or error file; a line that is not one is skipped (it names
    no request to blame), a line with a non-200 response or an `error` is an error result."""
    results = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            continue
        results.append(_result(line))
    return results


def _result(line: dict[str, Any]) -> BatchResult:
    custom_id = line["custom_id"]
    error = line.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return BatchResult(
            custom_id,
            None,
            f"batch line failed ({code}): {message or error}",
            code=code if isinstance(code, str) else None,
        )
    response = line.get("response")
    if not isinstance(response, dict):
        return BatchResult(custom_id, None, "batch line has neither a response nor an error")
    status, body = response.get("status_code"), response.get("body")
    if status != 200 or not isinstance(body, dict):
        detail = body.get("error", body) if isinstance(body, dict) else body
        return BatchResult(custom_id, None, f"judge refused the request (HTTP {status}): {detail}")
    return BatchResult(custom_id, body)


def reply_of(result: BatchResult, schema: type[T], *, model: str, price: PriceFn) -> JudgeReply[T]:
    """The reply of one answered line, priced at the batch rate; raises JudgeError (with the
    raw output when there is one) for an error line or an unusable reply."""
    if result.body is None:
        raise JudgeError(result.error or "batch line failed")
    try:
        completion = completion_of(result.body)
    except ValueError as exc:
        raw = json.dumps(result.body)[:2000]
        raise JudgeOutputError(
            f"batch reply is not a chat completion: {exc}", raw_output=raw
        ) from exc
    usage = Usage(
        calls=1,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=price(model, completion.input_tokens, completion.output_tokens) * PRICE_FACTOR,
    )
    read = read_reply(completion.content, completion.finish_reason, completion.refusal, schema)
    parsed, problem = read.parsed, read.problem
    if parsed is None and read.truncated:
        # Cut at its budget: its own kind, as online (no retry: that waits another window).
        raise JudgeTruncatedError(
            f"judge reply cut at its token limit (batch, no retry): {problem}",
            raw_output=completion.content,
            max_tokens=completion.output_tokens,
            usage=usage,
        )
    if parsed is None:
        # No re-ask in a batch: the next attempt would wait another window.
        raise JudgeOutputError(
            f"judge reply unusable (batch, no re-ask): {problem}",
            raw_output=completion.content,
            usage=usage,
        )
    return JudgeReply(
        parsed=parsed,
        raw=completion.content or "",
        model=model,
        usage=usage,
        reported_model=completion.model,
    )


class BatchClient:
    """Files and batches on the judge's endpoint, with its key; one call per method, no
    retries (the caller's cron comes back next minute). Raises JudgeTransientError when the
    endpoint is unreachable or busy, JudgeError when it refuses.

    >>> batches = BatchClient.for_judge(judge)  # doctest: +SKIP
    >>> status = await batches.submit([batch_line("eval-1", body)])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str = "not-needed",
        timeout_s: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._sdk = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout_s,
            max_retries=0,
            http_client=http_client,
        )

    @classmethod
    def for_judge(cls, judge: JudgeClient, *, timeout_s: float = 60.0) -> BatchClient:
        return cls(base_url=judge.base_url, api_key=judge.api_key, timeout_s=timeout_s)

    async def aclose(self) -> None:
        await self._sdk.close()

    async def submit(self, lines: Sequence[dict[str, Any]], *, name: str = "") -> BatchStatus:
        """Upload the requests and create their batch."""
        async with _errors("upload the batch file"):
            uploaded = await self._sdk.files.create(
                file=(f"{name or 'evaluator'}-batch.jsonl", jsonl(lines)), purpose="batch"
            )
        async with _errors("create the batch"):
            batch = await self._sdk.batches.create(
                input_file_id=uploaded.id,
                endpoint=ENDPOINT,
                completion_window=COMPLETION_WINDOW,
                metadata=metadata_for(name),
            )
        return _status(batch)

    async def recent(self, limit: int = 100) -> list[BatchStatus]:
        """The account's most recent batches (one page, newest first)."""
        async with _errors("list batches"):
            page = await self._sdk.batches.list(limit=limit)
            return [_status(batch) for batch in page.data]

    async def retrieve(self, batch_id: str) -> BatchStatus:
        async with _errors(f"read batch {batch_id}"):
            return _status(await self._sdk.batches.retrieve(batch_id))

    async def content(self, file_id: str) -> bytes:
        async with _errors(f"download file {file_id}"):
            reply = await self._sdk.files.content(file_id)
            return reply.content


def _status(batch: Any) -> BatchStatus:
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    return BatchStatus(
        id=batch.id,
        status=batch.status,
        input_file_id=batch.input_file_id or "",
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        errors="; ".join(f"{e.code}: {e.message}" for e in errors),
        metadata={str(k): str(v) for k, v in (getattr(batch, "metadata", None) or {}).items()},
    )


class _errors:
    """Map the SDK's errors onto the judges hierarchy, naming the step that failed."""

    def __init__(self, step: str) -> None:
        self.step = step

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or not isinstance(exc, openai.OpenAIError):
            return
        if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
            raise JudgeTransientError(f"could not {self.step}: {exc}") from exc
        if isinstance(exc, openai.RateLimitError | openai.InternalServerError):
            raise JudgeTransientError(f"could not {self.step}: {exc}") from exc
        raise JudgeError(f"could not {self.step}: {exc}") from exc
