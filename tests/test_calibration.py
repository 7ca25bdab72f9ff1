from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluator.cli.main import main
from evaluator.worker.calibration import agreement, load_labelled
from judges.types import Score, Status

from .conftest import write_rubric

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
    m = agreement(labels, scores, threshold=0.5)
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
