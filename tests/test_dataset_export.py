"""`evaluator dataset export` from a query and from an alert, and the loop it closes: the
alert's export replayed through `evaluator gate --replay` against a loopback generator."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from evaluator.cli.main import main
from evaluator.sources.ingest import ingest_traces
from evaluator.store.models import AlertRecord, EvalRecord
from evaluator.store.store import Store
from tests.conftest import make_settings, write_rubric
from tests.test_gate_replay import BAD, GOOD, RUBRIC


def _trace(i: int) -> dict[str, object]:
    doc = f"The Plan-{i} subscription costs ${(i + 2) * 1200:,} per year for {i + 3} seats."
    return {
        "trace_id": f"t{i:03d}",
        "attributes": {"prompt.version": "v18", "feature": "pricing"},
        "spans": [
            {"span_id": "r", "name": "retrieve", "attributes": {
                "gen_ai.operation.name": "retrieval",
                "gen_ai.retrieval.documents": [{"id": "d", "content": doc}]}},
            {"span_id": "c", "name": "chat", "attributes": {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "gen-model",
                "gen_ai.input.messages": [{"role": "user",
                                           "content": f"Price of Plan-{i}? mail me: ann{i}@example.com"}],
                "gen_ai.output.messages": [{"role": "assistant", "content": doc}]}},
        ],
    }  # fmt: skip


@pytest.fixture
def seeded(tmp_path: Path, redis_url: str) -> Path:
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    store = Store(settings.database.url)
    ingest_traces(store, [_trace(i) for i in range(40)])
    now = datetime.now(UTC)
    with Session(store.engine) as session:
        for i in range(40):
            failed = i % 4 == 0
            session.add(EvalRecord(
                trace_id=f"t{i:03d}", span_id="c", rubric="faith", rubric_version="1",
                scorer="faithfulness", method="local", status="ok", score=0.1 if failed else 0.9,
                passed=not failed, prompt_version="v18", feature="pricing",
                created_at=now - timedelta(hours=1),
            ))  # fmt: skip
        session.add(AlertRecord(
            id=uuid.UUID(int=7), group_key="version|faith|v18", kind="version",
            rubric="faith", labels={"prompt_version": "v18", "feature": "pricing"},
            worst_traces=[{"trace_id": f"t{i:03d}", "score": 0.1} for i in (0, 4, 8, 0)],
        ))  # fmt: skip
        session.commit()
    store.close()
    return tmp_path / "settings.toml"


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_query_export_is_redacted_deduplicated_ordered_with_a_manifest(
    tmp_path: Path, seeded: Path
) -> None:
    out = tmp_path / "failed.jsonl"
    args = ["--settings", str(seeded), "dataset", "export", str(out), "--rubric", "faith",
            "--failed", "--since", "7d"]  # fmt: skip
    assert main(args) == 0
    lines = _lines(out)
    assert [x["trace"]["trace_id"] for x in lines] == [f"t{i:03d}" for i in range(0, 40, 4)]
    assert "example.com" not in out.read_text() and "[EMAIL_1]" in out.read_text()
    assert lines[0]["scores"]["faith"]["passed"] is False
    manifest = json.loads((tmp_path / "failed.manifest.json").read_text())
    assert manifest["traces"] == 10 and manifest["redacted"] is True
    first = out.read_bytes()
    assert main(args) == 0 and out.read_bytes() == first  # stable: byte-identical re-export


def test_alert_export_then_replay_through_the_gate(
    tmp_path: Path,
    seeded: Path,
    generator_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "alert.jsonl"
    assert main(["--settings", str(seeded), "dataset", "export", str(out),
                 "--alert", str(uuid.UUID(int=7)), "--good", "20",
                 "--no-redact"]) == 0  # fmt: skip
    lines = _lines(out)
    why = [x["selected_by"]["why"] for x in lines]
    assert why.count("worst") == 3 and why.count("good") == 20  # t000 listed twice, once out
    settings_text = seeded.read_text() + f'\n[generator]\nbase_url = "{generator_url}"\n'
    seeded.write_text(settings_text)
    (tmp_path / "b.txt").write_text(GOOD)
    (tmp_path / "c.txt").write_text(BAD)
    capsys.readouterr()
    code = main(["--settings", str(seeded), "gate", "--rubric", "faith", "--replay", str(out),
                 "--baseline-template", str(tmp_path / "b.txt"),
                 "--candidate-template", str(tmp_path / "c.txt"), "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["decision"] == "worse" and doc["pairs"] == 23, doc


def test_labelled_export_carries_the_human_verdicts(tmp_path: Path, seeded: Path) -> None:
    from evaluator.config.settings import load_settings
    from evaluator.sources.feedback import record_feedback
    from evaluator.sources.labelled import read_labelled

    store = Store(load_settings(seeded).database.url)
    record_feedback(store, trace_id="t005", label="hallucinated", rubric="faith")
    record_feedback(store, trace_id="t006", value="up")
    store.close()
    out = tmp_path / "labelled.jsonl"
    assert main(["--settings", str(seeded), "dataset", "export", str(out), "--labelled",
                 "--rubric", "faith"]) == 0  # fmt: skip
    items = list(read_labelled(out))  # the export reads back as labelled JSONL
    assert [(i.trace.trace_id, i.passed) for i in items] == [("t005", False), ("t006", True)]
