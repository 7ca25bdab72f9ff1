"""Smoke-size runs of the benchmark harness: it still works (no timing assertions).

Real Redis (the test db, flushed); the bench judge server on a free loopback port.
"""

from __future__ import annotations

import json

import httpx
import pytest

from bench import intake as intake_bench
from bench.judge_server import JudgeServer, ServerConfig
from bench.schema_instance import instance, schema_in_text
from judges.llm.client import JudgeClient
from judges.scorers.faithfulness_prompts import FaithfulnessReply, verification_schema
from judges.scorers.relevance import AnswerRelevanceReply, documents_schema


async def test_intake_bench_runs_every_step(redis_url: str) -> None:
    results = await intake_bench.run(redis_url, reps=1, scale=0.005)

    assert results["intake.ids_per_s"].median > 0
    assert results["arq.jobs_per_s"].median > 0
    assert results["redis.pop_per_s"].median > 0
    assert 0.05 < results["intake.sampled_share"].median < 0.15  # 10 % of 1,000 hashed IDs
    text = intake_bench.render(results, 1, intake_bench.Sizes().scaled(0.005))
    assert "intake ÷ arq no-op job rate" in text


@pytest.mark.parametrize(
    "schema",
    [FaithfulnessReply, verification_schema(3), AnswerRelevanceReply, documents_schema(4)],
)
async def test_judge_server_replies_validate_against_our_schemas(schema: type) -> None:
    server = JudgeServer(ServerConfig())
    url = await server.start()
    client = JudgeClient(base_url=url, model="bench", max_retries=0)
    try:
        reply = await client.complete([{"role": "user", "content": "q " * 100}], schema)
    finally:
        await client.aclose()
        await server.close()
    assert reply.usage.calls == 1 and reply.usage.input_tokens > 0
    assert server.stats.chat_calls == 1


async def test_judge_server_faults_limits_embeddings_and_stats() -> None:
    server = JudgeServer(ServerConfig(rpm=2))
    url = await server.start()
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "n": 3}
    async with httpx.AsyncClient(base_url=url) as http:
        first = (await http.post("/chat/completions", json=body)).json()
        await http.post("/chat/completions", json=body)
        limited = await http.post("/chat/completions", json=body)
        emb = (await http.post("/embeddings", json={"model": "e", "input": ["a", "b"]})).json()
        stats = (await http.get("/stats")).json()
    await server.close()

    assert len(first["choices"]) == 3 and first["usage"]["completion_tokens"] > 0
    assert limited.status_code == 429 and float(limited.headers["retry-after"]) > 0
    assert len(emb["data"]) == 2 and len(emb["data"][0]["embedding"]) == 384
    assert stats["chat_calls"] == 2 and stats["rate_limited"] == 1
    assert stats["embedding_calls"] == 1


async def test_judge_server_injects_500s_and_malformed_replies() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    errors = JudgeServer(ServerConfig(error_rate=1.0))
    broken = JudgeServer(ServerConfig(malformed_rate=1.0))
    urls = [await errors.start(), await broken.start()]
    async with httpx.AsyncClient() as http:
        failed = await http.post(f"{urls[0]}/chat/completions", json=body)
        garbled = (await http.post(f"{urls[1]}/chat/completions", json=body)).json()
    await errors.close()
    await broken.close()

    assert failed.status_code == 500
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbled["choices"][0]["message"]["content"])


def test_schema_instance_respects_enums_bounds_and_min_items() -> None:
    schema = {
        "type": "object",
        "properties": {
            "verdict": {"enum": ["yes", "no"]},
            "score": {"type": "integer", "minimum": 3, "maximum": 5},
            "items": {"type": "array", "minItems": 2, "items": {"type": "boolean"}},
            "name": {"type": "string", "minLength": 80},
        },
    }
    value = instance(schema)
    assert value["verdict"] == "yes" and value["score"] == 3
    assert value["items"] == [False, False] and len(value["name"]) >= 80
    assert schema_in_text("Reply per this schema: " + json.dumps(schema) + " thanks") == schema


def test_peer_loopback_guard_tells_loopback_from_the_rest() -> None:
    # The peers' "no traffic left loopback" rests on this test (bench/peer_guard).
    from bench.peer_guard.loopback_guard import is_loopback

    for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost", b"127.0.0.1", None, ""):
        assert is_loopback(host), host
    for host in ("8.8.8.8", "10.0.0.1", "192.168.1.1", "::ffff:8.8.8.8", "us.i.posthog.com"):
        assert not is_loopback(host), host


def test_peer_guard_installs_at_interpreter_start_and_refuses_before_any_lookup() -> None:
    import subprocess
    import sys
    from pathlib import Path

    guard_dir = Path(__file__).resolve().parent.parent / "bench" / "peer_guard"
    # A numeric TEST-NET address: even an unguarded getaddrinfo resolves it without traffic.
    probe = (
        "import socket, loopback_guard\n"
        "assert loopback_guard.INSTALLED\n"
        "try:\n    socket.getaddrinfo('192.0.2.1', 443)\n"
        "except PermissionError:\n    pass\n"
        "print(len(loopback_guard.ATTEMPTS), loopback_guard.ATTEMPTS[0]['kind'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(guard_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.split() == ["1", "getaddrinfo"]


def test_epoch_swap_bench_separates_a_judge_swap_from_a_real_drop() -> None:
    """One seed of bench/epoch_swap.py, coarse: the swap pages only when epochs are pooled;
    the real drop after it pages with epochs."""
    import argparse

    from bench.epoch_swap import one_seed

    args = argparse.Namespace(
        rate_per_hour=40.0, accuracy=0.85, scale_shift=0.2, good=0.85, bad=0.4,
        before_days=7.5, drop_after_h=24.0, tail_h=12.0, check_every_min=180,
    )  # fmt: skip
    out = one_seed(args, seed=1)
    assert out["epochs"]["false_alerts"] == 0 and out["epochs"]["drop_caught"]
    assert out["pooled"]["false_alerts"] >= 1  # without epochs the swap reads as a drop
