"""The real model server as the generator: self-consistency re-samples it, and
`evaluator gate --replay` answers both prompt templates with it, each in a real process.

The app's reply budget travels with the trace (gen_ai.request.max_tokens = 96) and is what
the generator is asked for. Records satisfy the invariant (tests/real_model/honesty.py); the
gate ends with a decision it can stand by: one pair decides nothing at alpha 0.01, so
"undecided" (exit 6) with the scores it would need, and every item left out says why.
Short traces (one small document) keep each prompt near 200 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_settings, write_rubric
from tests.real_model.honesty import check_records
from tests.real_model.scenario import (
    intents_by_status,
    judge_section,
    records_of,
    short_trace,
    write_traces,
)
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


@pytest.mark.timeout(600)
def test_self_consistency_resamples_the_real_server(
    real_server: RealServer, redis_url: str, tmp_path: Path
) -> None:
    write_rubric(tmp_path / "rubrics", "consistent", SELF_CONSISTENCY)
    make_settings(tmp_path, redis_url, judge=judge_section(real_server))  # generator: the same
    settings = tmp_path / "settings.toml"
    trace = short_trace("short-rag", max_tokens=REPLY_BUDGET)
    run("ingest", str(write_traces(tmp_path / "t.jsonl", [trace])), settings=settings)
    run("enqueue", "short-rag", settings=settings)
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
    items = [short_trace("item-1", max_tokens=REPLY_BUDGET)]
    data = write_traces(tmp_path / "data.jsonl", items)
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
    assert proc.returncode == 6, proc.stdout + proc.stderr  # undecided: 1 pair proves nothing
    doc = json.loads(proc.stdout)
    assert doc["decision"] == "undecided", doc
    assert doc["pairs"] + len(doc["skipped"]) == len(items), doc
    assert all(s["why"].strip() for s in doc["skipped"]), doc["skipped"]
    assert doc["generator_calls"] >= len(items)  # each item's baseline answer was generated
    assert doc["generator_calls"] + doc["judge_calls"] <= calls <= MAX_CALLS, (calls, doc)
    print(f"gate --replay on the real server: {calls} calls, pairs {doc['pairs']}, "
          f"left out {len(doc['skipped'])}")  # fmt: skip
