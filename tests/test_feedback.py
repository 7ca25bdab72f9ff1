"""Human feedback: idempotent import (file, API handler, CLI) on real SQLite and PostgreSQL,
judge-human agreement per epoch, and the review queue's order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from evaluator.analytics.human_feedback import agreement_by_epoch, rank_for_review, review_queue
from evaluator.cli.main import main
from evaluator.sources.feedback import (
    feedback_id,
    handle_feedback,
    import_feedback,
    record_feedback,
)
from evaluator.store.models import AlertRecord, EvalRecord, utcnow
from evaluator.store.store import Store
from evaluator.store.trust_models import FeedbackRecord

from .conftest import make_settings

SAMPLE = Path(__file__).parents[1] / "evaluator" / "data" / "ragtruth_sample.jsonl"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'evals.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store(url)
    yield s
    s.close()


def labelled_file(path: Path, n: int = 6) -> list[str]:
    lines, ids = [], []
    for raw in SAMPLE.read_text().splitlines()[:n]:
        trace = json.loads(raw)
        bad = trace["attributes"].pop("ragtruth.hallucinated")
        ids.append(trace["trace_id"])
        lines.append(json.dumps({"trace": trace, "label": 0 if bad else 1, "note": "reviewed"}))
    lines.append(json.dumps({"trace_id": ids[0], "value": "down", "note": "rude"}))
    lines.append(json.dumps({"trace_id": ids[1], "value": 0.8, "rubric": "tone", "id": "c-1"}))
    path.write_text("\n".join(lines) + "\n")
    return ids


def feedback_rows(store: Store) -> list[FeedbackRecord]:
    with Session(store.engine) as session:
        return list(session.exec(select(FeedbackRecord)).all())


def test_import_is_idempotent_and_visible(store: Store, tmp_path: Path) -> None:
    ids = labelled_file(tmp_path / "fb.jsonl")
    first = import_feedback(store, tmp_path / "fb.jsonl")
    assert (first.inserted, first.duplicates, first.traces, first.errors) == (8, 0, 6, [])
    again = import_feedback(store, tmp_path / "fb.jsonl")
    assert (again.inserted, again.duplicates, again.traces) == (0, 8, 0)
    rows = feedback_rows(store)
    assert len(rows) == 8 and store.count_traces() == 6
    kinds = sorted(r.kind for r in rows)
    assert kinds == ["label"] * 6 + ["score", "thumbs"]
    thumbs = next(r for r in rows if r.kind == "thumbs")
    assert (thumbs.trace_id, thumbs.value, thumbs.note) == (ids[0], 0.0, "rude")
    scoped = feedback_id(ids[1], "tone", "import:fb.jsonl", "c-1")  # the client's id "c-1"
    assert next(r for r in rows if r.id == scoped).value == 0.8
    assert store.get_trace(ids[0]) is not None  # the labelled trace was stored too


def test_api_handler(store: Store) -> None:
    body = json.dumps({"trace_id": "t1", "label": "hallucinated", "id": "x1"}).encode()
    status, out = handle_feedback(store, body)
    assert status == 200 and out["inserted"] == 1
    assert handle_feedback(store, body)[1]["duplicates"] == 1  # a retried POST writes once
    status, out = handle_feedback(store, b'[{"trace_id": "t2", "value": 3}, {"value": 1}]')
    assert status == 400 and len(out["errors"]) == 2
    assert handle_feedback(store, b"{nope")[0] == 400
    assert handle_feedback(store, b'{"trace_id": "t3", "value": 1, "colour": 1}')[0] == 400
    assert [r.id for r in feedback_rows(store)] == [feedback_id("t1", None, "api", "x1")]


def test_cli_import_twice(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    make_settings(tmp_path, redis_url)
    labelled_file(tmp_path / "fb.jsonl")
    args = ["--settings", str(tmp_path / "settings.toml"), "feedback", "import"]
    assert main([*args, str(tmp_path / "fb.jsonl")]) == 0
    assert "8 new, 0 changed, 0 already there, 0 rejected (6 new traces)" in capsys.readouterr().out
    assert main([*args, str(tmp_path / "fb.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"] == 8


def _record(trace: str, score: float, version: str = "1", **kw: object) -> EvalRecord:
    return EvalRecord(
        trace_id=trace, span_id="s", rubric="faith", rubric_version=version, scorer="faithfulness",
        method="judge", status="ok", score=score, passed=score >= 0.5, judge_model="j",
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_agreement_per_epoch(store: Store) -> None:
    now = utcnow()
    for i in range(40):
        human_fails = i % 2 == 0
        record_feedback(store, trace_id=f"t{i}", label="hallucinated" if human_fails else "ok")
        # epoch v1 agrees with the human on all; v2 (a week later) on 3 in 4
        good = 0.9 if not human_fails else 0.1
        store.upsert_record(
            _record(f"t{i}", good, "1", epoch="v1|j", created_at=now - timedelta(days=7))
        )
        flipped = 1 - good if i % 4 == 1 or i % 4 == 2 else good
        store.upsert_record(_record(f"t{i}", flipped, "2", epoch="v2|j", created_at=now))
    rows = agreement_by_epoch(store, "faith", reps=200)
    assert [r["epoch"] for r in rows] == ["v1|j", "v2|j"]
    assert rows[0]["balanced_accuracy"]["value"] == 1.0
    assert rows[1]["balanced_accuracy"]["value"] == 0.5
    assert rows[1]["n"] == 40 and rows[1]["cohen_kappa"]["ci_low"] is not None


def test_review_queue_order(store: Store, tmp_path: Path) -> None:
    cascade = {"cascade": {"local_value": 0.9, "local_threshold": 0.6, "decided_by": "judge"}}
    records = [
        _record("far", 0.99),  # confident: not proposed
        _record("near", 0.52),  # uncertain
        _record("mid", 0.65),  # a little uncertain
        _record("dispute", 0.1, details=cascade),  # local passes, judge fails
        _record("alerted", 0.95),
        _record("labelled", 0.5),  # a human already said
    ]
    for r in records:
        store.upsert_record(r)
    record_feedback(store, trace_id="labelled", value=1)
    store_alert = AlertRecord(
        group_key="drop|faith", kind="drop", rubric="faith", worst_traces=[{"trace_id": "alerted"}]
    )
    with Session(store.engine) as session:
        session.add(store_alert)
        session.commit()
    queue = review_queue(store, {"faith": 0.5}, rubric="faith")
    assert [i.trace_id for i in queue] == ["dispute", "near", "alerted", "mid"]
    assert "disagree" in queue[0].reasons[0]
    top = rank_for_review(records, {"faith": 0.5}, frozenset(), frozenset({"labelled"}), 2)
    assert [i.trace_id for i in top] == ["dispute", "near"]


def test_post_api_feedback_through_the_server(tmp_path: Path) -> None:
    import httpx

    from evaluator.web.server import start_in_thread

    s = Store(f"sqlite:///{tmp_path / 'api.db'}")
    server = start_in_thread(s)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok = httpx.post(f"{base}/api/feedback", json=[
            {"trace_id": "t1", "value": "down", "id": "fb-1"},
            {"trace_id": "t2", "label": "pass", "id": "fb-2"},
        ])  # fmt: skip
        again = httpx.post(f"{base}/api/feedback", json={"trace_id": "t1", "value": "down",
                                                          "id": "fb-1"})  # fmt: skip
        bad = httpx.post(f"{base}/api/feedback", json={"trace_id": "t3", "value": 7})
    finally:
        server.shutdown()
        server.server_close()
        s.close()
    assert ok.status_code == 200, ok.text
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    assert bad.status_code == 400 and "outside [0, 1]" in bad.text


def test_feedback_agreement_and_review_next_commands(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from evaluator.cli.main import main
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, redis_url)
    s = Store(settings.database.url)
    for i in range(12):
        record_feedback(s, trace_id=f"t{i}", label="hallucinated" if i % 2 else "faithful")
        s.upsert_record(_record(f"t{i}", 0.2 if i % 2 else 0.9, epoch="e1"))
    s.upsert_record(_record("unsure", 0.52))
    s.close()
    args = ["--settings", str(tmp_path / "settings.toml")]
    assert main([*args, "feedback", "agreement", "--rubric", "faith", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    rows = rows["epochs"] if isinstance(rows, dict) else rows
    assert rows[0]["n"] == 12 and rows[0]["balanced_accuracy"]["value"] == 1.0
    assert main([*args, "review", "next", "--rubric", "faith", "-n", "5", "--json"]) == 0
    queue = json.loads(capsys.readouterr().out)
    queue = queue["queue"] if isinstance(queue, dict) else queue
    assert queue[0]["trace_id"] == "unsure"  # the judge was least sure there
