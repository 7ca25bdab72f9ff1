"""JudgeClient flow control: Retry-After, bounded retries, adaptive concurrency, shared
rate limits (real Redis) and the reply cache (real Redis). Judge HTTP mocked with respx."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import respx
from pydantic import BaseModel
from redis.asyncio import Redis

from evaluator.worker.judge_limits import RedisRateLimiter, RedisReplyCache
from judges.errors import JudgeDeferred, JudgeOutputError, JudgeTransientError
from judges.llm.client import JudgeClient
from judges.llm.concurrency import slots_until
from judges.llm.limits import AdaptiveConcurrency

from .conftest import JUDGE_URL, chat_completion
from .polling import until

MESSAGES = [{"role": "user", "content": "grade this"}]


class Verdict(BaseModel):
    score: int


def ok() -> httpx.Response:
    return httpx.Response(200, json=chat_completion(json.dumps({"score": 3})))


def client(**kw: object) -> JudgeClient:
    return JudgeClient(base_url=JUDGE_URL, model="m", **kw)  # type: ignore[arg-type]


@respx.mock(base_url=JUDGE_URL)
async def test_429_with_retry_after_is_waited_out_then_succeeds(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        side_effect=[httpx.Response(429, headers={"retry-after": "0.3"}, json={"error": {}}), ok()]
    )
    judge = client(max_retries=2, max_concurrency=4)
    started = time.monotonic()
    reply = await judge.complete(MESSAGES, Verdict)
    assert reply.parsed.score == 3
    assert route.call_count == 2
    assert time.monotonic() - started >= 0.3  # the server's wait was honoured
    assert judge.concurrency.limit == 2  # halved on the 429
    await judge.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_retry_after_longer_than_a_job_may_wait_is_handed_back(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(429, headers={"retry-after": "120"}, json={"error": {}})
    )
    judge = client(max_retries=5, max_wait_s=10)
    with pytest.raises(JudgeDeferred) as err:
        await judge.complete(MESSAGES, Verdict)
    assert route.call_count == 1  # not spun
    assert err.value.retry_after_s == 120
    await judge.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_server_errors_are_retried_a_bounded_number_of_times(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(503, json={"error": {}})
    )
    judge = client(max_retries=2)
    with pytest.raises(JudgeTransientError, match=r"HTTP 503.*gave up after 3 attempts"):
        await judge.complete(MESSAGES, Verdict)
    assert route.call_count == 3
    await judge.aclose()


async def test_adaptive_concurrency_starts_low_grows_on_success_and_halves_once_per_window() -> (
    None
):
    clock = [0.0]
    limit = AdaptiveConcurrency(8, clock=lambda: clock[0])
    assert limit.limit == 2  # starts low, whatever the maximum
    for _ in range(2):  # one full window at the limit: +1
        tickets = [await limit.acquire() for _ in range(limit.limit)]
        clock[0] += 1.0
        for t in tickets:
            await limit.release(t, "ok")
    assert limit.limit == 4 and limit.increases == 2
    held = [await limit.acquire() for _ in range(4)]
    for t in held:  # four timeouts of one window halve the limit once, not four times
        await limit.release(t, "timeout")
    assert limit.limit == 2 and limit.decreases["timeout"] == 1
    slow = await limit.acquire()
    clock[0] += 10.0  # ten times the baseline: requests queue at the server
    assert await limit.release(slow, "ok") == "decrease:latency"
    assert limit.limit == 1
    in_flight = 0
    peak = 0
    release = asyncio.Event()  # holders keep their slot until the test lets them go

    async def work() -> None:
        nonlocal in_flight, peak
        async with limit:
            in_flight += 1
            peak = max(peak, in_flight)
            await release.wait()
            in_flight -= 1

    tasks = [asyncio.create_task(work()) for _ in range(20)]
    await until(lambda: in_flight >= 1, "one call holding the limit")
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 1


@respx.mock(base_url=JUDGE_URL)
async def test_reply_cache_makes_re_evaluation_free(
    respx_mock: respx.MockRouter, redis_url: str
) -> None:
    route = respx_mock.post("/chat/completions").mock(return_value=ok())
    redis = Redis.from_url(redis_url)
    judge = client(cache=RedisReplyCache(redis, prefix="c", ttl_s=60))
    first = await judge.complete(MESSAGES, Verdict)
    second = await judge.complete(MESSAGES, Verdict)
    other = await judge.complete([{"role": "user", "content": "another"}], Verdict)
    assert route.call_count == 2
    assert (first.cached, second.cached, other.cached) == (False, True, False)
    assert second.usage.calls == 0 and second.parsed == first.parsed
    await judge.aclose()
    await redis.aclose()


async def test_shared_rate_limit_is_enforced_across_clients(redis_url: str) -> None:
    a, b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    # Two limiters = two worker processes sharing one bucket of 120 requests/minute (2/s),
    # which holds at most 2 s of burst (4 requests).
    la = RedisRateLimiter(a, name="judge", rpm=120, tpm=0, burst_s=2.0)
    lb = RedisRateLimiter(b, name="judge", rpm=120, tpm=0, burst_s=2.0)
    started = time.monotonic()
    for i in range(10):
        await (la if i % 2 else lb).acquire(100)
    # 4 from the burst, 6 more at 2/s: ~3 s. A full-minute bucket would have let all 10 through.
    assert time.monotonic() - started >= 2.5
    # A 429's Retry-After seen by one process holds the other one too. (Timed from before the
    # pause: a stall after it would otherwise shorten the wait measured.)
    held = time.monotonic()
    await la.pause(1.0)
    await lb.acquire(100)
    assert time.monotonic() - held >= 0.8
    await a.aclose()
    await b.aclose()


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        (b"<html>gateway</html>", "not JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"id": "x"}', "no 'choices'"),
        (b'{"choices": {"0": 1}}', "'choices' is not a list"),
        (b'{"choices": [{"finish_reason": "stop"}]}', "no 'message' object"),
        (b'{"choices": [{"message": {"content": 7}}]}', "content is a int"),
    ],
)
@respx.mock(base_url=JUDGE_URL)
async def test_a_200_that_is_not_a_completion_is_an_output_error_naming_why(
    respx_mock: respx.MockRouter, body: bytes, cause: str
) -> None:
    respx_mock.post("/chat/completions").mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(JudgeOutputError) as caught:
        await client(max_retries=0).complete(MESSAGES, Verdict)
    assert "not a chat completion" in str(caught.value)
    assert cause in str(caught.value)
    assert caught.value.raw_output == body.decode()
    assert respx_mock.calls.call_count == 1  # a broken body is not retried as if transient


@respx.mock(base_url=JUDGE_URL)
async def test_request_body_and_usage_round_trip(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(
            200, json=chat_completion(json.dumps({"score": 4}), prompt_tokens=11)
        )
    )
    reply = await client(max_output_tokens=99).complete(MESSAGES, Verdict)
    sent = json.loads(route.calls.last.request.content)
    # The budget is estimated from the one-integer schema (judges.llm.budget), under the cap.
    assert sent["model"] == "m" and sent["messages"] == MESSAGES and sent["max_tokens"] == 64
    assert sent["response_format"]["json_schema"]["schema"] == Verdict.model_json_schema()
    assert route.calls.last.request.headers["authorization"] == "Bearer not-needed"
    assert reply.parsed.score == 4 and reply.usage.calls == 1 and reply.usage.input_tokens == 11


@respx.mock(base_url=JUDGE_URL)
async def test_unreadable_usage_keeps_the_verdict_and_counts_no_tokens(
    respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    body = chat_completion(json.dumps({"score": 2}))
    body["usage"] = {"prompt_tokens": -1, "completion_tokens": 7.0}
    respx_mock.post("/chat/completions").mock(return_value=httpx.Response(200, json=body))
    judge = client()
    reply = await judge.complete(MESSAGES, Verdict)
    assert reply.parsed.score == 2
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (0, 7)
    assert "usage.prompt_tokens is -1" in caplog.text
    caplog.clear()
    await judge.complete(MESSAGES, Verdict)
    assert "usage" not in caplog.text  # said once per client


@respx.mock(base_url=JUDGE_URL)
async def test_system_role_user_sends_the_instructions_in_the_first_user_message(
    respx_mock: respx.MockRouter,
) -> None:
    # Gemma's chat template has no system turn: llama-cpp-python's `gemma` format drops a
    # system message, and with it the rubric's instructions (issue 29).
    route = respx_mock.post("/chat/completions").mock(return_value=ok())
    messages = [
        {"role": "system", "content": "You grade answers 1-5."},
        {"role": "user", "content": "grade this"},
    ]
    for role in ("system", "user"):
        judge = client(system_role=role, response_format="json_object", cache=None)
        await judge.complete(messages, Verdict)
        await judge.aclose()
    kept, folded = (json.loads(call.request.content)["messages"] for call in route.calls)
    assert [m["role"] for m in kept] == ["system", "user"]
    assert [m["role"] for m in folded] == ["user"]
    assert folded[0]["content"].startswith("You grade answers 1-5.\n\ngrade this")
    assert "JSON schema" in folded[0]["content"]  # the schema note still ends the prompt


@respx.mock(base_url=JUDGE_URL)
async def test_a_retry_that_would_start_past_the_jobs_deadline_is_not_waited_for(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(429, headers={"retry-after": "20"}, json={"error": {}})
    )
    judge = client(max_retries=5, max_wait_s=30)
    started = time.monotonic()
    # The server asks for 20 s, the job has 10 s left for calls: not slept, handed back.
    with (
        slots_until(started + 10),
        pytest.raises(JudgeTransientError, match=r"HTTP 429.*gave up after 1 attempt"),
    ):
        await judge.complete(MESSAGES, Verdict)
    assert route.call_count == 1
    assert time.monotonic() - started < 10
    await judge.aclose()


@respx.mock(base_url=JUDGE_URL)
async def test_a_sample_gets_the_generators_budget_unless_the_app_named_one(
    respx_mock: respx.MockRouter,
) -> None:
    from judges.llm.generator import Generator

    route = respx_mock.post("/chat/completions").mock(
        return_value=httpx.Response(200, json=chat_completion("an answer"))
    )
    generator = Generator(base_url=JUDGE_URL, max_output_tokens=256)
    await generator.sample(MESSAGES, "m", 1)
    await generator.sample(MESSAGES, "m", 1, max_tokens=77)  # the trace's own budget
    await generator.aclose()
    sent = [json.loads(call.request.content).get("max_tokens") for call in route.calls]
    assert sent == [256, 77]
