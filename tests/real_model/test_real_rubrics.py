"""One rubric of each judged kind against the real model server, in real processes.

`evaluator ingest`, `evaluator enqueue`, then `evaluator worker --burst`: faithfulness by the
judge and by the combined method (faithfulness and answer relevance from one shared call),
answer relevance, an llm_rubric written in TOML, and tool_selection on an agent run. Every
record must satisfy the invariant (tests/real_model/honesty.py) and the worker must end
with nothing pending. The base model's verdicts are noise: their values are not checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings, write_rubric
from tests.real_model.honesty import check_records
from tests.real_model.scenario import intents_by_status, judge_section, records_of, sample_traces
from tests.real_model.server import RealServer
from tests.scenarios.cli import run

RUBRICS = {
    "faith_judge": 'scorer = "faithfulness"\nmethod = "judge"\npass_threshold = 0.8',
    "faith_combined": 'scorer = "faithfulness"\nmethod = "combined"\npass_threshold = 0.8',
    "relevance_combined": 'scorer = "answer_relevance"\nmethod = "combined"\npass_threshold = 0.6',
    "relevance": 'scorer = "answer_relevance"\nmethod = "judge"\npass_threshold = 0.6',
    "helpful": """scorer = "llm_rubric"
pass_threshold = 0.75
[scale]
min = 1
max = 5
[llm_rubric]
criteria = "The answer addresses the user's question and is specific."
steps = ["Identify what the user asked.", "Check the answer against it.", "Assign the score."]
inputs = ["question", "answer"]""",
    "tools": 'scorer = "tool_selection"\npass_threshold = 0.8',
}
# Which rubric applies to which trace (the others are skipped with the reason): the RAG
# trace gets all but tools; the agent run has no documents, so no faithfulness.
TRACES = ("ragtruth-14375-3", "agent-00")
MAX_CALLS = 20


@pytest.mark.timeout(600)
def test_each_judged_rubric_kind_on_the_real_server(
    real_server: RealServer, redis_url: str, tmp_path: Path
) -> None:
    for name, body in RUBRICS.items():
        write_rubric(tmp_path / "rubrics", name,
                     f'name = "{name}"\nversion = "1"\n{body}\n[sampling]\nrate = 1.0\n')  # fmt: skip
    make_settings(tmp_path, redis_url, judge=judge_section(real_server))
    settings = tmp_path / "settings.toml"
    traces = sample_traces(tmp_path / "traces.jsonl", *TRACES)
    run("ingest", str(traces), settings=settings)
    run("enqueue", *TRACES, settings=settings)
    before = real_server.completions()
    run("worker", "--burst", settings=settings, timeout=540)
    calls = real_server.completions() - before

    records = records_of(tmp_path / "evals.db")
    outcomes = check_records(records)
    assert intents_by_status(tmp_path / "evals.db") == {"done": len(TRACES)}, outcomes
    by_pair = {(r.trace_id, r.rubric): r for r in records}
    # One record per rubric and trace: judged ones carry a verdict or an error, never nothing.
    assert set(by_pair) == {(t, n) for t in TRACES for n in RUBRICS}, sorted(by_pair)
    judged = [r for r in records if r.status != "skipped"]
    assert {r.rubric for r in judged} == set(RUBRICS), outcomes  # every kind reached the judge
    assert 0 < calls <= MAX_CALLS, (calls, outcomes)
    print(f"rubrics on the real server: {calls} calls, outcomes {dict(outcomes)}")
