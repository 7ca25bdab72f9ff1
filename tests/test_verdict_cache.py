"""An honest judge-reply cache: keyed by everything that can change a verdict (endpoint,
model, prompt, schema, rubric), marked on the Score/record and counted in /metrics.
Real Redis; the judge HTTP API is mocked with respx."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import respx
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from evaluator.outputs.metrics import MetricsRecorder, render_metrics
from evaluator.sampling import Reason
from evaluator.store.store import Store
from evaluator.worker.judge_limits import RedisReplyCache
from evaluator.worker.pipeline import to_record
from judges.llm.client import JudgeClient
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.types import Clients, EvalCase, Score

from .conftest import chat_completion

A, B = "http://judge-a.test/v1", "http://judge-b.test/v1"
RUBRIC = Rubric.model_validate(
    {"name": "tone", "version": "1", "scorer": "llm_rubric",
     "llm_rubric": {"criteria": "Is the answer polite?"}}
)  # fmt: skip
CASE = EvalCase(trace_id="t1", span_id="s1", question="Hi?", answer="Hello there.")


def verdict(score: int, model: str = "judge-model") -> httpx.Response:
    body = chat_completion(json.dumps({"reasoning": "r", "score": score}))
    return httpx.Response(200, json={**body, "model": model})


async def _score(judge: JudgeClient, rubric: Rubric = RUBRIC) -> Score:
    return await run_scorer(CASE, rubric, Clients(judge=judge))


@respx.mock
async def test_two_endpoints_with_the_same_model_do_not_share_verdicts(redis_url: str) -> None:
    a = respx.post(f"{A}/chat/completions").mock(return_value=verdict(5, "model-on-a"))
    b = respx.post(f"{B}/chat/completions").mock(return_value=verdict(1, "model-on-b"))
    redis = Redis.from_url(redis_url)
    cache = RedisReplyCache(redis, prefix="honest", ttl_s=60)  # one cache, shared by both
    on_a = JudgeClient(base_url=A, model="same", cache=cache)
    on_b = JudgeClient(base_url=B, model="same", cache=cache)

    first_a, first_b = await _score(on_a), await _score(on_b)
    again_a, again_b = await _score(on_a), await _score(on_b)

    assert (a.call_count, b.call_count) == (1, 1)  # B was asked, not served A's verdict
    assert (first_a.value, first_b.value) == (1.0, 0.0)
    assert (again_a.value, again_b.value) == (1.0, 0.0)
    assert first_a.identity is not None and first_b.identity is not None
    assert first_a.identity.epoch() != first_b.identity.epoch()
    assert first_a.identity.model == first_b.identity.model == "same"
    assert (again_a.judge_model_reported, again_b.judge_model_reported) == (
        "model-on-a",
        "model-on-b",
    )
    # A new rubric version is a new verdict too, even with the very same prompt.
    await _score(on_a, RUBRIC.model_copy(update={"version": "2"}))
    assert a.call_count == 2
    for c in (on_a, on_b):
        await c.aclose()
    await redis.aclose()


@respx.mock
async def test_a_cached_verdict_is_marked_on_the_record_and_counted(
    redis_url: str, tmp_path: Path
) -> None:
    respx.post(f"{A}/chat/completions").mock(return_value=verdict(4))
    redis = Redis.from_url(redis_url)
    judge = JudgeClient(base_url=A, model="m", cache=RedisReplyCache(redis, prefix="m", ttl_s=60))
    live, cached = await _score(judge), await _score(judge)

    assert live.details["judge_cache"] == "miss" and live.usage.calls == 1
    assert cached.details["judge_cache"] == "hit" and cached.usage.calls == 0
    assert (cached.details["judge_cache_hits"], cached.details["judge_cache_misses"]) == (1, 0)
    assert cached.value == live.value

    records = [
        to_record("t1", "s1", RUBRIC, s, {}, reason=Reason.RATE, latency_ms=1.0)
        for s in (live, cached)
    ]
    assert [r.details["judge_cache"] for r in records] == ["miss", "hit"]
    recorder = MetricsRecorder(redis, key_prefix="cachetest")
    await recorder.observe(records)
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    sync = SyncRedis.from_url(redis_url)
    text = render_metrics(sync, store, key_prefix="cachetest", queue_name="q").decode()
    samples = {
        s.labels["result"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "evaluator_judge_cache"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert samples == {"hit": 1.0, "miss": 1.0}
    sync.close()
    store.close()
    await judge.aclose()
    await redis.aclose()


@respx.mock
async def test_without_a_cache_every_verdict_is_a_miss(redis_url: str) -> None:
    route = respx.post(f"{A}/chat/completions").mock(return_value=verdict(3))
    judge = JudgeClient(base_url=A, model="m")
    scores = [await _score(judge) for _ in range(2)]
    assert route.call_count == 2
    assert [s.details["judge_cache"] for s in scores] == ["miss", "miss"]
    await judge.aclose()
