"""The real model server as the generator: self-consistency re-samples it, and
`evaluator gate --replay` answers both prompt templates with it, each in a real process.

The app's reply budget travels with the trace (gen_ai.request.max_tokens = 96) and is what
the generator is asked for. Records satisfy the invariant (tests/real_model/honesty.py); the
gate ends with a decision it can stand by: two pairs decide nothing at alpha 0.01, so
"undecided" (exit 6) with the scores it would need, and every item left out says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_settings, write_rubric
from tests.real_model.honesty import check_records
from tests.real_model.scenario import intents_by_status, judge_section, records_of, sample_traces
from tests.real_model.server import RealServer
from tests.scenarios.cli import run

REPLY_BUDGET = 96  # the app's own max_tokens, replayed to the generator
MAX_CALLS = 20
SELF_CONSISTENCY = """
name = "consistent"
version = "1"
scorer = "self_consistency"
method = "judge"
pass_threshold = 0.7
[sampling]
rate = 1.0
[options]
samples = 2
"""
FAITH = """
name = "faith"
version = "1"
scorer = "faithfulness"
method = "judge"
pass_threshold = 0.8
"""
BASELINE = "Answer from the documents only.\n\nDocuments:\n{contexts}\n\nQuestion: {question}"
CANDIDATE = "Answer briefly.\n\nDocuments:\n{contexts}\n\nQuestion: {question}"


def _with_reply_budget(path: Path) -> Path:
    """The traces at `path` with gen_ai.request.max_tokens on their generation span."""
    lines = []
    for line in path.read_text().splitlines():
        trace = json.loads(line)
        for span in trace["spans"]:
            if span["attributes"].get("gen_ai.operation.name") == "chat":
                span["attributes"]["gen_ai.request.max_tokens"] = REPLY_BUDGET
        lines.append(json.dumps(trace))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.timeout(600)
def test_self_consistency_resamples_the_real_server(
    real_server: RealServer, redis_url: str, tmp_path: Path
) -> None:
    write_rubric(tmp_path / "rubrics", "consistent", SELF_CONSISTENCY)
    make_settings(tmp_path, redis_url, judge=judge_section(real_server))  # generator: the same
    settings = tmp_path / "settings.toml"
    traces = _with_reply_budget(sample_traces(tmp_path / "t.jsonl", "ragtruth-14390-3"))
    run("ingest", str(traces), settings=settings)
    run("enqueue", "ragtruth-14390-3", settings=settings)
    before = real_server.completions()
    run("worker", "--burst", settings=settings, timeout=540)
    calls = real_server.completions() - before

    (record,) = records_of(tmp_path / "evals.db")
    outcome = check_records([record])
    assert intents_by_status(tmp_path / "evals.db") == {"done": 1}
    assert record.status in ("ok", "error"), record
    if record.status == "ok":  # the samples are the server's, drawn for this record
        assert record.details["samples_source"] == "generator", record.details
        assert record.details["generator_calls"] == 2 and len(record.details["samples"]) == 2
    assert 2 <= calls <= MAX_CALLS, (calls, outcome)  # at least the two samples were asked
    print(f"self-consistency on the real server: {calls} calls, {dict(outcome)}")


@pytest.mark.timeout(600)
def test_gate_replay_with_the_real_server_as_generator(
    real_server: RealServer, redis_url: str, tmp_path: Path
) -> None:
    write_rubric(tmp_path / "rubrics", "faith", FAITH)
    make_settings(tmp_path, redis_url, judge=judge_section(real_server))
    items = ("ragtruth-14390-3", "ragtruth-14366-3")
    data = _with_reply_budget(sample_traces(tmp_path / "data.jsonl", *items))
    (tmp_path / "baseline.txt").write_text(BASELINE)
    (tmp_path / "candidate.txt").write_text(CANDIDATE)
    before = real_server.completions()
    proc = run(
        "gate", "--rubric", "faith", "--replay", str(data),
        "--baseline-template", str(tmp_path / "baseline.txt"),
        "--candidate-template", str(tmp_path / "candidate.txt"), "--json",
        settings=tmp_path / "settings.toml", timeout=540, check=False,
    )  # fmt: skip
    calls = real_server.completions() - before
    assert proc.returncode == 6, proc.stdout + proc.stderr  # undecided: 2 pairs prove nothing
    doc = json.loads(proc.stdout)
    assert doc["decision"] == "undecided", doc
    assert doc["pairs"] + len(doc["skipped"]) == len(items), doc
    assert all(s["why"].strip() for s in doc["skipped"]), doc["skipped"]
    assert doc["generator_calls"] >= len(items)  # each item's baseline answer was generated
    assert doc["generator_calls"] + doc["judge_calls"] <= calls <= MAX_CALLS, (calls, doc)
    print(f"gate --replay on the real server: {calls} calls, pairs {doc['pairs']}, "
          f"left out {len(doc['skipped'])}")  # fmt: skip
