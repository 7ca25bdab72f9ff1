"""A pytest plugin that runs the collected tests in a seeded random order: the modules shuffled,
then the tests inside each module (a module's fixtures stay together, as pytest-randomly
does it). Used by bench/flaky_under_load.py; no dependency beyond pytest.

    RANDOM_ORDER_SEED=7 python -m pytest -p bench.random_order tests/test_enqueue.py

Without RANDOM_ORDER_SEED the order is left alone. The seed is printed in the header, so a
failing order can be replayed.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict

import pytest

ENV = "RANDOM_ORDER_SEED"


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = os.environ.get(ENV)
    return f"random order: seed {seed} ({ENV})" if seed else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = os.environ.get(ENV)
    if not seed:
        return
    rng = random.Random(int(seed))
    by_module: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        by_module[item.nodeid.split("::", 1)[0]].append(item)
    modules = list(by_module)
    rng.shuffle(modules)
    ordered: list[pytest.Item] = []
    for module in modules:
        tests = by_module[module]
        rng.shuffle(tests)
        ordered += tests
    items[:] = ordered
