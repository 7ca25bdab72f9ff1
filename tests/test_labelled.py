"""The labelled-JSONL format: one reader for calibrate, anchors, feedback and datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluator.errors import InputError
from evaluator.sources.labelled import parse_item, read_labelled
from evaluator.traces.cases import build_case

TRACE = {
    "trace_id": "t1",
    "spans": [
        {"span_id": "c1", "name": "chat", "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.output.messages": [{"role": "assistant", "content": "A."}]}},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("label", "passed"),
    [("pass", True), ("faithful", True), (1, True), (True, True),
     ("fail", False), ("hallucinated", False), (0, False), (False, False)],
)  # fmt: skip
def test_label_spellings(label: object, passed: bool) -> None:
    assert parse_item({"trace": TRACE, "label": label}).passed is passed


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"trace": TRACE}, "needs a 'label' or a 'human_score'"),
        ({"trace": TRACE, "label": "maybe"}, "is not one of pass/fail"),
        ({"trace": TRACE, "human_score": 1.5}, "must lie in [0, 1]"),
        ({"trace": TRACE, "human_score": float("nan")}, "finite"),
        ({"trace": TRACE, "label": "pass", "lable": 1}, "unknown field(s) ['lable']"),
        ({"trace": TRACE, "label": "pass", "rubric": 3}, "rubric must be a string"),
    ],
)
def test_bad_items_name_the_field(doc: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_item(doc)
    assert needle in str(err.value)


def test_a_bad_line_names_its_number(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"trace": TRACE, "label": "pass"}) + "\n{not json\n")
    with pytest.raises(InputError, match=r"x\.jsonl:2:"):
        list(read_labelled(path))


def _record(source: object) -> dict[str, object]:
    return {"source_id": "s9", "source": source, "responses": [
        {"response": "The cafe serves pizza and has four stars.", "model": "m", "labels": []},
        {"response": "The cafe serves sushi.", "model": "m", "labels": [{"text": "sushi"}]},
    ]}  # fmt: skip


@pytest.mark.parametrize(
    "source",
    [
        {"question": "What does the cafe serve?", "passages": "passage 1: It serves pizza."},
        "The cafe serves pizza. Reviewers give it four stars.",  # a summary's article
        {"name": "Cafe Uno", "cuisine": "pizza", "stars": 4},  # a data-to-text record
    ],
    ids=["qa", "summary", "data2text"],
)
def test_ragtruth_style_records_of_every_task(tmp_path: Path, source: object) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_record(source)) + "\n")
    items = list(read_labelled(path))
    assert [i.passed for i in items] == [True, False]
    case = build_case(items[0].trace)
    assert case.contexts and case.question
    if isinstance(source, dict) and "stars" in source:
        assert json.loads(case.contexts[0].text)["stars"] == 4  # fields, not prose
