"""What an app pays to import the service, and what `evaluator --help` loads.

The app-side API (`from evaluator import enqueue_trace`) and the CLI's help must not load
the judge's SDK, the SQL stack or the migrations: each costs an app seconds at start-up.
Times are measured in bench/startup.py; this pins which modules load (a fresh process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_graph import cycles, edges

HEAVY = ("openai", "sqlalchemy", "sqlmodel", "alembic", "aiohttp", "numpy", "arq")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize(
    "code",
    [
        "from evaluator import enqueue_trace, enqueue_trace_sync, flush, configure",
        "import evaluator",
        "import judges.types, judges.redact",
    ],
)
def test_app_side_imports_load_no_heavy_dependency(code: str) -> None:
    heavy = _loaded_after(code) & set(HEAVY)
    assert heavy == set(), f"{code!r} loaded {sorted(heavy)}"


def test_cli_help_loads_no_heavy_dependency() -> None:
    code = (
        "import sys\nfrom evaluator.cli import main\nsys.argv = ['evaluator', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    heavy = _loaded_after(code) & set(HEAVY)
    assert heavy == set(), f"`evaluator --help` loaded {sorted(heavy)}"


def test_public_names_still_resolve() -> None:
    import evaluator
    import judges

    for name in evaluator.__all__:
        assert getattr(evaluator, name) is not None, name
    for name in judges.__all__:
        assert getattr(judges, name) is not None, name
    with pytest.raises(AttributeError):
        _ = evaluator.no_such_name


ROOT = Path(__file__).resolve().parent.parent


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "evaluator"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from evaluator import b\n")
    (package / "b.py").write_text("def f():\n    from evaluator.a import x\n")
    assert cycles(edges(tmp_path, function_level=False)) == []
    assert cycles(edges(tmp_path, function_level=True)) == [["evaluator.a", "evaluator.b"]]


def test_no_import_cycle_among_module_level_imports() -> None:
    assert cycles(edges(ROOT, function_level=False)) == []


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    assert cycles(edges(ROOT, function_level=True)) == []


ABOVE_THE_BUDGET = ("intake", "sources", "outputs", "analytics", "worker", "web", "cli")


def test_the_budget_sits_between_intake_and_store() -> None:
    """evaluator.budget is read by intake (the drain) and worker (the escalation charge) and
    reads store and sampling: no module of it imports a floor above it, even inside a
    function, where the layers contract would catch only what it is told about."""
    graph = edges(ROOT, function_level=True)
    budget = {m for m in graph if m.startswith("evaluator.budget")}
    above = tuple(f"evaluator.{floor}" for floor in ABOVE_THE_BUDGET)
    upward = sorted(f"{m} -> {t}" for m in budget for t in graph[m] if t.startswith(above))
    assert upward == []
    readers = {m.split(".")[1] for m in graph if m not in budget and graph[m] & budget}
    assert {"intake", "worker"} <= readers
    assert {t.split(".")[1] for m in budget for t in graph[m] if t.startswith("evaluator.")} <= {
        "budget",
        "sampling",
        "store",
        "traces",
        "config",
        "errors",
    }
