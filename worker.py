"""arq entry point: `arq worker.WorkerSettings` (same as `evaluator worker`).

Only wiring: settings are read once here (settings.toml + EVALUATOR_* environment), and
every keyword `evaluator worker` passes to arq.Worker becomes an attribute, so the two
cannot drift (cron jobs, shutdown grace, ...); tests/test_worker_settings.py compares them.
"""

from __future__ import annotations

from evaluator.config.settings import load_settings
from evaluator.worker.app import worker_options

# arq reads the class __dict__ (arq.worker.get_kwargs), so the values go in unchanged.
WorkerSettings: type = type("WorkerSettings", (), dict(worker_options(load_settings())))
