"""arq wiring: the job function, start-up/shut-down hooks and the Worker itself."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import time
from collections import Counter
from typing import Any, cast
from urllib.parse import urlsplit

from arq import Retry, Worker, cron, func
from arq.utils import timestamp_ms

from evaluator.analytics.certification_job import CRON_MINUTES, certification_job
from evaluator.analytics.check_job import regression_check_job
from evaluator.config.logs import log_context
from evaluator.config.redis_clients import arq_redis_settings, async_redis
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Settings
from evaluator.intake.drain import build_intake
from evaluator.intake.jobs import EVALUATE_BATCH_JOB, EVALUATE_JOB, QueuedTrace
from evaluator.intake.serialization import deserialize, serialize
from evaluator.intake.sweeper import sweep_job
from evaluator.outputs.webhooks import log_unreachable_sinks
from evaluator.store import outbox
from evaluator.store.retention import retention_job
from evaluator.store.store import Store
from evaluator.worker.anchors import anchors_job
from evaluator.worker.batch import batch_job
from evaluator.worker.faults import INFRASTRUCTURE
from evaluator.worker.heartbeat import Heartbeat
from evaluator.worker.hygiene import check_judge_hygiene, configured_judge_model
from evaluator.worker.pipeline import evaluate_trace
from evaluator.worker.runtime import build_runtime, sampling_config
from judges.llm.backoff import backoff_s
from judges.llm.concurrency import slots_until

log = logging.getLogger("evaluator.worker.app")
# The start line goes out at the default level (WARNING): a newcomer can tell running from hung.
start_log = logging.getLogger("evaluator.worker.start")


async def evaluate_trace_job(
    ctx: dict[str, Any],
    trace_id: str,
    signals: dict[str, Any],
    kind: str = "rate",
    tried: int = 0,
) -> dict[str, Any]:
    """A job of one trace (a retry, a batch member handed on: `tried` = the tries its batch
    job spent on it). With no trace slot free in time to finish before the job's timeout, it
    goes back to the queue (arq counts that as a try) instead of being cancelled mid-call."""
    calls_until = _judge_deadline(ctx)
    slots = _trace_slots(ctx)
    try:
        async with asyncio.timeout(_start_within_s(ctx)):
            await slots.acquire()
    except TimeoutError:
        raise Retry(defer=1.0) from None
    try:
        with slots_until(calls_until):
            return await _evaluate_one(ctx, trace_id, signals, kind, ctx["job_try"] + tried)
    finally:
        slots.release()


async def evaluate_traces_job(ctx: dict[str, Any], members: list[list[Any]]) -> dict[str, Any]:
    """A job of several traces (the intake's batches), evaluated concurrently within the
    worker's max_jobs traces in flight. A member that asks for a retry, or finds no slot in
    time to finish before the job's timeout, goes on in a job of its own (its intent stays
    pending meanwhile); one that fails otherwise stays pending for the sweeper, like a
    failed job. Run again by arq (its worker died, it was cancelled, handing on failed), it
    only hands its unfinished members on."""
    job_try = ctx["job_try"]
    queued: list[QueuedTrace] = []
    failed = 0
    for member in members:
        try:
            queued.append(QueuedTrace(str(member[0]), dict(member[1] or {}), str(member[2])))
        except Exception:  # only a hand-written job can hold one; the rest of it still runs
            failed += 1
            log.error("batch job: malformed member %r skipped", member)
    if job_try > 1:
        return await _hand_on_unfinished(ctx, queued, failed)
    calls_until = _judge_deadline(ctx)
    slots = _trace_slots(ctx)
    start_by = time.monotonic() + _start_within_s(ctx)
    handed_on: list[tuple[QueuedTrace, int]] = []

    async def one(member: QueuedTrace) -> None:
        nonlocal failed
        try:
            async with asyncio.timeout(max(0.0, start_by - time.monotonic())):
                await slots.acquire()
        except TimeoutError:
            handed_on.append((member, timestamp_ms()))
            return
        try:
            with slots_until(calls_until):
                await _evaluate_one(ctx, member.trace_id, member.signals, member.kind, job_try)
        except Retry as retry:
            at = timestamp_ms() + (retry.defer_score or 0)
            handed_on.append((dataclasses.replace(member, tried=job_try), at))
        except Exception:
            failed += 1
            log.exception(
                "trace %s failed in a batch job; its intent stays pending", member.trace_id
            )
        finally:
            slots.release()

    await asyncio.gather(*(one(m) for m in queued))
    if handed_on:
        try:
            await ctx["intake"].follow_up(handed_on, replacing=ctx.get("job_id", ""))
        except Exception as exc:  # Redis: arq runs the job again, which hands them on then
            log.warning("batch job: handing %d traces on failed: %r", len(handed_on), exc)
            raise Retry(defer=backoff_s(job_try, base=1.0, cap=60.0)) from exc
    return {"traces": len(members), "handed_on": len(handed_on), "failed": failed}


async def _hand_on_unfinished(
    ctx: dict[str, Any], queued: list[QueuedTrace], failed: int
) -> dict[str, Any]:
    """A batch job run again: its members whose intents are done stay done (not judged
    again); the rest go on in jobs of their own, from their first try (which of them the
    earlier run had started is not known here; a member handed on before keeps its job)."""
    runtime = ctx["runtime"]
    ids = [outbox.intent_id(q.kind, q.trace_id) for q in queued]
    done = await asyncio.to_thread(outbox.done_among, runtime.store.engine, ids)
    rest = [q for q, i in zip(queued, ids, strict=True) if i not in done]
    now = timestamp_ms()
    await ctx["intake"].follow_up([(q, now) for q in rest], replacing=ctx.get("job_id", ""))
    log.info(
        "batch job run again (try %d): %d done, %d handed on", ctx["job_try"], len(done), len(rest)
    )
    return {
        "traces": len(queued) + failed,
        "done_before": len(done),
        "handed_on": len(rest),
        "failed": failed,
    }


def _start_within_s(ctx: dict[str, Any]) -> float:
    """How long a trace may wait for a slot and still finish before its job's timeout: the
    settings check that a job fits two worst-case judge calls, so that much must be left."""
    s: Settings = ctx["runtime"].settings
    return max(0.0, s.worker.job_timeout_s - 2 * s.judge.worst_case_call_s())


def _judge_deadline(ctx: dict[str, Any]) -> float:
    """The time.monotonic() after which this job's judge calls start no attempt (a call
    still queued for a slot then fails as a timeout and its trace is deferred): the job's
    timeout less one call's worst case, what an attempt in flight and its back-offs may
    still take. Called as the job starts, so queued calls wait their turn behind a slow
    judge for as long as the job has room, and never past its timeout (nothing recorded)."""
    s: Settings = ctx["runtime"].settings
    return time.monotonic() + max(0.0, s.worker.job_timeout_s - s.judge.worst_case_call_s())


def _trace_slots(ctx: dict[str, Any]) -> asyncio.Semaphore:
    """At most worker.max_jobs traces in flight, however they are packed into jobs: the
    worker's semaphore (on_startup; arq gives each job a copy of its ctx, sharing values),
    or one of its own for a job function called outside a worker."""
    slots = ctx.get("trace_slots")
    if slots is None:
        return asyncio.Semaphore(ctx["runtime"].settings.worker.max_jobs)
    return cast("asyncio.Semaphore", slots)


async def _evaluate_one(
    ctx: dict[str, Any], trace_id: str, signals: dict[str, Any], kind: str, job_try: int
) -> dict[str, Any]:
    """Evaluate one trace and settle its durable intent (evaluator.store.outbox).

    An infrastructure error (Redis, database, DNS, the trace source) is retried with back-off
    by arq, never recorded (the intent stays pending, so the sweeper re-creates the job even
    if arq gives up); the unique record makes re-runs safe.
    """
    runtime = ctx["runtime"]
    engine = runtime.store.engine
    intent_id = outbox.intent_id(kind, trace_id)
    try:
        with log_context(trace_id=trace_id):
            done = await evaluate_trace(
                runtime, trace_id, signals, job_try=job_try, intent_id=intent_id
            )
        if "tally" in ctx:  # the worker's, shared by its jobs (run_burst reports it)
            ctx["tally"]["evaluated"] += 1
        if "heartbeat" in ctx:
            ctx["heartbeat"].job_done()
        return dict(done)
    except INFRASTRUCTURE as exc:
        log.warning("trace %s: infrastructure error (try %d): %r", trace_id, job_try, exc)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(
                outbox.note_failure, engine, intent_id, f"{type(exc).__name__}: {exc}"
            )
        if job_try < runtime.settings.worker.max_tries:
            raise Retry(defer=backoff_s(job_try, base=1.0, cap=60.0)) from exc
        raise


def _hooks(settings: Settings, *, run_intake: bool, freeze_gc: bool) -> tuple[Any, Any]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = await asyncio.to_thread(build_runtime, settings)
        ctx["trace_slots"] = asyncio.Semaphore(settings.worker.max_jobs)
        ctx["tally"] = Counter[str]()
        runtime = ctx["runtime"]
        ctx["intake"] = build_intake(
            ctx["redis"], settings, sampling=runtime.sampling, engine=runtime.store.engine
        )
        try:  # a warning, never a reason not to start (evaluator.worker.hygiene)
            await asyncio.to_thread(
                check_judge_hygiene,
                runtime.store,
                runtime.rubrics,
                configured_judge_model(settings),
            )
        except Exception:
            log.exception("judge hygiene check failed; starting anyway")
        if freeze_gc:
            # Everything built so far lives as long as the process: keep it out of the
            # cyclic collector's full passes, which otherwise walk it again and again under
            # load. Only for a worker process of its own (`serve`), not one inside a test run.
            gc.freeze()
        # The intake last: it turns IDs into jobs that only this worker's poll (which starts
        # after on_startup returns) runs, so nothing before it may hold start-up up.
        if run_intake:
            w = settings.worker
            ctx["intake_task"] = asyncio.create_task(
                ctx["intake"].run_forever(w.intake_batch, w.intake_idle_sleep_s),
                name="evaluator-intake",
            )
        if run_intake:  # a long-running worker: `health --require-worker` counts it
            judge = ctx["runtime"].clients.judge
            beat = Heartbeat(
                ctx["redis"],
                settings.redis.key_prefix,
                settings.redis.queue_name,
                settings.worker.heartbeat_s,
                # `evaluator health` shows where each worker's judge concurrency stands.
                extra=(lambda: {"judge_concurrency": judge.concurrency.stats()})
                if judge is not None
                else None,
            )
            await beat.start()
            ctx["heartbeat"] = beat
            if settings.alerts.enabled:  # reachability: logged once, never blocks the start
                ctx["sink_probe"] = asyncio.create_task(
                    log_unreachable_sinks(settings.alerts, os.environ)
                )
        if logging.getLogger().getEffectiveLevel() <= logging.WARNING:
            start_log.setLevel(logging.INFO)  # shown unless the user asked for less
        start_log.info("%s", start_line(settings, [r.name for r in runtime.rubrics.rubrics]))

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        beat = ctx.pop("heartbeat", None)
        if beat is not None:
            await beat.stop()
        probe = ctx.pop("sink_probe", None)
        if probe is not None:
            probe.cancel()
        task = ctx.pop("intake_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runtime = ctx.pop("runtime", None)
        if runtime is not None:
            await runtime.aclose()

    return on_startup, on_shutdown


def shown_url(url: str) -> str:
    """The URL for logs: a password becomes ***, a query string (libpq takes
    `?password=`) becomes `?...`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparsable URL)"
    head, query, _ = url.partition("?")
    if password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        head = head.replace(parts.netloc, f"{parts.username or ''}:***@{host}", 1)
    return head + ("?..." if query else "")


def start_line(settings: Settings, rubrics: list[str]) -> str:
    """One line: what this worker serves and talks to (no secrets: passwords masked, keys
    named by their variable only)."""
    judge = settings.judge
    judge_text = f"{shown_url(judge.base_url)} ({judge.model})" if judge.configured else "none"
    return (
        f"worker ready: queue {settings.redis.queue_name}; {len(rubrics)} rubrics "
        f"({', '.join(rubrics) or 'none'}) from {settings.rubrics.path}; judge {judge_text}; "
        f"database {shown_url(settings.database.url)}; "
        f"Redis {shown_url(settings.redis.url)}"
    )


def cron_name(settings: Settings, job: str) -> str:
    """arq keys cron jobs by name and run time alone (`arq:job:<name>:<time>`, whatever the
    queue), so the name carries the deployment: two deployments on one Redis each run theirs."""
    return f"evaluator:{settings.redis.key_prefix}:{settings.redis.queue_name}:{job}"


def cron_jobs(settings: Settings) -> list[Any]:
    """arq's unique cron job id (name + run time) enqueues each once per period however many
    workers of the deployment run; the regression job also claims its period in Redis."""
    jobs = [
        # The outbox sweeper, once a minute.
        cron(
            sweep_job,
            name=cron_name(settings, "sweep"),
            second=31,
            unique=True,
            # arq holds a killed job for max(function timeouts) + 10 s: keep this one short.
            timeout=min(120, settings.worker.job_timeout_s),
            max_tries=1,
        )
    ]
    # Batch mode: collect finished Batch API batches, then submit pending requests. A run
    # with nothing parked costs two indexed queries.
    jobs.append(
        cron(
            batch_job,
            name=cron_name(settings, "batches"),
            second=53,
            unique=True,
            timeout=settings.worker.job_timeout_s,
            max_tries=1,
        )
    )
    # Anchor sets: hourly; each rubric decides whether its epoch changed or `every` elapsed.
    jobs.append(
        cron(
            anchors_job,
            name=cron_name(settings, "anchors"),
            minute={17},
            second=43,
            unique=True,
            # arq holds any killed job for max(function timeouts) + 10 s: no longer than jobs.
            timeout=settings.worker.job_timeout_s,
            max_tries=1,
        )
    )
    r = settings.database.retention
    if any((r.traces_days, r.records_days, r.pending_spans_days, r.intents_days)):
        jobs.append(
            cron(
                retention_job,
                name=cron_name(settings, "retention"),
                minute={47},
                second=13,
                unique=True,
                timeout=min(300, settings.worker.job_timeout_s),
                max_tries=1,
            )
        )
    # Cascade certifications: computed at their checkpoints, withdrawn on drift (whether or
    # not regression alerts are enabled: the cascade's local passes depend on them).
    jobs.append(
        cron(
            certification_job,
            name=cron_name(settings, "certification"),
            minute=set(range(0, 60, CRON_MINUTES)),
            second=37,
            unique=True,
            timeout=settings.worker.job_timeout_s,
            max_tries=1,
        )
    )
    if settings.alerts.enabled:
        jobs.append(
            cron(
                regression_check_job,
                name=cron_name(settings, "regression_check"),
                minute=set(range(0, 60, settings.alerts.interval_minutes)),
                second=7,
                unique=True,
                timeout=settings.worker.job_timeout_s,
                max_tries=1,
            )
        )
    return jobs


def arq_max_jobs(max_jobs: int, traces_per_job: int) -> int:
    """Jobs one worker runs at once: enough batches to keep its `max_jobs` trace slots fed
    twice over, no more (a worker holding 32 batches of 8 would leave other workers idle)."""
    if traces_per_job <= 1:
        return max_jobs
    return max(2, -(-2 * max_jobs // traces_per_job))


def worker_options(
    settings: Settings, *, run_intake: bool = True, freeze_gc: bool = False
) -> dict[str, Any]:
    """Keyword arguments for arq.Worker (also the attributes of worker.WorkerSettings)."""
    w = settings.worker
    on_startup, on_shutdown = _hooks(settings, run_intake=run_intake, freeze_gc=freeze_gc)
    return {
        "functions": [
            func(
                evaluate_trace_job,
                name=EVALUATE_JOB,
                timeout=w.job_timeout_s,
                max_tries=w.max_tries,
            ),
            func(
                evaluate_traces_job,
                name=EVALUATE_BATCH_JOB,
                timeout=w.job_timeout_s,
                max_tries=w.max_tries,
            ),
        ],
        "cron_jobs": cron_jobs(settings),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "redis_settings": arq_redis_settings(settings),
        "queue_name": settings.redis.queue_name,
        # arq counts jobs, not traces: a worker claims about twice the batches its trace
        # slots take (the rest stay queued for other workers).
        "max_jobs": arq_max_jobs(w.max_jobs, w.traces_per_job),
        "job_timeout": w.job_timeout_s,
        "max_tries": w.max_tries,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        # Idempotency lives in SQL (unique record); a kept arq result would only block a
        # legitimate re-evaluation (new database, replayed error) for its lifetime.
        "keep_result": 0,
        "poll_delay": 0.1,
        "handle_signals": True,
        "job_completion_wait": w.shutdown_grace_s,
    }


class EvalWorker(Worker):
    """arq's Worker, minus a per-poll cost: a poll with a free slot re-reads the head of the
    queue, the jobs this worker is running included (a job leaves the queue when it
    finishes), and checks each in Redis (WATCH, EXISTS, ZSCORE) only to find it running —
    with a backlog, dozens of round trips per job started. Jobs running here are skipped
    without asking; jobs running on other workers are still checked by arq."""

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        await super().start_jobs([j for j in job_ids if j.decode() not in self.tasks])


def make_worker(settings: Settings, *, burst: bool = False, freeze_gc: bool = False) -> Worker:
    options = worker_options(settings, run_intake=not burst, freeze_gc=freeze_gc)
    if burst:
        # No cron jobs: arq would run the sweeper or the regression check only when a burst
        # happens to span their second of the minute, i.e. at random.
        options.update(burst=True, poll_delay=0.05, handle_signals=False, cron_jobs=[])
    return EvalWorker(**options)


async def run_burst(settings: Settings) -> dict[str, Any]:
    """Drain the intake list, then run every queued job to completion; return the counts."""
    worker = make_worker(settings, burst=True)
    # arq runs on_startup inside main(); drain with a short-lived intake of our own first.
    redis = async_redis(settings)
    try:
        store = Store(settings.database.url)
        sampling = sampling_config(settings, load_rubrics(settings.rubrics.path))
        intake = build_intake(redis, settings, sampling=sampling, engine=store.engine)
        drained = await intake.drain_all(settings.worker.intake_batch)
        store.close()
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
        # Traces whose evaluation finished (a job carries up to worker.traces_per_job).
        "traces_evaluated": worker.ctx.get("tally", Counter())["evaluated"],
        "jobs_failed": worker.jobs_failed,
        "jobs_retried": worker.jobs_retried,
    }
