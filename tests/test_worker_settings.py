"""`arq worker.WorkerSettings` and `evaluator worker` build arq.Worker from the same options."""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import pytest
from arq.worker import Worker, get_kwargs

from evaluator.config.settings import load_settings
from evaluator.worker.app import worker_options


def _comparable(value: Any) -> Any:
    # Fresh closures and RedisSettings objects each call: compare what they are made of.
    if inspect.isfunction(value):
        return value.__qualname__
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return {k: _comparable(v) for k, v in vars(value).items()}
    return value


def test_worker_settings_carries_every_worker_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALUATOR_WORKER__SHUTDOWN_GRACE_S", "7")
    sys.modules.pop("worker", None)
    module = importlib.import_module("worker")
    expected = worker_options(load_settings())
    got = get_kwargs(module.WorkerSettings)  # exactly what `arq worker.WorkerSettings` passes
    assert set(got) == set(expected), set(expected) ^ set(got)
    assert set(expected) <= set(inspect.signature(Worker).parameters)
    for key, value in expected.items():
        assert _comparable(got[key]) == _comparable(value), key
    assert got["job_completion_wait"] == 7
    assert [c.name for c in got["cron_jobs"]] == [c.name for c in expected["cron_jobs"]]
    assert got["cron_jobs"], "the sweeper and the regression check run under arq too"
    sys.modules.pop("worker", None)
