"""arq wiring: the job function, start-up/shut-down hooks and the Worker itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq import Worker, func
from arq.connections import RedisSettings
from redis.asyncio import Redis

from .intake import EVALUATE_JOB, Intake
from .pipeline import evaluate_trace
from .rubrics import load_rubrics
from .runtime import build_runtime, sampling_config
from .serialization import deserialize, serialize
from .settings import Settings

log = logging.getLogger("evaluator.worker")


async def evaluate_trace_job(
    ctx: dict[str, Any], trace_id: str, signals: dict[str, Any]
) -> dict[str, Any]:
    return await evaluate_trace(ctx["runtime"], trace_id, signals, job_try=ctx["job_try"])


def make_intake(ctx: dict[str, Any]) -> Intake:
    runtime = ctx["runtime"]
    return Intake(
        ctx["redis"],
        key_prefix=runtime.settings.redis.key_prefix,
        queue_name=runtime.settings.redis.queue_name,
        sampling=runtime.sampling,
    )


def _hooks(settings: Settings, *, run_intake: bool) -> tuple[Any, Any]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = await asyncio.to_thread(build_runtime, settings)
        ctx["intake"] = make_intake(ctx)
        if run_intake:
            w = settings.worker
            ctx["intake_task"] = asyncio.create_task(
                ctx["intake"].run_forever(w.intake_batch, w.intake_idle_sleep_s),
                name="evaluator-intake",
            )
        log.info(
            "worker ready: %d rubrics (%s), judge %s",
            len(ctx["runtime"].rubrics.rubrics),
            ", ".join(r.name for r in ctx["runtime"].rubrics.rubrics),
            settings.judge.base_url or "not configured",
        )

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        task = ctx.pop("intake_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runtime = ctx.pop("runtime", None)
        if runtime is not None:
            await runtime.close()

    return on_startup, on_shutdown


def worker_options(settings: Settings, *, run_intake: bool = True) -> dict[str, Any]:
    """Keyword arguments for arq.Worker (also the attributes of worker.WorkerSettings)."""
    w = settings.worker
    on_startup, on_shutdown = _hooks(settings, run_intake=run_intake)
    return {
        "functions": [
            func(
                evaluate_trace_job,
                name=EVALUATE_JOB,
                timeout=w.job_timeout_s,
                max_tries=w.max_tries,
            )
        ],
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "redis_settings": RedisSettings.from_dsn(settings.redis.url),
        "queue_name": settings.redis.queue_name,
        "max_jobs": w.max_jobs,
        "job_timeout": w.job_timeout_s,
        "max_tries": w.max_tries,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        # Idempotency lives in SQL (unique record); a kept arq result would only block a
        # legitimate re-evaluation (new database, replayed error) for its lifetime.
        "keep_result": 0,
        "poll_delay": 0.1,
        "handle_signals": True,
    }


def make_worker(settings: Settings, *, burst: bool = False) -> Worker:
    options = worker_options(settings, run_intake=not burst)
    if burst:
        options.update(burst=True, poll_delay=0.05, handle_signals=False)
    return Worker(**options)


async def run_burst(settings: Settings) -> dict[str, Any]:
    """Drain the intake list, then run every queued job to completion; return the counts."""
    worker = make_worker(settings, burst=True)
    # arq runs on_startup inside main(); drain with a short-lived intake of our own first.
    redis = Redis.from_url(settings.redis.url)
    try:
        intake = Intake(
            redis,
            key_prefix=settings.redis.key_prefix,
            queue_name=settings.redis.queue_name,
            sampling=sampling_config(settings, load_rubrics(settings.rubrics.path)),
        )
        drained = await intake.drain_all(settings.worker.intake_batch)
    finally:
        await redis.aclose()
    try:
        await worker.main()
    finally:
        await worker.close()
    return {
        "intake": {
            "popped": drained.popped,
            "sampled": drained.sampled,
            "invalid": drained.invalid,
            "jobs_created": drained.jobs_created,
            "reasons": dict(drained.reasons),
        },
        "jobs_complete": worker.jobs_complete,
        "jobs_failed": worker.jobs_failed,
        "jobs_retried": worker.jobs_retried,
    }
