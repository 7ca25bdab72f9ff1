"""The README's code blocks, so that scenario tests run what a user copies, not a paraphrase."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(lang: str | None = None) -> list[str]:
    """Every fenced block of the README (optionally only those tagged `lang`), in order."""
    text = README.read_text(encoding="utf-8")
    return [body for tag, body in _BLOCK.findall(text) if lang is None or tag == lang]


def block_containing(needle: str, lang: str | None = None) -> str:
    found = [b for b in blocks(lang) if needle in b]
    assert found, f"the README has no {lang or ''} block containing {needle!r}"
    return found[0]


def example_trace() -> dict[str, Any]:
    """The trace of "The trace format" section (the one that invented a price)."""
    doc: dict[str, Any] = json.loads(block_containing('"trace_id": "4bf92f3577b34da6"', "json"))
    return doc


def command_lines() -> list[str]:
    """`evaluator ...` lines from the README's bash blocks, comments stripped."""
    lines = []
    for body in blocks("bash"):
        for line in body.splitlines():
            line = line.split("  #", 1)[0].strip()
            if "evaluator " in line:
                lines.append(line)
    return lines
