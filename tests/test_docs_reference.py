"""The documentation site's reference pages (docs/gen_reference.py) cover the code they are
generated from: every settings key with its environment variable and its default as a
process without overrides sees it, every command and flag of the parser, every exit code.

The pages are generated at build time (`mkdocs build --strict` in .ci/run), so they cannot
be stale; what this checks is that the generator leaves nothing out and renders what the
code says, by walking the settings, the packaged settings.toml and the parser on its own.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from evaluator.cli.main import build_parser
from evaluator.config import policy
from evaluator.config.settings import DEFAULTS_FILE, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs/gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _rows(page: str) -> dict[str, list[str]]:
    """`key` -> the cells of its row, from the settings page's tables."""
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def _flatten(data: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        here = (*path, key)
        if here == ("pricing",):
            for field in ("input_per_mtok", "output_per_mtok"):
                yield f'pricing."MODEL".{field}', None
        elif isinstance(value, dict) and here != ("otel_export", "headers"):
            yield from _flatten(value, here)
        else:
            yield ".".join(here), value


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def test_every_settings_key_has_its_row_env_name_and_default(gen: ModuleType) -> None:
    rows = _rows(gen.settings_page())
    effective = load_settings(environ={}).model_dump(mode="python")
    keys = dict(_flatten(effective))
    assert len(keys) >= 100  # a walk that finds nothing would pass everything below
    for key, value in keys.items():
        assert key in rows, f"settings reference lacks {key}"
        env = "EVALUATOR_" + "__".join(p.upper() for p in key.split("."))
        env = env.replace('__"MODEL"__', "__<MODEL>__")
        assert rows[key][3] == f"`{env}`", (key, rows[key][3])
        if value is not None and not key.startswith("alerts.policy."):
            assert rows[key][2] == f"`{_literal(value)}`".replace("|", "\\|"), (key, rows[key])


def test_every_key_of_the_packaged_file_and_policy_is_in_the_reference(gen: ModuleType) -> None:
    rows = _rows(gen.settings_page())
    packaged = tomllib.loads(DEFAULTS_FILE.read_text(encoding="utf-8"))
    assert {k for k, _ in _flatten(packaged)} <= set(rows)
    for name in policy.POLICY_KEYS:
        assert f"alerts.policy.{name}" in rows, name


def _commands(
    parser: argparse.ArgumentParser, prog: str = "evaluator"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{prog} {name}")


def test_every_command_and_flag_is_in_the_reference(gen: ModuleType) -> None:
    page = gen.cli_page()
    commands = dict(_commands(build_parser()))
    assert len(commands) >= 25
    sections = re.split(r"^#+ ", page, flags=re.M)
    by_heading = {s.split("`")[1]: s for s in sections if s.startswith("`")}
    for prog, parser in commands.items():
        assert prog in by_heading, f"command reference lacks `{prog}`"
        section = by_heading[prog].split("\n#", 1)[0]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}" in section or f", {flag}" in section, (prog, flag)


def test_every_exit_code_is_in_the_reference(gen: ModuleType) -> None:
    page = gen.exit_codes_page()
    rows, _source = gen.exit_rows()
    codes = {row.code for row in rows}
    assert {0, 1, 2, 3, 4, 5, 130, 141} <= codes
    for code in codes:
        assert re.search(rf"^\| {code} \|", page, re.M), code
