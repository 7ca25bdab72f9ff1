from __future__ import annotations

import itertools
import json
import random

import pytest

from judges.scorers.local import score_faithfulness_local
from judges.scorers.local_calibration import (
    CALIBRATION,
    TASKS,
    calibrate,
    calibration_key,
    detect_task,
)
from judges.text import lcs_length
from judges.types import Context, EvalCase

ARTICLE = "The council approved the new bridge on Monday after a long debate. " * 10


@pytest.mark.parametrize(
    ("question", "contexts", "claims", "task"),
    [
        ("Who approved the bridge?", [ARTICLE], 2, "qa"),
        ("", [ARTICLE], 3, "summary"),
        ("", [ARTICLE], 1, "extreme_summary"),
        ("", [json.dumps({"name": "Hotel Adria", "stars": 4})], 1, "data_to_text"),
        ("Describe it", ['[{"name": "Adria"}]', ARTICLE], 2, "data_to_text"),
        ("User: hi there\nAssistant: hello\nUser: what is the bridge?", [ARTICLE], 1, "dialogue"),
        ("", ["Alice: hi\nBob: hello\nAlice: the bridge?\nBob: approved"], 1, "dialogue"),
        ("", ["short note"], 1, "other"),
        ("", [ARTICLE, ARTICLE], 2, "other"),
    ],
)
def test_detect_task_from_structure(
    question: str, contexts: list[str], claims: int, task: str
) -> None:
    assert detect_task(question, contexts, claims) == task


def test_prose_with_a_colon_or_two_is_not_a_dialogue() -> None:
    text = "Note: the bridge opens in May. " + ARTICLE + "\nPhoto: council"
    assert detect_task("", [text], 2) == "summary"


def test_every_task_has_a_calibration_and_unlabelled_ones_use_the_pooled_map() -> None:
    for task in TASKS:
        assert calibration_key(task) in CALIBRATION
    for task in ("data_to_text", "dialogue", "other"):
        assert calibration_key(task) == "pooled"
    assert calibration_key("qa") == "qa"


@pytest.mark.parametrize("task", TASKS)
def test_calibration_is_monotone_and_bounded(task: str) -> None:
    values = [calibrate(z / 4, task) for z in range(-80, 81)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a < b for a, b in itertools.pairwise(values[60:100]))  # strictly, mid-range
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert calibrate(1e9, task) <= 1.0 and calibrate(-1e9, task) >= 0.0


def test_calibration_table_argument_overrides_and_falls_back_to_pooled() -> None:
    table = {"qa": (2.0, -1.0), "pooled": (1.0, 0.0)}
    assert calibrate(0.5, "qa", table) == pytest.approx(0.5)
    assert calibrate(0.0, "dialogue", table) == pytest.approx(0.5)


def test_scorer_reports_the_detected_task() -> None:
    case = EvalCase(
        trace_id="t",
        span_id="s",
        question="",
        answer="The council approved the new bridge on Monday.",
        contexts=(Context("article", ARTICLE),),
    )
    score = score_faithfulness_local(case)
    assert score.details["task"] == "extreme_summary"
    assert score.details["calibration"] == "extreme_summary"
    assert score.details["local_method_version"] == "2.1"


def _lcs_dp(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_bit_parallel_lcs_matches_dynamic_programming() -> None:
    rng = random.Random(3)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        assert lcs_length(a, b) == _lcs_dp(a, b)
    assert lcs_length(["a", "b"], []) == 0
    assert lcs_length(["the", "cat", "sat"], ["the", "black", "cat", "sat", "down"]) == 3


def test_news_captions_are_not_dialogue_turns() -> None:
    article = "Injured: the driver was taken to hospital.\n" + ARTICLE + "\nTragic: a photo.\n"
    article += "Aftermath: the road was closed.\n" + "\n".join([ARTICLE] * 3)
    assert detect_task("", [article], 3) == "summary"
