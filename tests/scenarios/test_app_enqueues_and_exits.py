"""An app that enqueues with the sync API and exits at once: nothing it enqueued is lost.

A real child process imports `evaluator`, enqueues 300 trace IDs (two prompt versions,
stored beforehand with `evaluator ingest`) with `enqueue_trace_sync`, and returns from its
main without calling flush: the interpreter's exit must push what is buffered. A burst
worker then drains the intake: all 300 arrive, and the sampled ones are scored.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from evaluator.config.settings import SHIPPED_RUBRICS_DIR
from tests.conftest import make_settings
from tests.scenarios.cli import run

APP = """
from evaluator import enqueue_trace_sync
for i in range(300):
    enqueue_trace_sync(f"app-{i:03d}", latency_ms=120.0)
print("enqueued", flush=True)
"""


def _trace(i: int) -> dict[str, object]:
    version = "v1" if i < 150 else "v2"
    doc = f"Plan {i} costs ${1000 + i} per year."
    return {"trace_id": f"app-{i:03d}", "attributes": {"prompt.version": version}, "spans": [
        {"span_id": "r", "name": "retrieve", "attributes": {"gen_ai.operation.name": "retrieval",
            "gen_ai.retrieval.documents": [{"id": "d", "content": doc}]}},
        {"span_id": "c", "name": "chat", "attributes": {"gen_ai.operation.name": "chat",
            "gen_ai.output.messages": [{"role": "assistant", "content": doc}]}}]}  # fmt: skip


def test_an_app_that_enqueues_and_exits_loses_nothing(tmp_path: Path, redis_url: str) -> None:
    rubrics = tmp_path / "rubrics"
    rubrics.mkdir()
    shutil.copy(SHIPPED_RUBRICS_DIR / "faithfulness.toml", rubrics)
    make_settings(tmp_path, redis_url)
    settings = tmp_path / "settings.toml"
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(_trace(i)) + "\n" for i in range(300)))
    run("ingest", str(traces), settings=settings)

    app = subprocess.run(
        [sys.executable, "-c", APP], env={**os.environ, "EVALUATOR_SETTINGS": str(settings)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert app.returncode == 0 and "enqueued" in app.stdout, app.stderr

    run("worker", "--burst", settings=settings, timeout=300)
    stats = json.loads(run("stats", "--json", settings=settings).stdout)
    assert stats["intake"]["received"] == 300, stats
    out = json.loads(run("scores", "--all", "--json", settings=settings).stdout)
    records = out["records"] if isinstance(out, dict) else out
    sampled = stats["intake"]["received"] - stats["intake"].get("not_sampled", 0)
    assert len({r["trace_id"] for r in records}) == sampled > 0
    assert {r["prompt_version"] for r in records} == {"v1", "v2"}
