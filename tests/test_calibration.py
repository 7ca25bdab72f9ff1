from __future__ import annotations

import json
import zlib
from pathlib import Path

import httpx
import pytest
import respx

from evaluator.cli.main import main
from evaluator.worker.calibration import agreement, load_labelled
from judges.types import Score, Status

from .conftest import JUDGE_URL, chat_completion, make_settings, write_rubric

RAGTRUTH = Path(__file__).parents[2] / "shared" / "data" / "ragtruth_qa" / "ragtruth_qa.jsonl"
SAMPLE = Path(__file__).parents[1] / "evaluator" / "data" / "ragtruth_sample.jsonl"

LOCAL_FAITHFULNESS = """
name = "faithfulness"
version = "1"
scorer = "faithfulness"
method = "local"
pass_threshold = 0.6
"""


def test_agreement_counts_only_scored_cases() -> None:
    scores = [Score(status=Status.OK, value=v) for v in (0.9, 0.2, 0.8, 0.1)] + [Score.error("x")]
    labels = [False, True, False, True, True]
    m = agreement(labels, scores, threshold=0.5, min_scored=4)
    assert m["auroc"] == 1.0 and m["balanced_accuracy"] == 1.0 and m["f1"] == 1.0
    assert m["confusion"] == {"tp": 2, "fp": 0, "tn": 2, "fn": 0}


def test_labelled_traces_are_read_and_unlabelled_ones_refused(tmp_path: Path) -> None:
    assert len(load_labelled(SAMPLE)) == 44
    bad = tmp_path / "bad.jsonl"
    doc = json.loads(SAMPLE.read_text().splitlines()[0])
    del doc["attributes"]["ragtruth.hallucinated"]
    bad.write_text(json.dumps(doc) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: no .trace. and no boolean"):
        load_labelled(bad)


def test_calibrate_cli_reports_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_rubric(tmp_path / "rubrics", "faithfulness", LOCAL_FAITHFULNESS)
    settings = tmp_path / "s.toml"
    settings.write_text(f'[rubrics]\ndir = "{tmp_path / "rubrics"}"\n')
    data = RAGTRUTH if RAGTRUTH.exists() else SAMPLE
    code = main(
        [
            "--settings",
            str(settings),
            "calibrate",
            "--data",
            str(data),
            "--rubric",
            "faithfulness",
            "--limit",
            "40",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 40 and report["scored"] == 40
    cm = report["metrics"]["confusion"]
    assert sum(cm.values()) == 40
    assert 0.5 < report["metrics"]["auroc"] <= 1.0
    assert (
        main(["--settings", str(settings), "calibrate", "--data", str(data), "--rubric", "nope"])
        == 2
    )


def test_judge_hygiene_warns_about_self_preference_and_verbosity() -> None:
    from judges.hygiene import hygiene_warnings

    lengths = [100, 200, 300, 400, 500, 600]
    longer_scores_higher = [0.1, 0.2, 0.4, 0.5, 0.7, 0.9]
    warnings = hygiene_warnings("gpt-4o", ["gpt-4o-mini"], lengths, longer_scores_higher)
    assert len(warnings) == 2
    assert "own model or family" in warnings[0] and "verbosity" in warnings[1]
    assert hygiene_warnings("claude-3-5-sonnet", ["gpt-4o"], lengths, [0.5] * 6) == []


def test_agreement_is_withheld_below_the_minimum_and_says_how_many_more() -> None:
    scores = [Score(status=Status.OK, value=0.0)] * 3 + [Score.error("cut")] * 17
    labels = [True, False, True] + [False] * 17
    m = agreement(labels, scores, threshold=0.5)
    assert "auroc" not in m and "balanced_accuracy" not in m
    assert m["needed"] == 17 and "17 more scored cases (minimum 20)" in m["refused"]
    enough = [Score(status=Status.OK, value=0.2 if i % 2 else 0.8) for i in range(20)]
    assert "auroc" in agreement([bool(i % 2) for i in range(20)], enough, threshold=0.5)
    one_class = agreement([True] * 20, enough, threshold=0.5)
    assert "5 more scored faithful cases" in one_class["refused"]


JUDGED = """
name = "judged"
version = "1"
scorer = "llm_rubric"
pass_threshold = 0.5
[llm_rubric]
criteria = "Is every claim of the answer supported by the documents?"
inputs = ["question", "contexts", "answer"]
"""


@respx.mock
def test_calibrate_leads_with_errors_withholds_metrics_and_warns_on_constant_scores(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29's bad judge: most replies cut at the token limit, the rest one score."""
    write_rubric(tmp_path / "rubrics", "judged", JUDGED)
    make_settings(tmp_path, redis_url, judge={"base_url": JUDGE_URL, "max_retries": 0})

    def reply(request: httpx.Request) -> httpx.Response:
        first = json.loads(request.content)["messages"][1]["content"]
        cut = zlib.crc32(first.encode()) % 10 < 8  # the same case is cut on its retry too
        if cut:
            body = chat_completion('{"reasoning": "The answer', finish_reason="length")
        else:
            body = chat_completion(json.dumps({"reasoning": "fine", "score": 5}))
        return httpx.Response(200, json=body)

    route = respx.post(f"{JUDGE_URL}/chat/completions").mock(side_effect=reply)
    argv = ["--settings", str(tmp_path / "settings.toml"), "calibrate", "--data", str(SAMPLE),
            "--rubric", "judged", "--limit", "20"]  # fmt: skip
    assert main([*argv, "--json"]) == 6  # ran, and cannot answer yet
    report = json.loads(capsys.readouterr().out)
    errors = report["errors"]
    assert errors > 10 and report["error_kinds"] == {"judge_truncated": errors}
    assert report["error_share"] == errors / 20 and report["scored"] == 20 - errors
    assert report["metrics"]["needed"] >= 20 - report["scored"]
    assert "auroc" not in report["metrics"]
    assert any(w.startswith("constant scores") for w in report["warnings"])
    assert route.call_count == 2 * errors + report["scored"]  # one retry per cut reply

    assert main(argv) == 6
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"errors: {errors}/20") and "judge_truncated" in text[0]
    assert "agreement metrics withheld" in text[2] and "AUROC" not in "\n".join(text)
