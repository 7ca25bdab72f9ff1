"""The examples the README and the docs pages show are ones the code accepts: every rubric
TOML block loads as a rubric, every settings TOML block validates as settings, and the
receiver's signature check on the alerts page accepts what the service signs (and nothing
else). A user copies these; an example the code refuses would be the first error they meet.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Settings, load_settings
from evaluator.outputs.webhooks import sign
from tests.scenarios.readme import block_containing, blocks


def _toml_blocks() -> list[tuple[str, dict[str, Any]]]:
    return [(body, tomllib.loads(body)) for body in blocks("toml")]


def test_every_rubric_example_loads(tmp_path: Path) -> None:
    rubrics = [(body, doc) for body, doc in _toml_blocks() if "name" in doc and "scorer" in doc]
    assert len(rubrics) >= 3  # the README's, the reference's, the how-to's
    for i, (body, doc) in enumerate(rubrics):
        directory = tmp_path / str(i)
        directory.mkdir()
        (directory / "rubric.toml").write_text(body)
        loaded = load_rubrics(directory)
        assert [r.name for r in loaded.rubrics] == [doc["name"]]


def test_every_settings_example_validates(tmp_path: Path) -> None:
    sections = set(Settings.model_fields)
    examples = [body for body, doc in _toml_blocks() if doc and set(doc) <= sections]
    assert len(examples) >= 3  # alerts, budget, Redis Sentinel, retention
    for i, body in enumerate(examples):
        path = tmp_path / f"settings{i}.toml"
        path.write_text(body)
        load_settings(path, environ={})


def test_the_signature_check_on_the_alerts_page_accepts_only_what_the_service_signs() -> None:
    namespace: dict[str, Any] = {}
    exec(block_containing("def signed_by_evaluator", "python"), namespace)
    check = namespace["signed_by_evaluator"]
    body, secret = b'{"rubric": "faithfulness"}', "s3cret"
    assert check(body, sign(body, secret), secret) is True
    assert check(body + b" ", sign(body, secret), secret) is False
    assert check(body, sign(body, "other"), secret) is False
