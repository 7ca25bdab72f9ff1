"""The code blocks of the README and the documentation pages (docs/), so that scenario tests
run what a user copies, not a paraphrase. The README comes first: its first block is the
install command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def pages() -> list[Path]:
    """The README, then every hand-written page of the documentation site, in path order
    (the reference pages are generated at build time and are not files)."""
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def tagged_blocks() -> list[tuple[str, str]]:
    """(tag, body) of every fenced block of every page, in order."""
    return [found for page in pages() for found in _BLOCK.findall(page.read_text("utf-8"))]


def blocks(lang: str | None = None) -> list[str]:
    """Every fenced block (optionally only those tagged `lang`), README first."""
    return [body for tag, body in tagged_blocks() if lang is None or tag == lang]


def block_containing(needle: str, lang: str | None = None) -> str:
    found = [b for b in blocks(lang) if needle in b]
    assert found, f"neither the README nor docs/ has a {lang or ''} block containing {needle!r}"
    return found[0]


def example_trace() -> dict[str, Any]:
    """The trace of "The trace format" section (the one that invented a price)."""
    doc: dict[str, Any] = json.loads(block_containing('"trace_id": "4bf92f3577b34da6"', "json"))
    return doc


def command_lines() -> list[str]:
    """`evaluator ...` lines from the bash blocks of the README and docs/, comments stripped."""
    lines = []
    for body in blocks("bash"):
        for line in body.splitlines():
            line = line.split("  #", 1)[0].strip()
            if "evaluator " in line:
                lines.append(line)
    return lines
