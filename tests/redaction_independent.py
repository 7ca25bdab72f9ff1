"""Scoring the redactor on the independent corpus (tests/fixtures/redaction_independent.jsonl).

The corpus was written from public descriptions of secret formats and PII (each case names its
`source`) and committed before the patterns were broadened, so it measures what the pattern
authors did not shape. A positive case is caught when no secret leaks and at least one
placeholder of an expected kind appears; a benign text is a false positive when anything in it
is replaced.

Leak rule: both sides are compared as their alphanumeric characters after NFKC with
default-ignorable characters removed, so a secret that survives with its separators, zero-width
characters or full-width forms changed still counts as leaked. A secret leaks if any run of 6 of
its characters (all of it when shorter) that occurs nowhere else in the input occurs in the output.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "fixtures" / "redaction_independent.jsonl"
WINDOW = 6
_PLACEHOLDER = re.compile(r"\[([A-Z_]+)_\d+\]")


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    kinds: tuple[str, ...]
    secrets: tuple[str, ...]
    text: str
    source: str

    @property
    def benign(self) -> bool:
        return not self.secrets


def load(path: Path = CORPUS) -> list[Case]:
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        raw = json.loads(line)
        raw["kinds"], raw["secrets"] = tuple(raw["kinds"]), tuple(raw["secrets"])
        cases.append(Case(**raw))
    return cases


def core(text: str) -> str:
    """The alphanumeric skeleton: NFKC, default-ignorables dropped, separators dropped."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in folded if ch.isalnum())


def _windows(value: str) -> set[str]:
    n = min(WINDOW, len(value))
    return {value[i : i + n] for i in range(len(value) - n + 1)}


def leaked(case: Case, out: str) -> list[str]:
    """The secrets of `case` whose characters survive in `out`."""
    out_core = core(_PLACEHOLDER.sub(" ", out))
    found = []
    for secret in case.secrets:
        rest = core(case.text.replace(secret, " "))
        telling = {w for w in _windows(core(secret)) if w not in rest}
        if any(w in out_core for w in telling):
            found.append(secret)
    return found


def placeholder_kinds(out: str) -> set[str]:
    return set(_PLACEHOLDER.findall(out))


def caught(case: Case, out: str) -> bool:
    return not leaked(case, out) and bool(placeholder_kinds(out) & set(case.kinds))


def false_positive(case: Case, out: str) -> bool:
    return out != case.text


@dataclass
class Tally:
    cases: int = 0
    hits: int = 0  # caught positives, or benign texts left alone

    @property
    def rate(self) -> float:
        return self.hits / self.cases if self.cases else float("nan")


def score(
    cases: Iterable[Case], redact: Callable[[str], str], limits: Iterable[str] = ()
) -> tuple[dict[str, Tally], list[tuple[Case, str]]]:
    """Per-family tallies and the failures (case, output). Cases listed in `limits` (documented
    limits) count as misses whatever the redactor does, and are not listed as failures."""
    documented = set(limits)
    tallies: dict[str, Tally] = {}
    failures: list[tuple[Case, str]] = []
    for case in cases:
        out = redact(case.text)
        ok = (not false_positive(case, out)) if case.benign else caught(case, out)
        tally = tallies.setdefault(case.family, Tally())
        tally.cases += 1
        if case.id in documented:
            continue
        tally.hits += ok
        if not ok:
            failures.append((case, out))
    return tallies, failures
