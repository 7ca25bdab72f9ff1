"""The CI check against fixed sleeps in tests (.ci/no_fixed_sleeps.py) flags what it should
and passes polls, loop turns and allow-listed sleeps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "no_fixed_sleeps", Path(__file__).resolve().parent.parent / ".ci" / "no_fixed_sleeps.py"
)
assert _SPEC is not None and _SPEC.loader is not None
check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check)

SOURCE = """
import asyncio
import time
from time import sleep as nap

def test_waits_on_the_clock():
    start_worker()
    time.sleep(0.5)

async def test_waits_in_a_helper():
    async def job():
        await asyncio.sleep(0.1)
    await job()

def test_bare_import():
    nap(1)

def test_polls():
    while not done():
        time.sleep(0.05)

async def test_turns():
    await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0.01)
"""


def _root(tmp_path: Path, source: str) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(source)
    return tmp_path


def _flagged(lines: list[str]) -> list[str]:
    return [line.split(": ", 1)[0] for line in lines]


def test_fixed_sleeps_are_flagged_and_polls_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "ALLOWED", {})
    assert _flagged(check.offences(_root(tmp_path, SOURCE))) == [
        "tests/test_x.py:8",  # time.sleep(0.5) after starting something
        "tests/test_x.py:12",  # asyncio.sleep in a nested helper, outside any loop
        "tests/test_x.py:16",  # `from time import sleep as nap`
    ]


def test_an_allowed_entry_passes_and_a_stale_one_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _root(tmp_path, "import time\ndef test_ttl():\n    time.sleep(2)\n")
    monkeypatch.setattr(check, "ALLOWED", {("tests/test_x.py", "test_ttl"): "the TTL itself"})
    assert check.offences(root) == []
    monkeypatch.setattr(check, "ALLOWED", {("tests/test_x.py", "gone"): "was removed"})
    found = check.offences(root)
    assert _flagged(found) == ["tests/test_x.py:3", "tests/test_x.py"]
    assert "matches no sleep any more" in found[1]


def test_the_repository_passes() -> None:
    assert check.offences() == []
