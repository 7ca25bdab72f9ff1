"""More injected faults: the database going away mid-job, a corpus of malformed input
through ingest, enqueue and the worker, and a short soak against a misbehaving judge."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from arq import Retry
from sqlmodel import create_engine

from evaluator.intake.enqueue import TraceEnqueuer
from evaluator.sources.ingest import ingest_jsonl, ingest_traces
from evaluator.store import outbox
from evaluator.store.store import Store
from evaluator.worker.app import evaluate_trace_job, run_burst
from evaluator.worker.runtime import build_runtime

from .conftest import (
    JUDGE_URL,
    TONE_RUBRIC,
    chat_completion,
    make_settings,
    rag_trace,
    write_rubric,
)

JUDGE = {"base_url": JUDGE_URL, "model": "gpt-4o-mini", "max_retries": 0, "timeout_s": 2.0}


def ok_reply() -> httpx.Response:
    return httpx.Response(200, json=chat_completion(json.dumps({"reasoning": "fine", "score": 4})))


@respx.mock(base_url=JUDGE_URL)
async def test_database_outage_mid_job_is_retried_and_ends_with_one_row(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    respx_mock.post("/chat/completions").mock(return_value=ok_reply())
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(tmp_path, redis_url, judge=JUDGE)
    store = Store(settings.database.url)
    ingest_traces(store, [rag_trace("t")])
    outbox.record_intents(store.engine, [outbox.Intent("t", "rate", {})])
    runtime = build_runtime(settings)
    healthy = runtime.store.engine
    # The database goes away: nothing listens on port 1.
    runtime.store.engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")
    with pytest.raises(Retry):
        await evaluate_trace_job({"runtime": runtime, "job_try": 1}, "t", {}, "rate")
    runtime.store.engine = healthy  # ... and comes back
    result = await evaluate_trace_job({"runtime": runtime, "job_try": 2}, "t", {}, "rate")
    assert result["written"] == 1
    await evaluate_trace_job({"runtime": runtime, "job_try": 3}, "t", {}, "rate")
    assert len(store.records(trace_id="t")) == 1
    assert {i.id: i.status for i in outbox.list_intents(store.engine)} == {"rate:t": "done"}
    await runtime.aclose()
    store.close()


def malformed_corpus(valid: str) -> list[bytes]:
    """≥ 200 broken trace lines: truncations, wrong types, bad encodings, nesting, size."""
    rng = random.Random(7)
    lines: list[bytes] = [
        valid[:cut].encode() for cut in sorted(rng.sample(range(1, len(valid) - 1), 120))
    ]
    doc = json.loads(valid)
    wrong_types: list[Any] = [
        {**doc, "trace_id": 5},
        {**doc, "trace_id": None},
        {**doc, "trace_id": ""},
        {**doc, "spans": {}},
        {**doc, "spans": "x"},
        {**doc, "spans": [1, 2]},
        {**doc, "spans": []},
        {**doc, "attributes": []},
        [doc],
        "trace",
        42,
        None,
        True,
        {**doc, "spans": [{**doc["spans"][0], "span_id": ["a"]}]},
        {**doc, "spans": [{**doc["spans"][0], "status": 3}]},
        {**doc, "spans": [{**doc["spans"][0], "end_time": "not a time"}]},
        {**doc, "spans": [{**doc["spans"][0], "attributes": "x"}]},
        {**doc, "trace_id": "x" * 300},
        {**doc, "spans": [doc["spans"][0], doc["spans"][0]]},
        {"trace_id": "only-id"},
    ]
    lines += [json.dumps(w).encode() for w in wrong_types for _ in range(2)]
    lines += [b"\xff\xfe\xfd" + bytes([i]) for i in range(20)]
    lines += [b"[" * 50_000 + b"]" * 50_000, b"{" * 10_000]
    lines += [b"not json at all", b"{}", b"[]", b'{"trace_id": "t"', b"\x00\x01"] * 4
    return lines


def test_malformed_corpus_through_ingest_enqueue_and_worker(tmp_path: Path, redis_url: str) -> None:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(tmp_path, redis_url)  # no judge: skipped records, still records
    valid = json.dumps(rag_trace("good-0"))
    corpus = malformed_corpus(valid)
    assert len(corpus) >= 200
    # Traces that parse but are odd: empty answer, unknown span kinds, a 1 MB context,
    # no answer span at all.
    odd = [
        rag_trace("empty-answer", answer=""),
        {
            **rag_trace("unknown-kinds"),
            "spans": [
                *rag_trace("unknown-kinds")["spans"],
                {"span_id": "x1", "attributes": {"gen_ai.operation.name": "teleport"}},
            ],
        },
        rag_trace("huge-context", documents=["fact " * 200_000]),
        {**rag_trace("no-chat"), "spans": rag_trace("no-chat")["spans"][:1]},
    ]
    good = [rag_trace(f"good-{i}") for i in range(5)]
    path = tmp_path / "corpus.jsonl"
    with path.open("wb") as fh:
        for line in corpus:
            fh.write(line.replace(b"\n", b" ") + b"\n")
        for doc in [*good, *odd]:
            fh.write(json.dumps(doc).encode() + b"\n")
    store = Store(settings.database.url)
    report = ingest_jsonl(store, path)
    assert report.ingested == len(good) + len(odd)
    assert report.failed == len(corpus)
    assert all(reason for _, reason in report.errors)

    async def enqueue_and_run() -> dict[str, Any]:
        enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
        bad_ids: list[Any] = ["", " x", "a\nb", "z" * 1000, None, 7, "\x00"]
        rejected = sum(not enq.enqueue(b) for b in bad_ids)
        assert rejected == len(bad_ids) and enq.stats.rejected == len(bad_ids)
        for doc in [*good, *odd]:
            enq.enqueue(doc["trace_id"])
        enq.enqueue("never-ingested")
        await enq.aclose()
        return await run_burst(settings)

    import asyncio

    result = asyncio.run(enqueue_and_run())
    assert result["jobs_failed"] == 0
    rows = {r.trace_id: r for r in store.records(limit=1000)}
    assert set(rows) == {d["trace_id"] for d in [*good, *odd]} | {"never-ingested"}
    assert rows["empty-answer"].status == "error" and "empty" in rows["empty-answer"].explanation
    assert rows["no-chat"].status == "error"
    assert rows["never-ingested"].status == "error"
    assert rows["huge-context"].status == "skipped"  # judged rubric, no judge configured
    assert rows["unknown-kinds"].status == "skipped"
    store.close()


SOAK = int(os.environ.get("SOAK_TRACES", "1000"))


@respx.mock(base_url=JUDGE_URL)
async def test_soak_against_a_failing_malformed_and_hanging_judge(
    respx_mock: respx.MockRouter, tmp_path: Path, redis_url: str
) -> None:
    """SOAK_TRACES=10000 for the full soak (bench-sized); CI runs 1,000."""
    rng = random.Random(11)
    counts = {"ok": 0, "500": 0, "malformed": 0, "hang": 0}

    def judge(request: httpx.Request) -> httpx.Response:
        roll = rng.random()
        if roll < 0.10:
            counts["500"] += 1
            return httpx.Response(500, json={"error": {"message": "boom"}})
        if roll < 0.15:
            counts["malformed"] += 1
            return httpx.Response(200, json=chat_completion("{'score': four"))
        if roll < 0.16:
            counts["hang"] += 1
            raise httpx.ReadTimeout("judge hung")
        counts["ok"] += 1
        return httpx.Response(
            200, json=chat_completion(json.dumps({"reasoning": "r", "score": rng.randint(1, 5)}))
        )

    respx_mock.post("/chat/completions").mock(side_effect=judge)
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(
        tmp_path, redis_url, judge={**JUDGE, "cache_ttl_s": 0}, worker={"max_jobs": 64}
    )
    docs = [rag_trace(f"soak-{i:05d}", answer=f"Answer {i}.") for i in range(SOAK)]
    store = Store(settings.database.url)
    ingest_traces(store, docs)
    enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix, buffer_max=SOAK)
    for doc in docs:
        enq.enqueue(doc["trace_id"])
    await enq.aclose()
    result = await run_burst(settings)
    rows = store.records(limit=SOAK * 2)
    statuses = {s: sum(r.status == s for r in rows) for s in ("ok", "error", "skipped")}
    print(
        f"soak {SOAK}: judge replies {counts}; records {statuses}; jobs {result['jobs_complete']}"
    )
    assert len(rows) == SOAK and len({r.trace_id for r in rows}) == SOAK  # none lost, none twice
    assert statuses["ok"] + statuses["error"] == SOAK
    assert statuses["error"] > 0 and statuses["ok"] > 0.8 * SOAK
    assert all(r.score is None for r in rows if r.status == "error")
    assert all(r.explanation for r in rows if r.status == "error")
    intents = outbox.list_intents(store.engine, limit=SOAK * 2)
    assert len(intents) == SOAK and {i.status for i in intents} == {"done"}
    store.close()
