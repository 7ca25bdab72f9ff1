"""What the real-model scenarios share: judge settings, sample traces, reading results."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from evaluator.cli.demo import AGENT_TRACES, SAMPLE_TRACES
from evaluator.store.store import Store
from tests.real_model.server import MODEL_ALIAS, RealServer

# Judge settings of every real-model scenario: the real server, replies capped at 384
# tokens (a CPU server writes ~10-40 tokens/s), no reply cache (each scenario's verdicts are
# the server's, never a previous run's). Everything else keeps the shipped defaults, the
# ones a user starts with: the client must cope with a one-slot server by itself.
MAX_OUTPUT_TOKENS = 384


def judge_section(server: RealServer, **overrides: Any) -> dict[str, Any]:
    return {
        "base_url": server.base_url,
        "model": MODEL_ALIAS,
        "cache_ttl_s": 0,
        "max_output_tokens": MAX_OUTPUT_TOKENS,
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
