"""Run the `evaluator` command as a user does: a real process, settings from a file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def evaluator_command() -> list[str]:
    """The console script of this interpreter's environment, else `python -m evaluator.cli`."""
    script = Path(sys.executable).with_name("evaluator")
    if script.exists():
        return [str(script)]
    found = shutil.which("evaluator")
    return [found] if found else [sys.executable, "-m", "evaluator.cli"]


def run(
    *args: str,
    settings: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if settings is not None:
        full_env["EVALUATOR_SETTINGS"] = str(settings)
    proc = subprocess.run(
        [*evaluator_command(), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"`evaluator {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
