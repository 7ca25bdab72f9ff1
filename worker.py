"""arq entry point: `arq worker.WorkerSettings` (same as `evaluator worker`).

Only wiring: settings are read once here (settings.toml + EVALUATOR_* environment).
"""

from __future__ import annotations

from evaluator.config.settings import load_settings
from evaluator.worker.app import worker_options

_options = worker_options(load_settings())


class WorkerSettings:
    functions = _options["functions"]
    on_startup = _options["on_startup"]
    on_shutdown = _options["on_shutdown"]
    redis_settings = _options["redis_settings"]
    queue_name = _options["queue_name"]
    max_jobs = _options["max_jobs"]
    job_timeout = _options["job_timeout"]
    max_tries = _options["max_tries"]
    job_serializer = _options["job_serializer"]
    job_deserializer = _options["job_deserializer"]
    keep_result = _options["keep_result"]
    poll_delay = _options["poll_delay"]
