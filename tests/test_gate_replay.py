"""`evaluator gate --replay`: both prompt templates re-generated on a dataset by a loopback
OpenAI-compatible generator (a real HTTP server on 127.0.0.1), scored with the rubric, and
compared pair by pair: a candidate prompt that invents prices fails the gate, one that
quotes the documents passes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from evaluator.cli.main import main
from tests.conftest import JUDGE_URL, chat_completion, make_settings, write_rubric
from tests.loopback_generator import Generator

RUBRIC = """
name = "faith"
version = "1"
scorer = "faithfulness"
method = "local"
pass_threshold = 0.5
[regression]
min_samples = 20
"""
GOOD = "Answer strictly from the documents.\n\nDocuments:\n{contexts}\n\nQuestion: {question}"
BAD = "Be creative and persuasive.\n\nDocuments:\n{contexts}\n\nQuestion: {question}"


def _dataset(path: Path, n: int = 30) -> Path:
    lines = []
    for i in range(n):
        doc = f"The Plan-{i} subscription costs ${(i + 2) * 1200:,} per year for {i + 3} seats."
        trace = {
            "trace_id": f"item-{i}",
            "spans": [
                {"span_id": "r", "name": "retrieve", "attributes": {
                    "gen_ai.operation.name": "retrieval",
                    "gen_ai.retrieval.documents": [{"id": "d", "content": doc}]}},
                {"span_id": "c", "name": "chat", "attributes": {
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": "gen-model",
                    "gen_ai.input.messages": [{"role": "user", "content": f"Price of Plan-{i}?"}],
                    "gen_ai.output.messages": [{"role": "assistant", "content": doc}]}},
            ],
        }  # fmt: skip
        lines.append(json.dumps({"trace": trace, "label": "faithful"}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("candidate", "expected"), [(GOOD, 0), (BAD, 1)], ids=["good", "bad"])
def test_replay_gate_compares_two_templates_pair_by_pair(
    tmp_path: Path, redis_url: str, generator_url: str, capsys: pytest.CaptureFixture[str],
    candidate: str, expected: int,
) -> None:  # fmt: skip
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    make_settings(tmp_path, redis_url, generator={"base_url": generator_url})
    (tmp_path / "baseline.txt").write_text(GOOD)
    (tmp_path / "candidate.txt").write_text(candidate)
    code = main([
        "--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
        "--replay", str(_dataset(tmp_path / "data.jsonl", 200)),
        "--baseline-template", str(tmp_path / "baseline.txt"),
        "--candidate-template", str(tmp_path / "candidate.txt"), "--json",
    ])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == expected, doc
    # 200 items: identical answers prove "no worse" within 0.05 at alpha 0.01 (30 could not:
    # zero discordant pairs of 30 still allow a 10 % discordance rate).
    assert doc["pairs"] == 200 and doc["skipped"] == []
    assert doc["generator_calls"] == 400 == Generator.calls
    if expected == 1:
        assert doc["candidate"]["mean"] < doc["baseline"]["mean"] - 0.2


JUDGED = """
name = "faith"
version = "1"
scorer = "faithfulness"
method = "judge"
pass_threshold = 0.8
[regression]
min_samples = 20
"""


def _judge_reply(request: httpx.Request) -> httpx.Response:
    """A judge that marks invented offers unsupported and quoted documents supported."""
    prompt = json.loads(request.content)["messages"][-1]["content"]
    invented = "free laptop" in prompt
    claims = [
        {"claim": "the price", "context_ids": [1], "reason": "document",
         "verdict": "not_found" if invented else "supported"},
        {"claim": "the seats", "context_ids": [1], "reason": "document", "verdict": "supported"},
    ]  # fmt: skip
    return httpx.Response(200, json=chat_completion(json.dumps({"claims": claims})))


@pytest.mark.parametrize(
    ("candidate", "expected"), [(GOOD, 6), (BAD, 1)], ids=["good-undecided-at-24", "bad"]
)
def test_replay_gate_with_the_generator_and_a_judge(
    tmp_path: Path, redis_url: str, generator_url: str, capsys: pytest.CaptureFixture[str],
    candidate: str, expected: int,
) -> None:  # fmt: skip
    write_rubric(tmp_path / "rubrics", "faith", JUDGED)
    make_settings(tmp_path, redis_url, generator={"base_url": generator_url},
                  judge={"base_url": JUDGE_URL, "cache_ttl_s": 0})  # fmt: skip
    (tmp_path / "baseline.txt").write_text(GOOD)
    (tmp_path / "candidate.txt").write_text(candidate)
    with respx.mock(assert_all_called=True) as http:
        http.route(host="127.0.0.1").pass_through()  # the loopback generator is a real server
        route = http.post(f"{JUDGE_URL}/chat/completions").mock(side_effect=_judge_reply)
        code = main([
            "--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
            "--replay", str(_dataset(tmp_path / "data.jsonl", 24)),
            "--baseline-template", str(tmp_path / "baseline.txt"),
            "--candidate-template", str(tmp_path / "candidate.txt"), "--json",
        ])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == expected, {k: doc[k] for k in ("drop", "drop_lower_bound", "reason")}
    assert route.call_count == 48 == doc["judge_calls"]  # one judge call per generated answer
    assert doc["pairs"] == 24 and doc["generator_calls"] == 48
    if expected == 6:  # 24 equal pairs cannot bound the drop below 0.05: says how many could
        assert doc["scores_needed"]["candidate"] > 24 and doc["guarantee"] == "fixed-n"


def test_replay_sends_the_apps_reply_budget_to_the_generator(
    tmp_path: Path, redis_url: str, generator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trace's gen_ai.request.max_tokens goes with both prompts: without it a server
    generates until its context is full (a base model at temperature 0 seldom stops)."""
    data = _dataset(tmp_path / "data.jsonl", 3)
    lines = [json.loads(line) for line in data.read_text().splitlines()]
    for doc in lines:
        doc["trace"]["spans"][1]["attributes"]["gen_ai.request.max_tokens"] = 77
    data.write_text("".join(json.dumps(doc) + "\n" for doc in lines))
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    make_settings(tmp_path, redis_url, generator={"base_url": generator_url})
    (tmp_path / "baseline.txt").write_text(GOOD)
    (tmp_path / "candidate.txt").write_text(BAD)
    main([
        "--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
        "--replay", str(data), "--baseline-template", str(tmp_path / "baseline.txt"),
        "--candidate-template", str(tmp_path / "candidate.txt"), "--json",
    ])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["generator_calls"] == 6
    assert Generator.max_tokens == [77] * 6
