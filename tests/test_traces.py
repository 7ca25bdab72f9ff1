from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluator.errors import CaseBuildError, TraceFormatError
from evaluator.sources.ingest import ingest_jsonl, ingest_traces
from evaluator.sources.ragtruth import record_to_traces, split_passages
from evaluator.store.store import Store
from evaluator.traces.cases import build_case
from evaluator.traces.model import parse_trace, parse_trace_json

from .conftest import rag_trace

RAGTRUTH = Path(__file__).parents[2] / "shared" / "data" / "ragtruth_qa" / "ragtruth_qa.jsonl"
SAMPLE = Path(__file__).parents[1] / "evaluator" / "data" / "ragtruth_sample.jsonl"


def test_rag_trace_becomes_an_eval_case() -> None:
    trace = parse_trace(rag_trace("t1", documents=["A", "B"], status="error"))
    case = build_case(trace)
    assert case.trace_id == "t1" and case.span_id == "t1-c"
    assert case.question == "What is the capital of France?"
    assert case.answer == "Paris is the capital of France."
    assert [c.text for c in case.contexts] == ["A", "B"]
    assert case.labels == {
        "prompt_version": "v1",
        "model": "gpt-4o-mini",
        "feature": "qa",
        "tenant": "acme",
    }
    assert trace.is_error and trace.latency_ms == pytest.approx(1100)


def test_plain_content_messages_are_accepted() -> None:
    doc = rag_trace("t2")
    attrs = doc["spans"][1]["attributes"]
    attrs["gen_ai.input.messages"] = [{"role": "user", "content": "Q?"}]
    attrs["gen_ai.output.messages"] = [{"role": "assistant", "content": "A."}]
    attrs["evaluator.samples"] = ["A.", "B."]
    case = build_case(parse_trace(doc))
    assert (case.question, case.answer, case.samples) == ("Q?", "A.", ("A.", "B."))


def test_trace_without_generation_span_cannot_be_evaluated() -> None:
    doc = rag_trace("t3")
    doc["spans"] = doc["spans"][:1]
    with pytest.raises(CaseBuildError, match="no generation span"):
        build_case(parse_trace(doc))


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([], "must be a JSON object"),
        ({"spans": [{"span_id": "a"}]}, "trace_id"),
        ({"trace_id": "t", "spans": []}, "spans"),
        ({"trace_id": "t", "spans": [{"span_id": 5}]}, "spans.0.span_id"),
        ({"trace_id": "t", "spans": [{"span_id": "a", "status": "weird"}]}, "spans.0.status"),
        ({"trace_id": "t", "spans": [{"span_id": "a"}, {"span_id": "a"}]}, "more than once"),
        ({"trace_id": " padded", "spans": [{"span_id": "a"}]}, "trace_id"),
        ({"trace_id": "t", "spans": [{"span_id": "a", "start_time": "yesterday"}]}, "start_time"),
    ],
)
def test_malformed_traces_name_the_field(document: object, fragment: str) -> None:
    with pytest.raises(TraceFormatError, match=fragment):
        parse_trace(document)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"trace_id": "t", "spans": [', "invalid JSON"),
        (b"\xff\xfe not utf8", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"null", "JSON object"),
    ],
)
def test_malformed_json_is_a_clear_error(raw: bytes, fragment: str) -> None:
    with pytest.raises(TraceFormatError, match=fragment):
        parse_trace_json(raw)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
        max_leaves=20,
    )
)
def test_parser_never_crashes_on_arbitrary_json(document: object) -> None:
    try:
        trace = parse_trace(document)
    except TraceFormatError:
        return
    with contextlib.suppress(CaseBuildError):
        build_case(trace)


def test_ingest_jsonl_reports_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    good = [json.dumps(rag_trace(f"ok-{i}")) for i in range(3)]
    path.write_bytes(
        "\n".join(
            [good[0], "{not json", good[1], "", json.dumps({"trace_id": "x"}), good[2]]
        ).encode()
        + b"\n\xff\xfe\n"
    )
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    report = ingest_jsonl(store, path)
    assert report.ingested == 3
    assert [line for line, _ in report.errors] == [2, 5, 7]
    assert "invalid JSON" in report.errors[0][1]
    assert "spans" in report.errors[1][1]
    assert store.count_traces() == 3
    # Re-ingesting replaces, it does not duplicate.
    again = ingest_traces(store, [rag_trace("ok-0", answer="changed")])
    assert (again.ingested, again.replaced) == (0, 1)
    stored = store.get_trace("ok-0")
    assert stored is not None and build_case(stored).answer == "changed"


def test_split_passages() -> None:
    assert split_passages("passage 1:alpha\n\npassage 2: beta") == ["alpha", "beta"]
    assert split_passages("no markers") == ["no markers"]
    assert split_passages("") == []


def test_packaged_sample_is_valid_and_labelled() -> None:
    traces = [parse_trace_json(line) for line in SAMPLE.read_text().splitlines()]
    assert len(traces) == 44
    assert sum(bool(t.attributes["ragtruth.hallucinated"]) for t in traces) == 12
    assert all(build_case(t).contexts for t in traces)


@pytest.mark.skipif(not RAGTRUTH.exists(), reason="shared RAGTruth data not present")
def test_whole_ragtruth_file_converts() -> None:
    total = 0
    for line in RAGTRUTH.read_text().splitlines():
        for doc in record_to_traces(json.loads(line)):
            case = build_case(parse_trace(doc))
            assert case.answer and case.contexts
            total += 1
    assert total == 817
