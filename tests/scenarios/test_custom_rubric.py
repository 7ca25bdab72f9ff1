"""A user writes a rubric of their own, gets it wrong, and `evaluator rubrics check` says
every problem of the file with the key and the fix; fixed, the same command passes."""

from __future__ import annotations

from pathlib import Path

from tests.scenarios.cli import run

BROKEN = """
name = "grounded"
version = "1"
scorer = "faithfulness"
method = "cascade"
pass_threshold = 0.8
[options]
local_treshold = 0.5
cascade_margin = 5
no_claims = "maybe"
[regression]
windw = "6h"
"""
FIXED = """
name = "grounded"
version = "1"
scorer = "faithfulness"
method = "cascade"
pass_threshold = 0.8
[options]
local_threshold = 0.5
audit_rate = 0.2
[regression]
window = "6h"
"""


def test_a_broken_custom_rubric_is_explained_then_accepted(tmp_path: Path) -> None:
    rubrics = tmp_path / "my-rubrics"
    rubrics.mkdir()
    (rubrics / "grounded.toml").write_text(BROKEN)
    broken = run("rubrics", "check", str(rubrics), check=False)
    out = broken.stdout + broken.stderr
    assert broken.returncode == 1, out
    assert "Traceback" not in out
    assert "grounded.toml" in out
    assert "did you mean 'local_threshold'" in out  # a near miss, named
    assert "cascade_margin" in out and "no_claims" in out  # every problem, not the first
    assert "removed" in out and "audit_rate" in out  # a key of 0.0.x: what replaced it
    assert "windw" in out and "did you mean 'window'" in out
    (rubrics / "grounded.toml").write_text(FIXED)
    fixed = run("rubrics", "check", str(rubrics))
    assert "grounded" in fixed.stdout
