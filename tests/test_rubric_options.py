"""Typed rubric options and storable names: refused by `rubrics check` and at start-up,
every problem of a file listed with its key, the allowed values and a "did you mean"."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from evaluator.cli.main import main
from evaluator.config.rubrics import load_rubrics
from evaluator.errors import RubricError
from judges.options import options_problems
from judges.rubric import Rubric
from tests.conftest import write_rubric

FAITH = """
name = "faith"
version = "1"
scorer = "faithfulness"
method = "cascade"
"""


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str) -> tuple[int, str]:
    write_rubric(tmp_path, "faith", body)
    code = main(["rubrics", "check", str(tmp_path)])
    return code, capsys.readouterr().err


def test_every_bad_option_of_a_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = FAITH + '[options]\naudit_rate = 5\nlocal_treshold = 0.4\nmystery = 1\nno_claims = "x"\n'
    code, err = check(tmp_path, capsys, body)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 4, err
    assert "faith.toml: key 'options.audit_rate': must be a number from 0 to 1; got 5" in err
    assert "key 'options.local_treshold': unknown key; did you mean 'local_threshold'?" in err
    assert "key 'options.mystery': unknown key; allowed: local_threshold, no_claims" in err
    assert "key 'options.no_claims': must be one of 'pass' or 'skip'; got 'x'" in err


def test_self_consistency_samples_must_be_an_integer() -> None:
    assert options_problems("self_consistency", "judge", {"samples": "three"}) == [
        ("samples", "must be an integer from 1 to 20; got 'three'")
    ]
    assert options_problems("self_consistency", "judge", {"samples": True})
    assert options_problems("self_consistency", "judge", {"samples": 5}) == []


def test_an_option_the_method_does_not_read_is_refused() -> None:
    (problem,) = options_problems("faithfulness", "judge", {"audit_rate": 0.2})
    assert problem[0] == "audit_rate" and "only by method cascade" in problem[1]


def test_the_removed_cascade_margin_is_refused_naming_its_replacement() -> None:
    """0.1.0 passes nothing locally on an uncertified margin: the old key is an error that
    says what replaced it, not a silently ignored or misspelt-looking key."""
    (problem,) = options_problems("faithfulness", "cascade", {"cascade_margin": 0.25})
    assert problem[0] == "cascade_margin" and problem[1].startswith("removed")
    assert "certification" in problem[1] and "alpha, delta, audit_rate" in problem[1]
    with pytest.raises(ValidationError, match="cascade_margin: removed"):
        Rubric.model_validate(
            {"name": "f", "version": "1", "scorer": "faithfulness", "method": "cascade",
             "options": {"cascade_margin": 0.25}}
        )  # fmt: skip


def test_the_cascade_guarantee_options_are_bounded() -> None:
    assert options_problems("faithfulness", "cascade", {"alpha": 0}) == [
        ("alpha", "must be a number strictly between 0 and 1; got 0")
    ]
    assert options_problems("faithfulness", "cascade", {"delta": 1.0}) == [
        ("delta", "must be a number strictly between 0 and 1; got 1.0")
    ]
    assert options_problems("faithfulness", "cascade", {"audit_rate": -0.1}) == [
        ("audit_rate", "must be a number from 0 to 1; got -0.1")
    ]
    assert options_problems("faithfulness", "cascade", {"audit_rate": "10%"})
    ok = {"alpha": 0.01, "delta": 0.05, "audit_rate": 0.0}
    assert options_problems("faithfulness", "cascade", ok) == []


def test_typed_options_feed_the_scorer_accessors() -> None:
    from judges.scorers.faithfulness import local_threshold
    from judges.scorers.faithfulness_prompts import no_claims_policy

    r = Rubric.model_validate(
        {
            "name": "f",
            "version": "1",
            "scorer": "faithfulness",
            "method": "cascade",
            "options": {"local_threshold": 0.4, "no_claims": "skip"},
        }
    )
    assert (local_threshold(r), no_claims_policy(r)) == (0.4, "skip")
    assert (r.typed_options.alpha, r.typed_options.delta, r.typed_options.audit_rate) == (
        0.05,
        0.1,
        0.1,
    )
    default = Rubric.model_validate({"name": "f", "version": "1", "scorer": "faithfulness"})
    assert local_threshold(default) == 0.5


def test_regression_table_checked_key_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = FAITH + '[regression]\nwindw = "6h"\nmin_samples = "30"\narl = inf\n'
    code, err = check(tmp_path, capsys, body)
    assert code == 1
    assert "key 'regression': unknown key 'windw'; did you mean 'window'?" in err
    assert "min_samples: must be an integer, got '30'" in err
    assert "arl: must be a finite number" in err


@pytest.mark.parametrize(
    ("version", "why"),
    [("\\u0000", "NUL"), ("\\ud800", None), ("x" * 65, "at most 64 characters")],
)
def test_versions_that_cannot_be_stored_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str, why: str | None
) -> None:
    body = FAITH.replace('version = "1"', f'version = "{version}"')
    code, err = check(tmp_path, capsys, body)
    assert code == 1
    assert "key 'version'" in err or "invalid TOML" in err
    if why:
        assert why in err


def test_storable_labels_and_judge_model() -> None:
    with pytest.raises(ValidationError, match="NUL"):
        Rubric.model_validate({**_base(), "applies_to": {"tenants": ["a\x00"]}})
    with pytest.raises(ValidationError, match="lone surrogate"):
        Rubric.model_validate({**_base(), "judge": {"model": "m\udc80"}})


def _base() -> dict[str, str]:
    return {"name": "f", "version": "1", "scorer": "faithfulness"}


def test_worker_start_up_refuses_the_same_file(tmp_path: Path) -> None:
    write_rubric(tmp_path, "faith", FAITH + "[options]\nlocal_treshold = 0.4\n")
    with pytest.raises(RubricError) as info:
        load_rubrics(tmp_path)
    assert "did you mean 'local_threshold'" in info.value.problems[0]
