"""The demo story of the README and Getting started, on a real model server.

`EVALUATOR_JUDGE__BASE_URL=... EVALUATOR_JUDGE__MODEL=... evaluator demo`, as the getting
started page says, in a real process: the burst worker consumes what the demo enqueued and
every sampled trace ends recorded, each record `ok` with the server's real token counts or
an `error` with its cause and kind (tests/real_model/honesty.py), and the run ends. The
judge is a base model (noise), so nothing here checks what the verdicts say.

Two of the demo's 50 traces keep the run to a few real calls (a CPU server takes 10-40 s
per call on these ~1,200-token prompts): their sampling points put the RAG answer in
faithfulness (the cascade judges everything at cold start) and answer relevance, and the
agent run in answer relevance and the local tool_use. The whole demo (27 sampled traces,
~190 requests, ~27 min here) is `python -m bench.real_demo`, too long for CI (BENCHMARKS.md
§22).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.real_model.honesty import check_records
from tests.real_model.scenario import (
    MAX_OUTPUT_TOKENS,
    SYSTEM_ROLE,
    intents_by_status,
    records_of,
    sample_traces,
)
from tests.real_model.server import MODEL_ALIAS, RealServer
from tests.scenarios.cli import run

TRACES = ("ragtruth-14390-3", "agent-00")
MAX_CALLS = 20


@pytest.mark.timeout(600)
def test_the_demo_with_a_real_judge_records_every_sampled_trace(
    real_server: RealServer, redis_url: str, tmp_path: Path
) -> None:
    traces = sample_traces(tmp_path / "traces.jsonl", *TRACES)
    db = tmp_path / "demo.db"
    before = real_server.completions()
    proc = run(
        "demo", "--traces", str(traces), "--db", str(db),
        env={
            "EVALUATOR_JUDGE__BASE_URL": real_server.base_url,
            "EVALUATOR_JUDGE__MODEL": MODEL_ALIAS,
            "EVALUATOR_JUDGE__MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
            "EVALUATOR_JUDGE__SYSTEM_ROLE": SYSTEM_ROLE,
            "EVALUATOR_REDIS__URL": redis_url,
        },
        cwd=tmp_path, timeout=540, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    calls = real_server.completions() - before
    assert proc.returncode == 0, out[-4000:]
    assert f"Judge: {real_server.base_url}" in out, out[-4000:]
    intake = re.search(r"Intake: (\d+) IDs, (\d+) sampled .*evaluated (\d+) traces", out)
    assert intake, out[-4000:]
    popped, sampled, evaluated = (int(g) for g in intake.groups())
    assert popped == len(TRACES) and sampled == evaluated > 0, out[-4000:]

    records = records_of(db)
    outcomes = check_records(records)  # the invariant, on every record
    assert len({r.trace_id for r in records}) == sampled, (outcomes, out[-3000:])
    assert intents_by_status(db) == {"done": sampled}, out[-3000:]  # none pending, none dead
    # The judge was really asked, within the scenario's bound; no record claims more calls
    # with usage than the server answered.
    assert 0 < calls <= MAX_CALLS, (calls, outcomes)
    assert sum(r.judge_calls for r in records) <= calls, outcomes
    print(f"demo on the real server: {calls} calls, outcomes {dict(outcomes)}")
