"""What the real-model scenarios share: judge settings, sample traces, reading results."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from evaluator.cli.demo import AGENT_TRACES, SAMPLE_TRACES
from evaluator.store.store import Store
from tests.real_model.server import MODEL_ALIAS, RealServer

# Judge settings of the real-model scenarios: the real server, replies capped at 384 tokens
# (a CPU server writes ~15-25 tokens/s; the client sizes each rubric's budget under this
# cap), no reply cache (each scenario's verdicts are the server's, never a previous run's).
# Everything else keeps the shipped defaults: the client must find out by itself that the
# server refuses json_schema (it falls back) and that it has one slot (adaptive limit).
# Except the system role: the server's gemma chat format drops system messages, so the
# judge's instructions go at the front of the first user message (judge.system_role).
MAX_OUTPUT_TOKENS = 384
SYSTEM_ROLE = "user"


def judge_section(server: RealServer, **overrides: Any) -> dict[str, Any]:
    return {
        "base_url": server.base_url,
        "model": MODEL_ALIAS,
        "cache_ttl_s": 0,
        "max_output_tokens": MAX_OUTPUT_TOKENS,
        "system_role": SYSTEM_ROLE,
        **overrides,
    }


def sample_traces(path: Path, *trace_ids: str) -> Path:
    """The demo's own sample traces (evaluator/data) with these IDs, in this order."""
    wanted: dict[str, str] = {}
    for source in (SAMPLE_TRACES, AGENT_TRACES):
        for line in source.read_text("utf-8").splitlines():
            trace_id = json.loads(line)["trace_id"]
            if trace_id in trace_ids:
                wanted[trace_id] = line
    missing_ids = [t for t in trace_ids if t not in wanted]
    assert not missing_ids, f"no sample trace {missing_ids}"
    path.write_text("".join(wanted[t] + "\n" for t in trace_ids))
    return path


def short_trace(trace_id: str, *, max_tokens: int | None = None) -> dict[str, Any]:
    """A RAG trace with one short document: a prompt of ~200 tokens instead of the sample
    traces' ~1,200, so a CPU server prefills it in ~2 s. `max_tokens`: the app's reply
    budget (gen_ai.request.max_tokens), replayed to a generator."""
    doc = ("The Team plan costs $1,200 per year for up to 5 seats. Extra seats cost $15 per "
           "month each. Annual plans can be cancelled within 30 days for a full refund.")  # fmt: skip
    question = "How much does the Team plan cost, and can I get a refund?"
    answer = ("The Team plan costs $1,200 per year for 5 seats, and you can cancel within 30 "
              "days for a full refund.")  # fmt: skip
    chat: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.input.messages": [{"role": "user", "content": question}],
        "gen_ai.output.messages": [{"role": "assistant", "content": answer}],
    }  # fmt: skip
    if max_tokens is not None:
        chat["gen_ai.request.max_tokens"] = max_tokens
    return {"trace_id": trace_id, "spans": [
        {"span_id": "r", "name": "retrieve", "attributes": {
            "gen_ai.operation.name": "retrieval",
            "gen_ai.retrieval.documents": [{"id": "pricing", "content": doc}]}},
        {"span_id": "c", "name": "chat", "attributes": chat},
    ]}  # fmt: skip


def write_traces(path: Path, traces: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in traces))
    return path


def records_of(db: Path) -> list[Any]:
    store = Store(f"sqlite:///{db}")
    try:
        return list(store.records(limit=100_000))
    finally:
        store.close()


def intents_by_status(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT status, count(*) FROM eval_intents GROUP BY status")
        return {str(status): int(n) for status, n in rows}
