"""The outbox's other half: re-create jobs for intents that should have finished.

Runs as an arq cron job (once per minute across all workers) and from `evaluator retry`.
It also returns intake entries parked by a worker that died mid-batch to the intake list.

Under back-pressure the sweeper is not the pace of recovery: what it finds due goes through
the intake's `place` (queued as far as `worker.max_queue_depth` in traces takes it, packed in
batch jobs; the rest held), and every worker's intake loop queues held traces as soon as the
queue has room (evaluator.intake.backlog). A sweep therefore moves every due intent at once
(page by page, up to SWEEP_PAGES x PAGE), however small the bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from evaluator.intake.drain import Intake, allocated_of, escalating_of
from evaluator.intake.jobs import QueuedTrace
from evaluator.intake.parking import recover_abandoned
from evaluator.store import admissions, outbox
from evaluator.store.admissions import Admission

log = logging.getLogger("evaluator.intake.sweeper")
PAGE = 5000  # due intents read at once
SWEEP_PAGES = 20  # at most this many pages a sweep (100,000 intents); the rest next minute


@dataclass
class SweepResult:
    recovered_intake: int = 0
    reenqueued: int = 0  # due intents given a job or held for one (queued + held)
    jobs_created: int = 0  # traces queued in jobs now
    held: int = 0  # traces held until the queue has room (the intake loop queues them)
    dead: int = 0


async def requeue(intake: Intake, engine: Engine, intents: list[outbox.EvalIntent]) -> int:
    """Create jobs for these intents; returns the traces queued. A trace queued already (on
    its own or in a live batch job) is left alone and its intent's clock too: due again at
    the next sweep, it is queued as soon as that job is gone without having finished it."""
    queued = [QueuedTrace(i.trace_id, i.signals, i.kind) for i in intents]
    created = await intake.create_jobs(queued)
    ids = [i.id for i, q in zip(intents, queued, strict=True) if q.job_id in created]
    await asyncio.to_thread(outbox.mark_enqueued, engine, ids)
    return len(created)


async def sweep(
    intake: Intake, engine: Engine, *, stale_after: timedelta, dead_after_attempts: int
) -> SweepResult:
    result = SweepResult()
    result.recovered_intake = await recover_abandoned(intake.redis, intake.key_prefix)
    for _ in range(SWEEP_PAGES):
        due = await asyncio.to_thread(outbox.due, engine, stale_after=stale_after, limit=PAGE)
        alive = [i for i in due if not await _dead(engine, i, dead_after_attempts, result)]
        moved = await _place(intake, engine, alive, result) if alive else 0
        # A page that moved nothing (all queued already, or the held set full) comes back
        # unchanged: the next minute's sweep tries it again.
        if len(due) < PAGE or not moved:
            break
    if result.reenqueued or result.recovered_intake or result.dead:
        log.warning("sweep: %s", result)
    return result


async def _dead(
    engine: Engine, intent: outbox.EvalIntent, dead_after_attempts: int, result: SweepResult
) -> bool:
    """Move an intent that ran out of attempts to the dead letter state."""
    if intent.attempts < dead_after_attempts:
        return False
    cause = f"gave up after {intent.attempts} attempts; last error: {intent.last_error or '-'}"
    await asyncio.to_thread(outbox.finish, engine, intent.id, status=outbox.DEAD, error=cause)
    log.error("intent %s moved to the dead letter state: %s", intent.id, cause)
    result.dead += 1
    return True


async def _place(
    intake: Intake, engine: Engine, intents: list[outbox.EvalIntent], result: SweepResult
) -> int:
    """Jobs for these intents as far as the bound takes them, the rest held; each intent
    queued or held gets a fresh clock (a trace queued already keeps its own). Returns how
    many moved."""
    queued = [QueuedTrace(i.trace_id, i.signals, i.kind) for i in intents]
    created, held = await intake.place(queued)
    moved = set(created) | set(held)
    ids = [i.id for i, q in zip(intents, queued, strict=True) if q.job_id in moved]
    await asyncio.to_thread(outbox.mark_enqueued, engine, ids)
    result.jobs_created += len(created)
    result.held += len(held)
    result.reenqueued += len(ids)
    return len(ids)


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


@dataclass
class Retried:
    """What `evaluator retry` queued, and what waits for the judge budget."""

    queued: int = 0  # intents back to pending, with jobs
    waiting: int = 0  # traces left as they were: the budget's cap has no room for them now
    until: int = 0  # the end of the earliest window that refused one (epoch s), 0 = none


async def retry_dead(intake: Intake, engine: Engine, trace_ids: list[str] | None) -> Retried:
    """`evaluator retry`: dead intents back to pending, with jobs. Under a judge budget
    only the traces whose re-run evaluations the cap admits now; the rest stay dead."""
    result, rows = Retried(), list[Admission]()
    if intake.budget is not None:
        dead = await asyncio.to_thread(outbox.intents_of, engine, trace_ids, status=outbox.DEAD)
        trace_ids, result, rows = await _charge(intake, dead, sorted({i.trace_id for i in dead}))
        if not trace_ids:
            return result
    then = _admitting(intake, rows)
    revived = await asyncio.to_thread(outbox.revive, engine, trace_ids=trace_ids, then=then)
    if revived:
        await requeue(intake, engine, revived)
    result.queued = len(revived)
    return result


async def retry_errors(intake: Intake, engine: Engine, trace_ids: list[str]) -> Retried:
    """`evaluator retry --errors`: re-run these traces' evaluations (their error records are
    replaced by the new run: records that are not `ok` are overwritten). Under a judge
    budget only the traces the cap admits now."""
    result, rows = Retried(), list[Admission]()
    if intake.budget is not None and trace_ids:
        known = await asyncio.to_thread(outbox.intents_of, engine, trace_ids)
        trace_ids, result, rows = await _charge(intake, known, trace_ids)
    then = _admitting(intake, rows)
    intents = await asyncio.to_thread(outbox.reopen, engine, trace_ids, then)
    if intents:
        await requeue(intake, engine, intents)
    result.queued = len(intents)
    return result


async def _charge(
    intake: Intake, intents: list[outbox.EvalIntent], trace_ids: list[str]
) -> tuple[list[str], Retried, list[Admission]]:
    """Charge each trace's re-run to the budget, all its evaluations or none: per intent
    (one job each) the rubrics its {rubric: p} names, else (an intent queued without a
    budget: the job chooses from the stored trace) every rubric, conservatively. A trace
    with no intent gets one that runs every rubric. Returns the admitted traces."""
    assert intake.budget is not None
    every = [r.name for r in intake.budget.plan.rubrics]
    wanted: dict[str, list[str]] = {t: [] for t in trace_ids}
    charged = {i.trace_id for i in intents}  # the rest get an intent that runs every rubric
    for intent in intents:
        signals = intent.signals if isinstance(intent.signals, dict) else {}
        allocated = allocated_of(signals)
        # Rubrics the job charges itself when they escalate (evaluator.worker.escalation).
        later = escalating_of(signals)
        named = sorted(allocated) if allocated else every
        wanted[intent.trace_id].extend(r for r in named if r not in later)
    groups = [wanted[t] if t in charged else every for t in trace_ids]
    now_s = time.time()
    waits = await intake.budget.charge(groups, now_s)
    admitted = [t for t, w in zip(trace_ids, waits, strict=True) if not w]
    until = min((w for w in waits if w > 0), default=0)
    kind = f"rt-{uuid.uuid4().hex[:8]}"  # each retry is a new judge run: rows of its own
    rows = [
        a
        for t, g, w in zip(trace_ids, groups, waits, strict=True)
        if not w
        for a in intake.budget.admissions(kind, t, g, now_s)
    ]
    return admitted, Retried(waiting=len(trace_ids) - len(admitted), until=until), rows


def _admitting(intake: Intake, rows: list[Admission]) -> Callable[[Connection], None] | None:
    """The retry's admission rows, written in its intents' transaction (OverCap rolls it
    back: Redis was behind SQL, retry again)."""
    budget = intake.budget
    if budget is None or not rows:
        return None
    caps = budget.day_caps
    return lambda conn: admissions.admit(conn, rows, caps)
