"""Every `evaluator ...` line in the README and the docs/ pages names a real command, and every
flag it shows is one that command accepts (asked of the real parser, through `--help` in a
real process).

Which story test runs each command for real is listed in RUN_BY; a README command that no
test runs fails here, so the README cannot drift from what the tests prove. Blocks that
need a system this machine lacks are listed in NOT_RUNNABLE with the reason.
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.scenarios.cli import run
from tests.scenarios.readme import command_lines

# Subcommand path -> the tests that run it as a user does.
RUN_BY = {
    "demo": "scenarios/test_install_and_demo.py",
    "scores": "scenarios/test_readme_example.py, scenarios/test_otel_sdk_to_scores.py",
    "ingest": "scenarios/test_readme_example.py, scenarios/test_alert_to_webhook.py",
    "enqueue": "scenarios/test_readme_example.py",
    "worker": "scenarios/test_alert_to_webhook.py, test_reliability.py",
    "stats": "test_worker_e2e.py",
    "rubrics check": "test_rubrics.py",
    "trends": "test_trends.py",
    "alerts": "scenarios/test_alert_to_webhook.py",
    "serve": "scenarios/test_otel_sdk_to_scores.py",
    "calibrate": "test_calibration.py",
    "retry": "test_reliability.py",
    "health": "test_worker_e2e.py",
    "db upgrade": "test_migrations.py",
    "db current": "test_migrations.py",
    "backfill": "test_backfill.py",
    "convert-ragtruth": "test_calibration.py",
    "dataset export": "test_dataset_export.py",
    "gate": "test_gate.py, test_gate_replay.py, test_dataset_export.py",
    "epochs": "test_epochs.py",
    "feedback import": "test_feedback.py",
    "feedback agreement": "test_feedback.py",
    "review next": "test_feedback.py",
    "erase": "test_retention.py",
    "retention run": "test_retention_command.py",
    "certify": "test_certify_cli.py, scenarios/test_certified_cascade.py",
}
NOT_RUNNABLE = {
    "yaml": "a CI provider's workflow file, a Collector config: no GitHub Actions runner or"
    " OpenTelemetry Collector on this machine",
    "sql": "ClickHouse queries (docs/collector.md): no ClickHouse on this machine",
}
_PLACEHOLDER = re.compile(r"^[A-Z_]+$|\.\.\.$")


def _invocations() -> list[tuple[str, list[str]]]:
    out = []
    for line in command_lines():
        line = line.replace("\\", " ")
        for part in re.split(r"\s*(?:&&|;)\s*", line):
            words = shlex.split(part.replace("|", " | "))
            if "evaluator" not in words:
                continue
            words = words[words.index("evaluator") + 1 :]
            path = [w for w in words[:2] if re.fullmatch(r"[a-z][a-z-]*", w)]
            grouped = bool(path) and path[0] in {
                "db",
                "rubrics",
                "dataset",
                "feedback",
                "review",
                "retention",
            }
            path = path[:2] if grouped else path[:1]
            flags = {w.split("=")[0] for w in words if w.startswith("--")}
            out.append((" ".join(path), flags))
    merged: dict[str, set[str]] = {}
    for command, flags in out:  # one real process per command, with every flag shown
        merged.setdefault(command, set()).update(flags)
    return [(command, sorted(flags)) for command, flags in merged.items()]


INVOCATIONS = _invocations()


def test_the_readme_shows_commands() -> None:
    assert len(INVOCATIONS) >= 15


@pytest.mark.parametrize(("command", "flags"), INVOCATIONS, ids=[c for c, _ in INVOCATIONS])
def test_readme_command_exists_with_its_flags(command: str, flags: list[str]) -> None:
    help_text = run(*command.split(), "--help").stdout
    missing = [f for f in flags if f not in help_text and f != "--help"]
    assert not missing, f"`evaluator {command}` does not accept {missing}"
    assert command in RUN_BY, f"no story test runs `evaluator {command}`: add one to RUN_BY"


def test_every_fenced_block_is_either_exercised_or_listed() -> None:
    tagged = {tag for tag, _ in _tags()}
    assert tagged <= {"bash", "python", "json", "toml", ""} | set(NOT_RUNNABLE), tagged


def _tags() -> list[tuple[str, str]]:
    from tests.scenarios.readme import tagged_blocks

    return tagged_blocks()
