"""Worker side of intake: drain trace IDs in batches, decide sampling, enqueue arq jobs.

The hot path is one LPOP of up to `batch` entries, a hash per ID, and, for the sampled few,
one Lua call that creates their jobs in bulk, up to `worker.traces_per_job` traces per job
(the job contract and its writer: evaluator.intake.jobs). Every decision is counted in a
Redis hash.

A popped batch is parked in the worker's processing list and deleted only after its intents
are committed; a drain that fails (database down) leaves it there and the next drain of the
same worker processes that batch again before popping anything new. An entry that cannot be
decoded or stored is moved to `{prefix}:intake:quarantine` (counted), never its batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, cast

from arq.utils import timestamp_ms
from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from evaluator.budget import windows
from evaluator.budget.admission import BudgetGate, Candidate
from evaluator.budget.allocation import BudgetPlan
from evaluator.config.settings import Settings
from evaluator.intake import backlog
from evaluator.intake.enqueue import intake_key
from evaluator.intake.jobs import JobQueue, QueuedTrace, kind_of
from evaluator.intake.parking import (
    POP_TO_PROCESSING_LUA,
    PROCESSING_TTL_S,
    alive_prefix,
    processing_prefix,
    quarantine,
    record_tolerantly,
)
from evaluator.intake.serialization import deserialize, serialize
from evaluator.intake.stored_tails import StoredTails
from evaluator.intake.wire import SEPARATOR, bare_id, decode, decode_entry
from evaluator.sampling import Reason, Signals, TailRules, decide, hash_point
from evaluator.store.admissions import Offer
from evaluator.store.outbox import done_among
from judges.llm.backoff import Backoff

log = logging.getLogger("evaluator.intake.drain")


def stats_key(prefix: str) -> str:
    return f"{prefix}:stats"


_SEPARATOR = SEPARATOR.encode()


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """The widest rate over all rubrics decides whether a trace becomes a job at all."""

    max_rate: float
    rules: TailRules
    # With a judge budget the intake allocates per rubric (evaluator.budget.allocation).
    budget: BudgetPlan | None = None


@dataclass
class DrainResult:
    popped: int = 0
    invalid: int = 0
    sampled: int = 0
    jobs_created: int = 0  # traces queued in jobs (a job carries up to traces_per_job)
    # Sampled, intent recorded, job not created: the queue is at worker.max_queue_depth.
    held_back: int = 0
    # With a budget: (trace, rubric) evaluations the cap refused (their traces may be in).
    budget_refused: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def allocated_of(wire_signals: dict[str, Any]) -> dict[str, float] | None:
    """The {rubric: p} a budgeted intake put on the job (None: no budget, or an old job)."""
    raw = wire_signals.get("pi")
    if not isinstance(raw, dict):
        return None
    return {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
    }


def escalating_of(wire_signals: dict[str, Any]) -> frozenset[str]:
    """The rubrics a budgeted intake drew without charging: the job charges them when they
    escalate to the judge (evaluator.worker.escalation)."""
    raw = wire_signals.get("escalate")
    return frozenset(str(r) for r in raw) if isinstance(raw, list) else frozenset()


class Intake:
    """Drains one intake list. With an `engine`, sampled traces are recorded as durable
    intents (evaluator.store.outbox) before their jobs exist, and a popped batch is parked in this
    worker's processing list until then, so a crash mid-batch loses nothing."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str,
        queue_name: str,
        sampling: SamplingConfig,
        engine: Engine | None = None,
        max_queue_depth: int = 0,
        traces_per_job: int = 1,
    ) -> None:
        self.redis = redis
        self.traces_per_job = traces_per_job
        self.max_queue_depth = max_queue_depth
        self.jobs = JobQueue(
            redis,
            key_prefix=key_prefix,
            queue_name=queue_name,
            max_queue_depth=max_queue_depth,
            traces_per_job=traces_per_job,
        )
        self.sampling = sampling
        self.engine = engine
        self.key_prefix = key_prefix
        self.worker_id = uuid.uuid4().hex[:12]
        self._key = intake_key(key_prefix)
        self._processing = f"{processing_prefix(key_prefix)}{self.worker_id}"
        self._alive = f"{alive_prefix(key_prefix)}{self.worker_id}"
        self._stats_key = stats_key(key_prefix)
        self._pop_script = redis.register_script(POP_TO_PROCESSING_LUA)
        self._stored = StoredTails(sampling.rules)  # tail rules on stored traces
        # A batch popped and not yet finished: the next drain processes it again (parked).
        self._unfinished = False
        plan = sampling.budget
        self.budget = (
            None
            if plan is None
            else BudgetGate(redis, key_prefix=key_prefix, plan=plan, engine=engine)
        )

    async def drain_once(self, batch: int, *, now_s: float | None = None) -> DrainResult:
        """One batch. `now_s` (epoch seconds) stands for the clock in budget tests."""
        result = DrainResult()
        again = self._unfinished  # the parked batch of a drain that failed comes first
        if self.budget is not None:
            clock = time.time() if now_s is None else now_s
            await self.budget.release_due(clock)
            if self.engine is not None:  # rate draws of ended cap windows (budget.windows)
                closed = await windows.close_due(self.budget, self.engine, clock)
                if closed:  # intake work: behind the bound like the rest (held if full)
                    await self.place([QueuedTrace(i.trace_id, i.signals, i.kind) for i in closed])
        await self.refill()  # held-back traces first, as far as the queue has room
        if self.engine is None:
            popped = self.redis.lpop(self._key, batch)
            entries = await cast("Awaitable[list[bytes] | None]", popped)
        else:
            # Returns this worker's parked batch first if a previous drain of it failed.
            entries = await self._pop_script(
                keys=[self._key, self._processing, self._alive], args=[batch, PROCESSING_TTL_S]
            )
            self._unfinished = bool(entries)
        if not entries:
            return result
        result.popped = len(entries)
        jobs: list[QueuedTrace] = []
        now = timestamp_ms()
        if self.budget is not None:
            return await self._drain_budgeted(
                entries, result, time.time() if now_s is None else now_s, again=again
            )
        rate = self.sampling.max_rate
        no_signals = Signals()
        not_sampled = 0
        bad: list[bytes] = []
        unsignalled: list[str] = []  # not sampled and no signals: the stored trace may have some
        for entry in entries:
            # Hot path: a bare ID (no signals) needs only a hash against the rate.
            if _SEPARATOR not in entry:
                trace_id = bare_id(entry)  # None: not one (decode says why, and it is quarantined)
                if trace_id is not None and hash_point(trace_id) >= rate:
                    not_sampled += 1
                    unsignalled.append(trace_id)
                    continue
            try:
                trace_id, signals = decode(entry)
            except Exception as exc:  # any bytes may be in the list: one entry, not the batch
                bad.append(entry)
                log.warning("intake: quarantined invalid entry %r: %s", entry[:80], exc)
                continue
            reason = decide(hash_point(trace_id), rate, signals or no_signals, self.sampling.rules)
            result.reasons[reason.value] += 1
            if reason is Reason.NOT_SAMPLED:
                if signals is None:
                    unsignalled.append(trace_id)
                continue
            result.sampled += 1
            wire_signals = signals.to_wire() if signals else {}
            kind = kind_of(reason)
            jobs.append(QueuedTrace(trace_id, wire_signals, kind))
        if not_sampled:
            result.reasons[Reason.NOT_SAMPLED.value] += not_sampled
        if unsignalled and self.engine is not None:
            # Tail rules see the stored trace too, however the ID arrived (README, Sampling).
            for trace_id, signals in (await self._stored.among(self.engine, unsignalled)).items():
                reason = decide(hash_point(trace_id), rate, signals, self.sampling.rules)
                if reason is Reason.NOT_SAMPLED:
                    continue
                result.reasons[Reason.NOT_SAMPLED.value] -= 1
                result.reasons[reason.value] += 1
                result.sampled += 1
                wire_signals = signals.to_wire()
                kind = kind_of(reason)
                jobs.append(QueuedTrace(trace_id, wire_signals, kind))
        return await self._finish(entries, result, jobs, bad, now)

    async def _finish(
        self,
        entries: list[bytes],
        result: DrainResult,
        jobs: list[QueuedTrace],
        bad: list[bytes],
        now: int,
        *,
        recorded: bool = False,
    ) -> DrainResult:
        """Record the intents (unless `recorded`), create the jobs, quarantine the bad
        entries, count."""
        if jobs and self.engine is not None and not recorded:
            intents = [q.intent() for q in jobs]
            refused = await asyncio.to_thread(record_tolerantly, self.engine, intents)
            if refused:
                refused_ids = {i.trace_id for i in refused}
                jobs = [j for j, i in zip(jobs, intents, strict=True) if i not in refused]
                bad.extend(e for e in entries if _trace_id_of(e) in refused_ids)
        if jobs:
            # Back-pressure: what the queue has no room for is held (its intent pending).
            queued, held = await self.place(jobs, now)
            result.jobs_created, result.held_back = len(queued), len(held)
        if bad:
            result.invalid += len(bad)
            await quarantine(self.redis, self.key_prefix, bad)
        if self.engine is not None:
            # Only now: every entry of the batch is an intent, a non-sample or quarantined.
            await self.redis.delete(self._processing)
            self._unfinished = False
        await self._count(result)
        return result

    async def _drain_budgeted(
        self, entries: list[bytes], result: DrainResult, now_s: float, *, again: bool
    ) -> DrainResult:
        """The batch under a judge budget: every entry decoded (labels name the stratum),
        the allocation draws per rubric and the cap admits; jobs carry {rubric: p}, and the
        drawn escalating rubrics the job charges itself (evaluator.worker.escalation).
        `again`: this intake's previous drain failed, so this is its parked batch: the
        evaluations it admitted then are admitted again as they were, without a second
        charge."""
        assert self.budget is not None
        bad: list[bytes] = []
        candidates: list[Candidate] = []
        for entry in entries:
            try:
                trace_id, signals, labels = decode_entry(entry)
            except Exception as exc:  # any bytes may be in the list: one entry, not the batch
                bad.append(entry)
                log.warning("intake: quarantined invalid entry %r: %s", entry[:80], exc)
                continue
            candidates.append(Candidate(entry, trace_id, signals or Signals(), labels))
        if self.engine is not None:
            # Tail rules see the stored trace too, however the ID arrived (README, Sampling).
            bare = [c.trace_id for c in candidates if c.signals == Signals()]
            stored = await self._stored.among(self.engine, bare) if bare else {}
            candidates = [
                Candidate(c.entry, c.trace_id, stored[c.trace_id], c.labels)
                if c.trace_id in stored
                else c
                for c in candidates
            ]
        offer = self.engine is not None  # rate draws wait for their cap window's close
        allocation = await self.budget.allocate(
            candidates, self.sampling.rules, now_s, again=again, offer=offer
        )
        jobs: list[QueuedTrace] = []
        now = timestamp_ms()
        for index, tail, chosen in allocation.admitted:
            c = candidates[index]
            wire_signals: dict[str, Any] = {**c.signals.to_wire(), "pi": chosen}
            uncharged = sorted(r for r in chosen if r in self.budget.escalating)
            if uncharged:  # drawn, not charged: the job charges their judge calls (if any)
                wire_signals["escalate"] = uncharged
            kind = "tail" if tail else "rate"
            jobs.append(QueuedTrace(c.trace_id, wire_signals, kind))
        result.sampled = len(jobs)
        result.reasons.update(allocation.reasons)
        result.budget_refused = allocation.refused_evaluations
        if offer:
            assert self.engine is not None
            await windows.record_drain(
                self.engine,
                self.budget,
                [q.intent() for q in jobs],
                [
                    a
                    for q in jobs
                    for a in self.budget.admissions(
                        q.kind, q.trace_id, list(q.signals["pi"]), now_s
                    )
                ],
                [
                    Offer(candidates[i].trace_id, "rate", candidates[i].signals.to_wire(), draws)
                    for i, draws in allocation.offered
                ],
                now_s,
            )
        await self.budget.defer(allocation.deferred)
        return await self._finish(entries, result, jobs, bad, now, recorded=offer)

    @property
    def bounded(self) -> bool:
        """Back-pressure applies: a bound, and durable intents to hold the rest by."""
        return self.max_queue_depth > 0 and self.engine is not None

    async def room(self) -> int:
        """How many more traces the queue takes before `max_queue_depth` (0: no bound)."""
        if self.max_queue_depth <= 0:
            return 1 << 62
        return max(0, self.max_queue_depth - await self.jobs.depth())

    async def place(
        self, jobs: list[QueuedTrace], now_ms: int | None = None
    ) -> tuple[list[str], list[str]]:
        """Queue these traces as far as `max_queue_depth` (in traces) takes them, packed as
        the intake packs them, and hold the rest for `refill` (evaluator.intake.backlog);
        while traces are held, new ones wait behind them (first in, first queued). Returns
        the job ids queued and held (a trace queued already is neither). The queue ends at
        most one batch over the bound (the scripts create a job while it is under)."""
        now_ms = timestamp_ms() if now_ms is None else now_ms
        if not self.bounded:
            return await self._queue(jobs, now_ms), []
        queued: list[str] = []
        over = jobs
        if not await backlog.waiting(self.redis, self.key_prefix):
            queued, refused = await self.jobs.pack(jobs, now_ms, bounded=True)
            left = set(refused)
            over = [q for q in jobs if q.job_id in left]
        items = [(q.job_id, serialize(q.args())) for q in over]
        await backlog.hold(self.redis, self.key_prefix, items, now_ms)
        return queued, [q.job_id for q in over]

    async def refill(self) -> int:
        """Jobs for held traces, oldest first, as far as the queue has room: a backlog left
        by back-pressure drains at the worker's rate (each drain calls this), not the
        sweeper's. A held trace whose intent is done needs no job. Returns traces queued."""
        if not self.bounded or not await backlog.waiting(self.redis, self.key_prefix):
            return 0
        # Whole batches: the last one may take the queue up to one batch over the bound.
        room = -(-min(await self.room(), backlog.REFILL_MAX) // self.traces_per_job)
        held = await backlog.peek(self.redis, self.key_prefix, room * self.traces_per_job)
        if not held:
            return 0
        jobs, broken = [], []
        for job_id, payload in held:
            try:
                jobs.append(QueuedTrace(*deserialize(payload)))
            except Exception:  # not ours: its intent stays pending for the sweeper
                broken.append(job_id)
        assert self.engine is not None
        ids = [q.intent().id for q in jobs]
        done = await asyncio.to_thread(done_among, self.engine, ids) if ids else set()
        todo = [q for q, i in zip(jobs, ids, strict=True) if i not in done]
        queued, over = await self.jobs.pack(todo, timestamp_ms(), bounded=True)
        left = set(over)
        gone = [*broken, *(q.job_id for q in jobs if q.job_id not in left)]
        await backlog.release(self.redis, self.key_prefix, gone)
        if queued:
            await cast(
                "Awaitable[int]", self.redis.hincrby(self._stats_key, "released", len(queued))
            )
        return len(queued)

    async def create_jobs(self, jobs: list[QueuedTrace]) -> set[str]:
        """Jobs for these traces, packed as the intake packs them, leaving out each trace
        queued already (on its own or in a live batch job), whatever the bound: `evaluator
        retry`, backfill. Returns the job ids (QueuedTrace.job_id) of the traces queued."""
        return set(await self._queue(jobs, timestamp_ms()))

    async def follow_up(self, jobs: list[tuple[QueuedTrace, int]], *, replacing: str = "") -> int:
        """Jobs of their own, each at its time (epoch ms), for members a batch job hands on
        (a retry, or no room to start before its deadline). `replacing`: that batch job's
        id; it leaves the queue with the same call (it is done with them), so the queue's
        depth in traces does not grow."""
        queued, _ = await self.jobs.create_single(
            jobs, check_batches=False, bounded=False, replacing=replacing
        )
        return len(queued)

    async def _queue(self, jobs: list[QueuedTrace], now_ms: int) -> list[str]:
        """`JobQueue.pack` with no bound: the job ids of the traces queued."""
        return (await self.jobs.pack(jobs, now_ms, bounded=False))[0]

    async def _count(self, result: DrainResult) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self._stats_key, "received", result.popped)
        if result.invalid:
            pipe.hincrby(self._stats_key, "invalid", result.invalid)
        if result.held_back:
            pipe.hincrby(self._stats_key, "held_back", result.held_back)
        if result.budget_refused:
            pipe.hincrby(self._stats_key, "budget_refused_evaluations", result.budget_refused)
        for reason, n in result.reasons.items():
            pipe.hincrby(self._stats_key, reason, n)
        pipe.hincrby(self._stats_key, "jobs_created", result.jobs_created)
        await pipe.execute()

    async def drain_all(self, batch: int, *, now_s: float | None = None) -> DrainResult:
        """Drain until the list is empty (burst mode, CLI); returns the totals."""
        total = DrainResult()
        while True:
            part = await self.drain_once(batch, now_s=now_s)
            if not part.popped:
                return total
            total.popped += part.popped
            total.invalid += part.invalid
            total.sampled += part.sampled
            total.jobs_created += part.jobs_created
            total.held_back += part.held_back
            total.budget_refused += part.budget_refused
            total.reasons.update(part.reasons)

    async def run_forever(self, batch: int, idle_sleep_s: float) -> None:
        """The worker's background loop; survives Redis and database errors with a back-off
        (a failed batch stays parked and is retried first)."""
        backoff = Backoff(base=max(idle_sleep_s, 0.1), cap=5.0)
        while True:
            try:
                result = await self.drain_once(batch)
                backoff.reset()
                if result.popped < batch:
                    await asyncio.sleep(idle_sleep_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("intake: drain failed (%r); batch kept, retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def stats(self) -> dict[str, int]:
        raw = await cast("Awaitable[dict[bytes, bytes]]", self.redis.hgetall(self._stats_key))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def pending(self) -> int:
        return int(await cast("Awaitable[int]", self.redis.llen(self._key)))


def _trace_id_of(entry: bytes) -> str:
    return entry.decode("utf-8", "replace").partition(SEPARATOR)[0]


def build_intake(
    redis: Redis, settings: Settings, *, sampling: SamplingConfig, engine: Engine | None
) -> Intake:
    """The one way to build the intake (worker, burst runs, sweeper, `evaluator retry`)."""
    return Intake(
        redis,
        key_prefix=settings.redis.key_prefix,
        queue_name=settings.redis.queue_name,
        sampling=sampling,
        engine=engine,
        max_queue_depth=settings.worker.max_queue_depth,
        traces_per_job=settings.worker.traces_per_job,
    )
