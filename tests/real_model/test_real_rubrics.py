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
from tests.real_model.scenario import (
    intents_by_status,
    judge_section,
    records_of,
    sample_traces,
    short_trace,
    write_traces,
)
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
    # A verdict per tool call with reasons: with the instructions in the prompt the base
    # model writes hundreds of tokens (cut at 384, then 768, in bench/real_demo.py), minutes
    # on a loaded CPU server; a smaller budget keeps the call, and its one retry, bounded.
    "tools": 'scorer = "tool_selection"\npass_threshold = 0.8\n[judge]\nmax_output_tokens = 256',
}
# tool_selection's settings for a CPU server: a 256-token reply (512 on its retry) takes up
# to ~100 s at this machine's load, past the shipped 30 s per attempt; one retry, and a job
# timeout that fits the judge's worst case (2 x (120 x 2 + 20) s).
CPU_JUDGE = {"timeout_s": 120, "max_retries": 1}
CPU_WORKER = {"job_timeout_s": 600}
RAG = ("faith_judge", "faith_combined", "relevance_combined", "relevance", "helpful")
MAX_CALLS = 20


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("trace_id", "rubrics"), [("short-rag", RAG), ("agent-00", ("tools",))], ids=["rag", "agent"]
)
def test_each_judged_rubric_kind_on_the_real_server(
    real_server: RealServer, redis_url: str, tmp_path: Path, trace_id: str, rubrics: tuple[str, ...]
) -> None:
    """A RAG answer with one short document under the RAG rubrics; the demo's agent run
    under tool_selection. One trace per run keeps a worker job within job_timeout_s."""
    for name in rubrics:
        body = RUBRICS[name]
        write_rubric(tmp_path / "rubrics", name,
                     f'name = "{name}"\nversion = "1"\n{body}\n[sampling]\nrate = 1.0\n')  # fmt: skip
    if trace_id == "short-rag":
        make_settings(tmp_path, redis_url, judge=judge_section(real_server))
    else:
        make_settings(
            tmp_path, redis_url, judge=judge_section(real_server, **CPU_JUDGE), worker=CPU_WORKER
        )
    settings = tmp_path / "settings.toml"
    if trace_id == "short-rag":
        traces = write_traces(tmp_path / "traces.jsonl", [short_trace(trace_id)])
    else:
        traces = sample_traces(tmp_path / "traces.jsonl", trace_id)
    run("ingest", str(traces), settings=settings)
    run("enqueue", trace_id, settings=settings)
    before = real_server.completions()
    run("worker", "--burst", settings=settings, timeout=540)
    calls = real_server.completions() - before

    records = records_of(tmp_path / "evals.db")
    outcomes = check_records(records)
    assert intents_by_status(tmp_path / "evals.db") == {"done": 1}, outcomes
    # One record per rubric, each judged (a verdict with real usage, or an error with its
    # cause): every kind reached the judge.
    assert sorted(r.rubric for r in records) == sorted(rubrics), outcomes
    assert all(r.status != "skipped" for r in records), outcomes
    assert 0 < calls <= MAX_CALLS, (calls, outcomes)
    print(f"rubrics on the real server: {calls} calls, outcomes {dict(outcomes)}")
