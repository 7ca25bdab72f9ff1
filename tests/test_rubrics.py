from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluator.cli.main import main
from evaluator.config.rubrics import load_rubrics, parse_rubric
from evaluator.config.settings import SHIPPED_RUBRICS_DIR
from evaluator.errors import RubricError

from .conftest import TONE_RUBRIC, write_rubric


def test_shipped_rubrics_are_valid() -> None:
    rubrics = load_rubrics(SHIPPED_RUBRICS_DIR)
    names = {r.name for r in rubrics.rubrics}
    assert {"faithfulness", "answer_relevance", "context_relevance", "self_consistency"} <= names


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("name = 'x'\nversion = '1'\nscorer = 'llm_rubric'\n[llm_rubric\n", ["invalid TOML"]),
        ("version = '1'\nscorer = 'faithfulness'\n", ["key 'name'", "required key is missing"]),
        ("name = 'x'\nversion = '1'\nscorer = 'vibes'\n", ["key 'scorer'", "'vibes'"]),
        (
            "name = 'x'\nversion = '1'\nscorer = 'faithfulness'\nmethod = 'embeddings'\n",
            ["method 'embeddings' is not available", "use one of judge, local"],
        ),
        (
            "name = 'x'\nversion = '1'\nscorer = 'faithfulness'\n[sampling]\nrate = 1.5\n",
            ["key 'sampling.rate'", "1.5"],
        ),
        (
            "name = 'x'\nversion = '1'\nscorer = 'faithfulness'\ntreshold = 0.5\n",
            ["key 'treshold'", "unknown key"],
        ),
        ("name = 'x'\nversion = '1'\nscorer = 'llm_rubric'\n", ["needs an [llm_rubric] table"]),
        ("name = 'Bad Name'\nversion = '1'\nscorer = 'faithfulness'\n", ["key 'name'"]),
        (
            "name = 'x'\nversion = '1'\nscorer = 'llm_rubric'\n[scale]\nmin = 5\nmax = 1\n"
            "[llm_rubric]\ncriteria = 'c'\n",
            ["scale.max (1) must be greater"],
        ),
    ],
)
def test_broken_rubric_names_file_key_and_fix(
    tmp_path: Path, body: str, fragments: list[str]
) -> None:
    path = write_rubric(tmp_path, "broken", body)
    with pytest.raises(RubricError) as err:
        load_rubrics(tmp_path)
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_all_problems_are_collected_and_duplicates_refused(tmp_path: Path) -> None:
    write_rubric(tmp_path, "a", TONE_RUBRIC)
    write_rubric(tmp_path, "b", TONE_RUBRIC)
    write_rubric(tmp_path, "c", "name = 'c'\n")
    with pytest.raises(RubricError) as err:
        load_rubrics(tmp_path)
    assert len(err.value.problems) >= 3
    assert any("already defined" in p for p in err.value.problems)


def test_rubrics_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good"
    write_rubric(good, "tone", TONE_RUBRIC)
    assert main(["rubrics", "check", str(good)]) == 0
    assert "ok  tone@1" in capsys.readouterr().out
    bad = tmp_path / "bad"
    write_rubric(bad, "tone", TONE_RUBRIC.replace("rate = 1.0", "rate = 'often'"))
    assert main(["rubrics", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "tone.toml" in err and "sampling.rate" in err
    assert main(["rubrics", "check", str(tmp_path / "missing")]) == 2  # a missing file: usage


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_loader_never_crashes_on_arbitrary_text(text: str) -> None:
    try:
        parse_rubric(text, source=Path("fuzz.toml"))
    except RubricError as exc:
        assert all(p.startswith("fuzz.toml") for p in exc.problems)


def test_bad_regression_table_is_refused_by_rubrics_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_rubric(tmp_path, "tone", TONE_RUBRIC + '[regression]\nwindow = "often"\n')
    assert main(["rubrics", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "tone.toml: key 'regression': window:" in err and "'often'" in err
