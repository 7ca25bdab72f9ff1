"""The README's first command, verbatim, in a fresh virtual environment and a copy of the
checkout: install, then `evaluator demo`, then `evaluator scores`.

Slow by nature (a real `pip install`, ~40 s with a warm pip cache); it is the only test that
catches a missing dependency or package-data entry, which an editable dev install hides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.scenarios.readme import block_containing

ROOT = Path(__file__).resolve().parents[2]


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in filter(None, files):
        rel = Path(raw.decode())
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        else:
            shutil.copy2(src, dest / rel)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_install_and_demo_in_a_fresh_venv(tmp_path: Path) -> None:
    command = block_containing("evaluator demo", "bash").strip().splitlines()[0]
    assert command.startswith("python3 -m venv .venv"), command
    checkout = tmp_path / "checkout"
    _copy_checkout(checkout)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not Path(p, "activate").exists()
    )
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        ["bash", "-c", f"set -e; {command}; evaluator scores --json > scores.json"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Ingested 44 traces" in out, out[-4000:]
    assert "faithfulness" in out
    assert "Judge: not configured" in out
    scores = (checkout / "scores.json").read_text()
    assert '"rubric": "faithfulness"' in scores
