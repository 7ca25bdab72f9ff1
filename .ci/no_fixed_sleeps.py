"""Fail when a test waits on the clock instead of on state.

A fixed sleep used as synchronisation ("the worker has surely finished by now") passes on
an idle machine and fails on a loaded one. Tests poll on state with a generous deadline
(tests/polling.py) or hold a loopback server until they release it (an Event). This check
reads every file under tests/ and reports each call of `sleep` (time, asyncio, trio, anyio)
with a non-zero argument that is not inside a loop of its function.

What passes without an entry: `sleep(0)` (a turn of the event loop, not a wait), and a sleep
inside a `for`/`while` loop (the interval of a poll, or the pace of a load generator). That
is the cheap rule; it cannot tell a poll from a loop of fixed waits, which review must.
Anything else needs an ALLOWED entry, keyed by file and enclosing function, with its reason:
a sleep that is itself the thing under test (an outage's length, a TTL), followed by polling.

    python .ci/no_fixed_sleeps.py          # exit 1 and one line per offending call
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLEEP_MODULES = {"time", "asyncio", "trio", "anyio"}

# (path under the repository, enclosing function) -> why this sleep is not synchronisation.
ALLOWED: dict[tuple[str, str], str] = {
    ("tests/test_fault_injection.py", "test_postgres_stopped_mid_intake_loses_nothing"): (
        "the outage's length is the fault under test; the test then polls SQL for the records"
    ),
    ("tests/test_group_commit.py", "job"): (
        "jobs i ms apart against a 50 ms linger: asyncio fires timers in deadline order, so a "
        "stalled loop cannot split the group; the spread is the input, not a wait"
    ),
}


def _sleep_names(tree: ast.Module) -> set[str]:
    """Bare names bound to a sleep function (`from time import sleep`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in SLEEP_MODULES:
            names |= {a.asname or a.name for a in node.names if a.name == "sleep"}
    return names


def _is_sleep(call: ast.Call, bare: set[str]) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr == "sleep":
        return isinstance(f.value, ast.Name) and f.value.id in SLEEP_MODULES
    return isinstance(f, ast.Name) and f.id in bare


def _is_zero(call: ast.Call) -> bool:
    arg = call.args[0] if call.args else None
    return isinstance(arg, ast.Constant) and arg.value == 0


class _Finder(ast.NodeVisitor):
    def __init__(self, bare: set[str]) -> None:
        self.bare = bare
        self.function = "<module>"
        self.loops = 0  # loops enclosing the current node within the current function
        self.found: list[tuple[int, str]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        outer = self.function, self.loops
        self.function = getattr(node, "name", "<lambda>")
        self.loops = 0
        self.generic_visit(node)
        self.function, self.loops = outer

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _loop(self, node: ast.For | ast.AsyncFor | ast.While) -> None:
        self.loops += 1
        self.generic_visit(node)
        self.loops -= 1

    visit_For = visit_AsyncFor = visit_While = _loop

    def visit_Call(self, node: ast.Call) -> None:
        if _is_sleep(node, self.bare) and not _is_zero(node) and self.loops == 0:
            self.found.append((node.lineno, self.function))
        self.generic_visit(node)


def offences(root: Path = ROOT) -> list[str]:
    out = []
    used = set()
    for path in sorted((root / "tests").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        finder = _Finder(_sleep_names(tree))
        finder.visit(tree)
        for line, function in finder.found:
            if (rel, function) in ALLOWED:
                used.add((rel, function))
                continue
            out.append(
                f"{rel}:{line}: fixed sleep in {function}() used to wait; poll on state "
                "(tests/polling.py) or hold a loopback server until the test releases it, "
                "or add an ALLOWED entry with its reason in .ci/no_fixed_sleeps.py"
            )
    out += [
        f"{rel}: ALLOWED entry for {function}() matches no sleep any more; remove it"
        for rel, function in sorted(set(ALLOWED) - used)
    ]
    return out


def main() -> int:
    found = offences()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
