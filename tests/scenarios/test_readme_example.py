"""The README's own example, as a new user runs it: the trace that invented a price.

Document "Enterprise: $50,000 per year.", answer "It costs $5,000 per year." The trace is
ingested from the README's JSON block, enqueued by ID (its negative feedback lives in the
stored trace), run through a burst worker with no judge configured, and read back with
`evaluator scores --json`: faithfulness must fail, naming the unsupported amount.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from evaluator.config.settings import SHIPPED_RUBRICS_DIR
from tests.conftest import make_settings
from tests.scenarios.cli import run
from tests.scenarios.readme import example_trace


def test_the_readme_example_fails_faithfulness(tmp_path: Path, redis_url: str) -> None:
    shutil.copytree(SHIPPED_RUBRICS_DIR, tmp_path / "rubrics")
    make_settings(tmp_path, redis_url)
    settings = tmp_path / "settings.toml"
    trace = example_trace()
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps(trace) + "\n")

    run("ingest", str(traces), settings=settings)
    run("enqueue", trace["trace_id"], settings=settings)
    run("worker", "--burst", settings=settings, timeout=180)
    out = run("scores", "--trace", trace["trace_id"], "--json", settings=settings).stdout

    records = json.loads(out)
    records = records["records"] if isinstance(records, dict) else records
    faith = [r for r in records if r["rubric"] == "faithfulness"]
    assert len(faith) == 1, records
    record = faith[0]
    assert record["status"] == "ok", record
    assert record["passed"] is False, record
    assert "5000" in json.dumps(record["details"]), record["details"]
