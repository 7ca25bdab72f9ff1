"""The outbox's other half: re-create jobs for intents that should have finished.

Runs as an arq cron job (once per minute across all workers) and from `evaluator retry`.
It also returns intake entries parked by a worker that died mid-batch to the intake list.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from evaluator.intake.drain import Intake, job_id_for, job_payload, recover_abandoned
from evaluator.store import outbox

log = logging.getLogger("evaluator.intake.sweeper")


@dataclass
class SweepResult:
    recovered_intake: int = 0
    reenqueued: int = 0
    jobs_created: int = 0
    dead: int = 0


async def requeue(intake: Intake, engine: Engine, intents: list[outbox.EvalIntent]) -> int:
    """Create jobs for these intents (an existing job is left alone); returns jobs created."""
    jobs = [
        (job_id_for(i.trace_id, i.kind), job_payload(i.trace_id, i.signals, i.kind, 0))
        for i in intents
    ]
    created = await intake.create_jobs(jobs)
    await asyncio.to_thread(outbox.mark_enqueued, engine, [i.id for i in intents])
    return created


async def sweep(
    intake: Intake, engine: Engine, *, stale_after: timedelta, dead_after_attempts: int
) -> SweepResult:
    result = SweepResult()
    result.recovered_intake = await recover_abandoned(intake.redis, intake.key_prefix)
    due = await asyncio.to_thread(outbox.due, engine, stale_after=stale_after)
    alive = []
    for intent in due:
        if intent.attempts >= dead_after_attempts:
            cause = (
                f"gave up after {intent.attempts} attempts; last error: {intent.last_error or '-'}"
            )
            await asyncio.to_thread(
                outbox.finish, engine, intent.id, status=outbox.DEAD, error=cause
            )
            log.error("intent %s moved to the dead letter state: %s", intent.id, cause)
            result.dead += 1
        else:
            alive.append(intent)
    # Back-pressure: no more jobs than the queue's bound takes; the rest wait for later sweeps.
    alive = alive[: await intake.room()]
    if alive:
        result.jobs_created = await requeue(intake, engine, alive)
        result.reenqueued = len(alive)
    if result.reenqueued or result.recovered_intake or result.dead:
        log.warning("sweep: %s", result)
    return result


async def sweep_job(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron entry point."""
    runtime = ctx["runtime"]
    w = runtime.settings.worker
    result = await sweep(
        ctx["intake"],
        runtime.store.engine,
        stale_after=timedelta(seconds=w.job_timeout_s + w.sweep_grace_s),
        dead_after_attempts=w.dead_letter_after,
    )
    return dict(result.__dict__)


async def retry_dead(intake: Intake, engine: Engine, trace_ids: list[str] | None) -> int:
    """`evaluator retry`: dead intents back to pending, with jobs; returns how many."""
    revived = await asyncio.to_thread(outbox.revive, engine, trace_ids=trace_ids)
    if revived:
        await requeue(intake, engine, revived)
    return len(revived)


async def retry_errors(intake: Intake, engine: Engine, trace_ids: list[str]) -> int:
    """`evaluator retry --errors`: re-run these traces' evaluations (their error records are
    replaced by the new run: records that are not `ok` are overwritten)."""
    intents = await asyncio.to_thread(outbox.reopen, engine, trace_ids)
    if intents:
        await requeue(intake, engine, intents)
    return len(intents)
