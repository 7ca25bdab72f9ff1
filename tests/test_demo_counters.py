"""`evaluator stats` after `evaluator demo`, as a user runs them (real processes, real Redis):
it reads the demo's own counters — on the Redis the demo used, or, when the demo started an
embedded Valkey that stopped with it, the copy the demo saved — and two demos running at
once on one Redis keep their counters apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_TRACES = 50  # evaluator/data: ragtruth_sample.jsonl + agent_sample.jsonl


def _env(redis_url: str, db: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EVALUATOR_REDIS__URL": redis_url,
            "EVALUATOR_DATABASE__URL": f"sqlite:///{db}", "EVALUATOR_JUDGE__BASE_URL": ""}  # fmt: skip


def _demo(redis_url: str, db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "evaluator.cli", "demo"], env=_env(redis_url, db), cwd=db.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _stats(redis_url: str, db: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "evaluator.cli", "stats", "--json"], env=_env(redis_url, db),
        cwd=db.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return out


def test_concurrent_demos_keep_their_counters_and_stats_reads_each(
    tmp_path: Path, redis_url: str
) -> None:
    dbs = [tmp_path / "a" / "demo.db", tmp_path / "b" / "demo.db"]
    for db in dbs:
        db.parent.mkdir()
    procs = [_demo(redis_url, db) for db in dbs]
    for proc in procs:
        _finish(proc)
    seen = [_stats(redis_url, db) for db in dbs]
    assert seen[0]["key_prefix"] != seen[1]["key_prefix"]
    for doc in seen:
        assert doc["key_prefix"].startswith("evaluator-demo-")
        assert "recorded by `evaluator demo`" in doc["key_prefix_source"]
        # each run's counters whole: neither demo deleted or added to the other's
        assert doc["intake"]["received"] == SAMPLE_TRACES, doc
        assert doc["intake"]["rate"] + doc["intake"]["not_sampled"] <= SAMPLE_TRACES


def test_stats_after_a_demo_on_an_embedded_redis_reads_its_saved_counters(
    tmp_path: Path,
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing answers: the demo embeds Valkey
    db = tmp_path / "demo.db"
    out = _finish(_demo(nowhere, db))
    assert "starting an embedded Valkey" in out
    doc = _stats(nowhere, db)  # the embedded Valkey is gone; nothing listens there either
    assert doc["intake"]["received"] == SAMPLE_TRACES, doc
    assert "counters as the demo saved them" in doc["key_prefix_source"]
    assert sum(doc["records"].values()) > 0
