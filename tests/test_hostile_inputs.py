"""One hostile trace or span never costs the valid ones beside it, at every entry point
(`evaluator ingest`, `ingest_traces`, POST /v1/traces, the completion sweep), on SQLite and
PostgreSQL: NaN, ±Infinity, NUL, lone surrogates, 600-deep nesting, oversize labels/IDs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import insert

from evaluator.cli.main import main
from evaluator.errors import TraceFormatError
from evaluator.intake.drain import stats_key
from evaluator.intake.enqueue import intake_key
from evaluator.sources.ingest import ingest_jsonl, ingest_traces
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.sources.quarantine import quarantine_key
from evaluator.store.models import PendingSpan, TraceRecord, table_of
from evaluator.store.store import Store
from evaluator.traces.model import parse_trace
from evaluator.traces.validate import MAX_DEPTH, MAX_LABEL_CHARS, json_problem

from .conftest import rag_trace

LATER = 10_000.0


def deep(n: int) -> Any:
    value: Any = "bottom"
    for _ in range(n):
        value = [value]
    return value


# (name, a change to a valid trace document, expected cause). Infinity/NaN/surrogates are
# written by json.dumps as the JSON extensions Python's own parser accepts.
HOSTILE: list[tuple[str, Any, str]] = [
    ("nan", lambda d: d["spans"][1]["attributes"].update({"score": float("nan")}), "nan_inf"),
    ("inf", lambda d: d["attributes"].update({"cost_usd": float("inf")}), "nan_inf"),
    ("-inf", lambda d: d["spans"][0]["attributes"].update({"x": [float("-inf")]}), "nan_inf"),
    ("nul", lambda d: d["attributes"].update({"feature": "qa\x00"}), "nul"),
    ("nul-key", lambda d: d["attributes"].update({"k\x00": 1}), "nul"),
    ("surrogate", lambda d: d["spans"][1].update({"name": "chat \ud800"}), "surrogate"),
    (
        "deep",
        lambda d: d["spans"][1]["attributes"]["gen_ai.input.messages"][0].update(
            {"content": deep(600)}
        ),
        "depth",
    ),
    ("label", lambda d: d["attributes"].update({"prompt.version": "v" * 300}), "oversize"),
    (
        "model",
        lambda d: d["spans"][1]["attributes"].update({"gen_ai.request.model": "m" * 257}),
        "oversize",
    ),
    ("trace-id", lambda d: d.update({"trace_id": "t" * 300}), "format"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hostile.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def hostile(name: str) -> dict[str, Any]:
    doc = rag_trace(f"bad-{name}")
    change = next(c for n, c, _ in HOSTILE if n == name)
    change(doc)
    return doc


@pytest.mark.parametrize(("name", "cause"), [(n, c) for n, _, c in HOSTILE])
def test_parse_trace_refuses_with_field_and_cause(name: str, cause: str) -> None:
    with pytest.raises(TraceFormatError) as err:
        parse_trace(hostile(name))
    assert err.value.cause == cause
    assert ":" in str(err.value)  # "field: reason"


def test_json_problem_limits() -> None:
    assert json_problem(deep(MAX_DEPTH - 1)) is None
    found = json_problem({"a": deep(MAX_DEPTH)})
    assert found is not None and found.cause == "depth" and found.field.startswith("a.0")
    assert json_problem({"a": ["ok", 1.5, None, True, {"b": "é😀"}]}) is None


def test_label_width_matches_the_columns() -> None:
    columns = table_of(TraceRecord).c
    for name in ("trace_id", "prompt_version", "model", "feature", "tenant"):
        assert columns[name].type.length == MAX_LABEL_CHARS, name


@pytest.mark.parametrize("name", [n for n, _, _ in HOSTILE])
def test_ingest_jsonl_stores_the_valid_lines_around_a_hostile_one(
    store: Store, db_url: str, tmp_path: Path, name: str
) -> None:
    lines = [json.dumps(rag_trace(f"ok-{i}")) for i in range(10)]
    lines += [json.dumps(hostile(name))]
    lines += [json.dumps(rag_trace(f"ok-{i}")) for i in range(10, 20)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = ingest_jsonl(store, path)
    assert report.ingested == 20
    [(line, reason)] = report.errors
    assert line == 11 and ":" in reason
    assert store.count_traces() == 20


def test_cli_ingest_reports_the_line_and_keeps_the_rest(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [json.dumps(rag_trace(f"ok-{i}")) for i in range(10)]
    lines += [json.dumps(hostile("surrogate")), json.dumps(hostile("nul"))]
    lines += [json.dumps(rag_trace(f"ok-{i}")) for i in range(10, 20)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("EVALUATOR_DATABASE__URL", db_url)
    code = main(["ingest", str(path)])
    out, err = capsys.readouterr()
    assert f"{path}:11: spans.1.name: contains a lone surrogate" in err
    assert f"{path}:12: attributes.feature: contains a NUL" in err
    assert "20 new, 0 replaced, 2 rejected" in out
    assert code == 1  # something was refused; the rest is stored
    s = Store(db_url)
    assert s.count_traces() == 20
    s.close()


def test_ingest_traces_checks_trace_objects_too(store: Store) -> None:
    # A Trace built in Python without validation (model_construct) is checked like a
    # document: SQLite would store a 300-character ID that PostgreSQL refuses.
    from evaluator.traces.model import Trace

    good = [parse_trace(rag_trace(f"ok-{i}")) for i in range(3)]
    bad = Trace.model_construct(**{**good[0].__dict__, "trace_id": "x" * 300})
    report = ingest_traces(store, [good[0], bad, good[1], good[2]])
    assert report.ingested == 3 and store.count_traces() == 3
    [(index, reason)] = report.errors
    assert index == 1 and reason.startswith("trace_id:")


# --- OTLP ------------------------------------------------------------------------------------


@pytest.fixture
def assembler(store: Store, redis_url: str) -> Iterator[SpanAssembler]:
    client = redis.Redis.from_url(redis_url)
    yield SpanAssembler(store, client, key_prefix=f"h{uuid.uuid4().hex[:8]}", grace_s=0.0)
    client.close()


def test_sweep_quarantines_a_bad_trace_and_never_repushes(assembler: SpanAssembler) -> None:
    # Rows that reached the buffer before the checks existed (or by another writer): the
    # sweep refuses the bad trace once, saves the good ones, and a second sweep is quiet.
    rows = []
    for i in range(5):
        span = rag_trace(f"t{i}")["spans"][1]
        labels = {"prompt.version": "v" * 300} if i == 2 else {"prompt.version": "v1"}
        rows.append(
            {"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "is_root": True,
             "received_s": 0.0, "payload": {"span": span, "labels": labels}}
        )  # fmt: skip
    with assembler.store.engine.begin() as conn:
        conn.execute(insert(table_of(PendingSpan)), rows)
    done = assembler.complete(now=LATER)
    assert sorted(done) == [f"{i:032x}" for i in (0, 1, 3, 4)]
    assert assembler.pending_traces() == 0
    assert assembler.complete(now=LATER * 2) == []
    r = assembler.redis
    assert r is not None
    assert r.llen(intake_key(assembler.key_prefix)) == 4
    stats = r.hgetall(stats_key(assembler.key_prefix))
    assert stats[b"quarantined"] == b"1" and stats[b"quarantined:otlp:oversize"] == b"1"
    [entry] = r.lrange(quarantine_key(assembler.key_prefix), 0, -1)
    assert "attributes.prompt.version" in json.loads(entry)["reason"]


def test_a_failing_save_does_not_refill_intake(assembler: SpanAssembler) -> None:
    span = rag_trace("t")["spans"][1]
    row = {"trace_id": "a" * 32, "span_id": "b" * 16, "is_root": True, "received_s": 0.0,
           "payload": {"span": span, "labels": {}}}  # fmt: skip
    with assembler.store.engine.begin() as conn:
        conn.execute(insert(table_of(PendingSpan)), [row])
    real = assembler.store.save_traces

    def down(traces: Any) -> Any:
        from sqlalchemy.exc import OperationalError

        raise OperationalError("INSERT", {}, Exception("database restarting"))

    assembler.store.save_traces = down  # type: ignore[method-assign]
    for k in range(5):
        with pytest.raises(Exception, match="restarting"):
            assembler.complete(now=LATER + k)
    assert assembler.redis is not None
    assert assembler.redis.llen(intake_key(assembler.key_prefix)) == 1
    assembler.store.save_traces = real  # type: ignore[method-assign]
    assert assembler.complete(now=LATER * 2) == ["a" * 32]
    assert assembler.redis.llen(intake_key(assembler.key_prefix)) == 1
    time.sleep(0)
