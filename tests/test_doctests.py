"""Every docstring example in `evaluator/`, `judges/` and `evalcore/` runs (they are the pure cores'
shortest documentation; an example that no longer holds is a lie)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import evalcore
import evaluator
import judges

SKIP = ("evaluator.store.migrations", "evaluator.cli.__main__", "judges.scorers.ragas_method")


def _modules() -> list[str]:
    names = []
    for package in (evaluator, judges, evalcore):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(SKIP):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
