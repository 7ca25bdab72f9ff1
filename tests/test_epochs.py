"""Evaluator epochs: the epoch changes exactly when what produces a verdict changes; trends
split by epoch; `evaluator epochs` lists them (real SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session

from evaluator.analytics.trends import TrendQuery, trend, trends_table
from evaluator.cli.main import main
from evaluator.sampling import Reason
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.worker.pipeline import to_record
from judges.llm.client import JudgeClient
from judges.provenance import VerdictIdentity, endpoint_of
from judges.rubric import Rubric
from judges.scorers.registry import identity_for
from judges.types import Clients, Score, Status
from tests.conftest import REDIS_URL, make_settings

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
TEXT = st.text(min_size=1, max_size=12)
IDENTITIES = st.builds(
    VerdictIdentity,
    scorer=TEXT, method=TEXT, rubric=TEXT, rubric_version=TEXT, rubric_hash=TEXT,
    implementation=TEXT, endpoint=st.none() | TEXT, model=st.none() | TEXT,
    temperature=st.none() | st.floats(0, 2), response_format=st.none() | TEXT,
    prompt_hash=st.none() | TEXT, schema_hash=st.none() | TEXT,
)  # fmt: skip
NAMES = [f.name for f in fields(VerdictIdentity)]


@given(IDENTITIES, st.sampled_from(NAMES), TEXT)
def test_an_epoch_changes_with_any_field_and_only_then(
    identity: VerdictIdentity, name: str, other: str
) -> None:
    same = VerdictIdentity(**identity.to_json())
    assert same.epoch() == identity.epoch() and same.cache_key({}) == identity.cache_key({})
    value = 3.0 if name == "temperature" else other
    changed = replace(identity, **{name: value})
    assert (changed.epoch() == identity.epoch()) == (getattr(identity, name) == value)


def rubric(**update: object) -> Rubric:
    base = {
        "name": "tone",
        "version": "1",
        "scorer": "llm_rubric",
        "llm_rubric": {"criteria": "Is the answer polite?"},
    }
    return Rubric.model_validate({**base, **update})


def judge(base_url: str = "http://judge.test/v1", model: str = "m") -> Clients:
    return Clients(judge=JudgeClient(base_url=base_url, model=model))


@pytest.mark.parametrize(
    ("what", "rubric_update", "clients"),
    [
        ("model", {}, judge(model="other")),
        ("endpoint", {}, judge("http://elsewhere.test/v1")),
        ("endpoint path", {}, judge("http://judge.test/v2")),
        ("rubric version", {"version": "2"}, judge()),
        ("prompt (criteria)", {"llm_rubric": {"criteria": "Is it kind?"}}, judge()),
        ("scale (schema and prompt)", {"scale": {"min": 0, "max": 10}}, judge()),
        ("per-rubric judge model", {"judge": {"model": "big"}}, judge()),
        ("temperature", {"judge": {"temperature": 0.7}}, judge()),
        ("no judge at all", {}, Clients()),
    ],
)
def test_the_epoch_changes_when_what_produces_the_verdict_does(
    what: str, rubric_update: dict[str, object], clients: Clients
) -> None:
    assert identity_for(rubric(**rubric_update), clients).epoch() != (
        identity_for(rubric(), judge()).epoch()
    ), what


@pytest.mark.parametrize(
    ("what", "rubric_update", "clients"),
    [
        ("nothing", {}, judge()),
        ("sampling rate", {"sampling": {"rate": 0.1}}, judge()),
        ("applies_to", {"applies_to": {"features": ["qa"]}}, judge()),
        ("description", {"description": "polite?"}, judge()),
        ("regression policy", {"regression": {"min_samples": 50}}, judge()),
        ("endpoint spelling", {}, judge("HTTP://user:pw@Judge.test/v1/")),
    ],
)
def test_the_epoch_stays_when_nothing_that_decides_a_verdict_changed(
    what: str, rubric_update: dict[str, object], clients: Clients
) -> None:
    assert identity_for(rubric(**rubric_update), clients) == identity_for(rubric(), judge()), what


@pytest.mark.parametrize("scorer", ["faithfulness", "answer_relevance", "context_relevance"])
def test_a_combined_rubric_starts_a_new_epoch_with_a_new_judge(scorer: str) -> None:
    """A combined method's verdict is the judge's reply: another model or endpoint is another
    epoch (it named no judge before, so a judge swap mixed two judges' verdicts in one trend)."""
    combined = Rubric.model_validate(
        {"name": "c", "version": "1", "scorer": scorer, "method": "combined"}
    )
    first = identity_for(combined, judge())
    assert first.model == "m" and first.prompt_hash is not None
    assert identity_for(combined, judge(model="other")).epoch() != first.epoch()
    assert identity_for(combined, judge("http://elsewhere.test/v1")).epoch() != first.epoch()


def test_local_methods_name_their_implementation_and_no_judge() -> None:
    faith = Rubric.model_validate(
        {"name": "faith", "version": "1", "scorer": "faithfulness", "method": "local"}
    )
    ident = identity_for(faith, judge())
    assert ident.endpoint is ident.model is ident.prompt_hash is None
    assert ident.implementation.startswith("faithfulness:") and "+local:" in ident.implementation
    assert ident.kind == "deterministic" and identity_for(rubric(), judge()).kind == "llm_judge"
    assert endpoint_of("https://u:p@Host.example:8443/v1/?k=1") == "https://host.example:8443/v1"


def test_a_record_carries_its_epoch_and_provenance_and_not_in_its_identity() -> None:
    ident = identity_for(rubric(), judge())
    score = Score(status=Status.OK, value=1.0, identity=ident, judge_model_reported="m-2026")
    record = to_record("t", "s", rubric(), score, {}, reason=Reason.RATE, latency_ms=1.0)
    assert record.epoch == ident.epoch()
    assert record.provenance is not None
    assert record.provenance["judge_model_reported"] == "m-2026"
    assert record.provenance["model"] == "m" and record.provenance["epoch"] == record.epoch
    legacy = to_record("t", "s", rubric(), Score.error("x"), {}, reason=Reason.RATE, latency_ms=0)
    assert (legacy.epoch, legacy.provenance) == ("legacy", None)


# --- stored ----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (f"sqlite:///{tmp_path / 'e.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))  # fmt: skip
    s = Store(url)
    yield s
    s.close()


def add(store: Store, epoch: str, hours: range, score: float, **prov: object) -> None:
    with Session(store.engine) as session:
        session.add_all(
            EvalRecord(
                trace_id=f"{epoch}-{h}-{uuid.uuid4().hex[:6]}", rubric="faith",
                rubric_version="1", scorer="faithfulness", status="ok", score=score,
                passed=score >= 0.5, prompt_version="v1", epoch=epoch,
                provenance={"scorer": "faithfulness", "method": "judge", "model": "m",
                            "rubric_version": "1", "implementation": "faithfulness:1",
                            "endpoint": "http://j/v1", **prov},
                created_at=NOW - timedelta(hours=h),
            )
            for h in hours
        )  # fmt: skip
        session.commit()


def test_trends_split_by_epoch_and_report_the_boundary(store: Store) -> None:
    add(store, "aaaa", range(30, 50), 0.9)  # the old judge, until 30 h ago
    add(store, "bbbb", range(0, 30), 0.6, judge_model_reported="m-v2")  # a stricter one
    doc = trend(store, TrendQuery.parse("faith", "prompt_version", "3d", "1d"), NOW)

    assert [(e["epoch"], e["count"]) for e in doc["epochs"]] == [("aaaa", 20), ("bbbb", 30)]
    assert doc["epochs"][1]["first_hour"] == (NOW - timedelta(hours=29, minutes=30)).isoformat()
    groups = [
        (g["key"], g["epoch"], g["total"]["count"], g["total"]["mean"]) for g in doc["groups"]
    ]
    assert groups == [
        ("v1", "aaaa", 20, pytest.approx(0.9)),
        ("v1", "bbbb", 30, pytest.approx(0.6)),
    ]
    # One day holds both epochs: two cells, never one pooled mean.
    day = (NOW - timedelta(hours=30)).replace(hour=0, minute=0).isoformat()
    assert [b["mean"] for g in doc["groups"] for b in g["buckets"] if b["start"] == day] == [
        pytest.approx(0.9),
        pytest.approx(0.6),
    ]
    assert "evaluator epochs (series are split, not compared): aaaa" in trends_table(doc)


def test_epochs_command_lists_epochs_with_first_last_seen_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, REDIS_URL)
    store = Store(settings.database.url)
    add(store, "aaaa", range(30, 50), 0.9)
    add(store, "bbbb", range(0, 30), 0.6, judge_model_reported="m-v2")
    store.close()
    args = ["--settings", str(tmp_path / "settings.toml"), "epochs"]
    assert main([*args, "--rubric", "faith", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["epochs"]
    assert [(r["epoch"], r["records"], r["ok"]) for r in rows] == [
        ("aaaa", 20, 20),
        ("bbbb", 30, 30),
    ]
    assert rows[0]["first_seen"] == (NOW - timedelta(hours=49)).isoformat()
    assert rows[1]["last_seen"] == NOW.isoformat()
    assert rows[1]["judge_models_reported"] == ["m-v2"] and rows[1]["identity"]["model"] == "m"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "bbbb" in out and "reported: m-v2" in out
    assert main([*args, "--rubric", "nope"]) == 2  # a typo, not an empty answer
    assert "no rubric named 'nope'; known: faith" in capsys.readouterr().err
