"""The `[judge]` and `[generator]` settings: the judge endpoint a rubric's verdicts come from
and the generator that re-samples answers (self-consistency, gate replay)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JudgeSettings(_Section):
    base_url: str = ""
    model: str = Field("gpt-4o-mini", min_length=1)
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    # Calls in flight per worker process, shared by all its rubrics: adaptive (AIMD,
    # judges.llm.concurrency) from initial_concurrency up to max_concurrency, halved on
    # timeouts, 429/503 and latency over 1.5 times its baseline.
    max_concurrency: int = Field(32, ge=1, le=1024)
    initial_concurrency: int = Field(2, ge=1, le=1024)
    # How replies are asked for; an endpoint that ignores or refuses it is asked in the
    # next one (json_schema -> json_object_schema -> json_object -> prompt,
    # judges.llm.formats).
    response_format: Literal["json_schema", "json_object_schema", "json_object", "prompt"] = (
        "json_schema"
    )
    # "user": system messages are sent at the front of the first user message, for chat
    # templates without a system turn that drop it (Gemma's; judges.llm.formats).
    system_role: Literal["system", "user"] = "system"
    temperature: float = Field(0.0, ge=0, le=2)
    # The ceiling of a reply budget: each call's max_tokens is estimated from its reply
    # schema (judges.llm.budget) up to this, or set by the rubric's [judge]
    # max_output_tokens; a reply cut at its budget is retried once with twice the budget.
    max_output_tokens: int = Field(1024, ge=16)
    # Shared by all worker processes through Redis; 0 = no limit.
    rpm_limit: int = Field(0, ge=0)
    tpm_limit: int = Field(0, ge=0)
    # Replies cached by everything that can change a verdict (judges.provenance: endpoint,
    # model, prompt, schema, rubric, scorer version); 0 disables the cache.
    cache_ttl_s: int = Field(7 * 86400, ge=0)
    # Redis key prefix of the reply cache; "" = "<redis.key_prefix>:judge:cache".
    cache_namespace: str = ""
    # A Retry-After longer than this is not waited out inside the job.
    max_wait_s: float = Field(20.0, ge=0)
    # The openai SDK's HTTP transport: "aiohttp" costs ~2.4x less CPU per call than
    # "httpx" (bench/http_floor.py). Both honour HTTP(S)_PROXY; "httpx" is the SDK's own
    # default, for servers or proxies aiohttp does not get along with.
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    # Batch mode (rubric `mode = "batch"`): requests per Batch API file (OpenAI allows 50,000),
    # and how often an expired or cancelled batch's requests are sent again before each
    # becomes an error record.
    batch_max_requests: int = Field(50_000, ge=1, le=50_000)
    # Bytes per Batch API input file: OpenAI refuses files over 200 MB; the default keeps a
    # margin under it.
    batch_max_bytes: int = Field(190_000_000, ge=1, le=200_000_000)
    batch_max_submissions: int = Field(3, ge=1, le=20)

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    def api_key(self) -> str:
        # Local servers (vLLM, llama.cpp) accept any key; the SDK insists on a non-empty one.
        return os.environ.get(self.api_key_env, "") or "not-needed"

    def worst_case_call_s(self) -> float:
        """Upper bound of one call with the client's retries (each wait ≤ max(8 s, max_wait_s))."""
        return (
            self.timeout_s * (self.max_retries + 1) + max(8.0, self.max_wait_s) * self.max_retries
        )


class GeneratorSettings(_Section):
    base_url: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    temperature: float = Field(1.0, ge=0, le=2)
    samples: int = Field(3, ge=1, le=20)
    # A sample's max_tokens when the trace names none (gen_ai.request.max_tokens): without
    # one a server may write until its context is full (minutes on a CPU server).
    max_output_tokens: int = Field(1024, ge=16)
    http_transport: Literal["aiohttp", "httpx"] = "aiohttp"  # as judge.http_transport

    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "") or "not-needed"
