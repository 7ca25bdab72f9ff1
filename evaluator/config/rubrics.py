"""Load rubric TOML files from a directory and validate them, naming file, key and fix."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evaluator.config.policy import policy_problems
from evaluator.errors import RubricError
from judges.options import options_problems
from judges.rubric import METHODS, Rubric


@dataclass(frozen=True, slots=True)
class RubricSet:
    rubrics: tuple[Rubric, ...]
    directory: Path

    def by_name(self, name: str) -> Rubric | None:
        return next((r for r in self.rubrics if r.name == name), None)


def _explain(path: Path, errors: list[Any]) -> list[str]:
    problems = []
    for err in errors:
        key = ".".join(str(p) for p in err["loc"]) or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key; the allowed keys: docs/concepts/rubrics.md"
        elif err["type"] == "missing":
            msg = "required key is missing; add it"
        got = err.get("input")
        shown = f" (got {got!r})" if err["type"] != "missing" and not isinstance(got, dict) else ""
        problems.append(f"{path}: key '{key}': {msg}{shown}")
    return problems


def _table_problems(source: Path, data: dict[str, Any]) -> list[str]:
    """[options] checked against the scorer's model and [regression] against the policy, key
    by key, so every problem is listed (the Rubric model reports each table as one error)."""
    problems = []
    scorer, method, options = data.get("scorer"), data.get("method"), data.get("options", {})
    if scorer in METHODS and isinstance(options, dict):
        method = method if method is not None else METHODS[scorer][0]
        if method in METHODS[scorer]:
            problems += [
                f"{source}: key 'options.{key}': {msg}"
                for key, msg in options_problems(scorer, method, options)
            ]
    regression = data.get("regression", {})
    if isinstance(regression, dict):
        problems += [f"{source}: key 'regression': {msg}" for msg in policy_problems(regression)]
    return problems


def parse_rubric(text: str, *, source: Path) -> Rubric:
    """Parse one rubric document; raise RubricError naming `source`, every bad key and the fix."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RubricError([f"{source}: invalid TOML: {exc}"]) from None
    problems = _table_problems(source, data)
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as exc:
        detailed = {"options"} if any("'options." in p for p in problems) else set()
        kept = [e for e in exc.errors() if not (e["loc"] and e["loc"][0] in detailed)]
        problems = _explain(source, kept) + problems
    if problems:
        raise RubricError(problems)
    return rubric


def load_rubrics(directory: Path) -> RubricSet:
    """Every *.toml in `directory`; all problems are collected before raising."""
    if not directory.is_dir():
        raise RubricError([f"{directory}: rubrics directory does not exist"])
    rubrics: list[Rubric] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            text = path.read_text(encoding="utf-8")
            rubric = parse_rubric(text, source=path)
        except UnicodeDecodeError:
            problems.append(f"{path}: not valid UTF-8 text")
            continue
        except RubricError as exc:
            problems.extend(exc.problems)
            continue
        if rubric.name in seen:
            problems.append(
                f"{path}: key 'name': {rubric.name!r} is already defined in {seen[rubric.name]}; "
                "rubric names must be unique"
            )
            continue
        seen[rubric.name] = path
        rubrics.append(rubric)
    if problems:
        raise RubricError(problems)
    if not rubrics:
        raise RubricError([f"{directory}: no *.toml rubric files found"])
    return RubricSet(rubrics=tuple(rubrics), directory=directory)


def pass_thresholds(directory: Path) -> dict[str, float]:
    """{rubric: pass_threshold} for the review queue; {} when the rubrics do not load (an
    unknown rubric then counts as 0.5): reading scores must not need valid rubric files."""
    try:
        return {r.name: r.pass_threshold for r in load_rubrics(directory).rubrics}
    except RubricError:
        return {}
