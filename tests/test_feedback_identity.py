"""Feedback identity, as a user meets it: `evaluator feedback import` run as a real process
against real Redis and SQLite. The same file imported again writes nothing, pushes nothing
and says nothing turned negative; the same identity with a changed value updates its row and
enqueues its trace once; `comment` is accepted as `note`'s other name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from evaluator.intake.enqueue import intake_key
from tests.conftest import TONE_RUBRIC, make_settings, rag_trace, write_rubric

ROOT = Path(__file__).resolve().parent.parent


def _cli(settings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "evaluator.cli", "--settings", str(settings), *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip


def _import(settings: Path, path: Path) -> dict[str, Any]:
    done = _cli(settings, "feedback", "import", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert "turned negative" not in done.stdout  # --json: the counts say it
    return json.loads(done.stdout)


def _lines(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def test_reimport_is_a_no_op_and_a_changed_value_enqueues_once(
    tmp_path: Path, redis_url: str
) -> None:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    cfg = tmp_path / "settings.toml"
    stored = _lines(tmp_path / "traces.jsonl", [rag_trace(f"s{i}") for i in range(3)])
    assert _cli(cfg, "ingest", str(stored)).returncode == 0
    # Seven negative verdicts: four labelled lines carrying their trace (stored by the
    # import), three compact thumbs-down on ingested traces; one thumbs-up; one note.
    items: list[dict[str, Any]] = [
        {"trace": rag_trace(f"l{i}"), "label": "fail", "rubric": "tone"} for i in range(4)
    ]
    items += [{"trace_id": f"s{i}", "value": "down", "id": f"c-{i}"} for i in range(3)]
    items += [{"trace_id": "s0", "value": "up", "rubric": "tone", "id": "c-up"}]
    items += [{"trace_id": "s1", "comment": "the date is wrong", "id": "c-note"}]
    path = _lines(tmp_path / "labels.jsonl", items)
    client = redis.Redis.from_url(redis_url)
    queue = intake_key(settings.redis.key_prefix)

    first = _import(cfg, path)
    assert (first["inserted"], first["duplicates"], first["updated"]) == (9, 0, 0)
    assert first["tail"] == {"marked": 7, "enqueued": 7, "skipped": None}
    assert client.llen(queue) == 7

    for _ in range(2):  # the same file again: nothing written, nothing pushed
        again = _import(cfg, path)
        assert (again["inserted"], again["duplicates"], again["updated"]) == (0, 9, 0)
        assert again["tail"] == {"marked": 0, "enqueued": 0, "skipped": None}
        assert client.llen(queue) == 7
    plain = _cli(cfg, "feedback", "import", str(path))
    assert plain.returncode == 0 and "turned negative" not in plain.stdout, plain.stdout

    # The thumbs-up becomes a thumbs-down under the same identity (trace, rubric, source, id):
    # one row updated, its trace (not negative yet) enqueued once, and only once.
    client.delete(queue)
    items[7] = {**items[7], "value": "down"}
    changed = _lines(tmp_path / "labels.jsonl", items)
    turned = _import(cfg, changed)
    assert (turned["inserted"], turned["duplicates"], turned["updated"]) == (0, 8, 1)
    # s0 is already negative from c-0: the changed row marks nothing new and pushes nothing
    assert turned["tail"] == {"marked": 0, "enqueued": 0, "skipped": None}
    new_trace = [{"trace_id": "s9", "value": "up", "id": "c-9"}]
    assert (
        _cli(cfg, "ingest", str(_lines(tmp_path / "s9.jsonl", [rag_trace("s9")]))).returncode == 0
    )
    assert _import(cfg, _lines(tmp_path / "s9-fb.jsonl", new_trace))["tail"]["enqueued"] == 0
    flipped = _import(cfg, _lines(tmp_path / "s9-fb.jsonl", [{**new_trace[0], "value": "down"}]))
    assert flipped["updated"] == 1 and flipped["tail"] == {
        "marked": 1, "enqueued": 1, "skipped": None,
    }  # fmt: skip
    assert _import(cfg, tmp_path / "s9-fb.jsonl")["tail"]["enqueued"] == 0
    assert client.llen(queue) == 1
    client.close()
