"""docs/reliability.md names the test behind each promise: every one it names exists.

A renamed or deleted test would leave a promise with nothing behind it; this keeps the
table honest. `::name` alone continues the file named just before it in the same cell.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
REF = re.compile(r"`((?:tests/)?[\w/]+\.py)?::(\w+)`")


def _referenced() -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    for line in DOC.read_text().splitlines():
        current: str | None = None
        for path, name in REF.findall(line):
            if path:
                current = path if path.startswith("tests/") else f"tests/{path}"
            assert current is not None, f"'::{name}' with no file before it: {line[:80]}"
            refs.append((current, name))
    return refs


def test_every_test_the_reliability_doc_names_exists() -> None:
    refs = _referenced()
    assert len(refs) >= 30  # the table cites its tests; a parse that finds none is broken
    missing = []
    for path, name in refs:
        source = ROOT / path
        if not source.is_file() or not re.search(
            rf"^(async )?def {name}\(", source.read_text(), re.MULTILINE
        ):
            missing.append(f"{path}::{name}")
    assert missing == []
