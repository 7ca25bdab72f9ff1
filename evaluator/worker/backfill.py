"""`evaluator backfill`: re-evaluate stored traces of a time window through the durable path.

1. `plan_backfill` selects traces ingested in the window and, per trace, the rubrics the job
   will run (the pipeline's own `select_rubrics`: applies_to, sampling rate and tail rules).
   A trace is queued only when some rubric has no `ok` record at its current version for the
   trace's span; records are unique per rubric VERSION, so re-scoring an unchanged version
   would call the judge and write nothing new. Bump a rubric's version to re-score it.
2. The judge cost is estimated before anything starts: for each queued trace, every selected
   rubric that calls a judge (the job runs them all, not only the missing ones) × the typical
   calls and tokens of that rubric's recent records, or DEFAULT_* below when it has none;
   priced with `[pricing]`.
3. `enqueue_backfill` records durable intents (evaluator.store.outbox) and creates the jobs the way
   the sweeper does, under a kind of its own (`bf-…`), so an earlier intent for the same trace
   (done long ago) does not swallow it. `wait_for` polls the intents until done or dead.
   Under a judge budget each trace's evaluations (the rubrics the plan selected for it) are
   charged to the budget's counters first (evaluator.budget.admission, the intake's own
   admission script), all or none per trace: a trace the cap has no room for is not queued
   and is returned as waiting, with the end of the window that refused it. The admission
   rows (evaluator.store.admissions, kind `bf-…`: each run is a new judge run) are written
   in the intents' transaction and checked against the day caps in SQL.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from evaluator.config.redis_clients import async_redis
from evaluator.config.rubrics import RubricSet
from evaluator.config.settings import Settings
from evaluator.errors import BackfillError, CaseBuildError
from evaluator.intake.drain import build_intake
from evaluator.intake.sweeper import requeue
from evaluator.sampling import trace_signals
from evaluator.store import admissions, outbox
from evaluator.store.admissions import Admission
from evaluator.store.models import utcnow
from evaluator.store.store import Store
from evaluator.traces.cases import build_case
from evaluator.traces.model import Trace
from evaluator.worker.pipeline import select_rubrics
from evaluator.worker.runtime import Runtime, sampling_config
from judges.rubric import Rubric
from judges.scorers.registry import needs_judge
from judges.types import Clients

# Used for a rubric with no recent records that called the judge: a rubric prompt with a few
# retrieved documents and a short JSON verdict. Rough on purpose; history replaces it.
DEFAULT_INPUT_TOKENS = 1_500
DEFAULT_OUTPUT_TOKENS = 250
DEFAULT_CALLS = {"two_step": 2.0}  # judge calls per evaluation by method; otherwise 1
HISTORY_RECORDS = 200  # recent records per rubric that "typical" is taken from
_BATCH = 500
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]  # evaluator.store.models and .outbox are imported above


def parse_since(text: str) -> timedelta:
    """'7d', '12h', '30m', '2w', '90s' → timedelta."""
    match = _SINCE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise BackfillError(f"--since {text!r}: expected a positive number and s/m/h/d/w, e.g. 7d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


@dataclass(frozen=True, slots=True)
class Usage:
    """Typical judge usage of one evaluation by a rubric."""

    calls: float
    input_tokens: float
    output_tokens: float
    source: str  # "history (N records)" | "default estimate" | "no judge"


@dataclass
class RubricPlan:
    rubric: Rubric
    usage: Usage
    new: int = 0  # evaluations expected to write a record (missing at this version)
    rescored: int = 0  # evaluations of queued traces that already have an ok record
    model: str = ""
    price_known: bool = True
    cost_usd: float = 0.0

    @property
    def evaluations(self) -> int:
        return self.new + self.rescored


@dataclass
class Plan:
    since: datetime
    in_window: int = 0
    trace_ids: list[str] = field(default_factory=list)
    # Per queued trace, the rubrics its job will run (what a judge budget is charged).
    rubrics_of: dict[str, tuple[str, ...]] = field(default_factory=dict)
    up_to_date: int = 0  # every selected rubric already has an ok record at its version
    not_selected: int = 0  # no rubric (or not --rubric) selects the trace
    unbuildable: int = 0  # no generation span: the job would only store an error again
    rubrics: dict[str, RubricPlan] = field(default_factory=dict)
    judge_configured: bool = True

    @property
    def judge_calls(self) -> float:
        return sum(p.usage.calls * p.evaluations for p in self.rubrics.values())

    @property
    def tokens(self) -> tuple[float, float]:
        plans = self.rubrics.values()
        return (
            sum(p.usage.input_tokens * p.evaluations for p in plans),
            sum(p.usage.output_tokens * p.evaluations for p in plans),
        )

    @property
    def cost_usd(self) -> float | None:
        """Total judge cost, or None when a rubric's judge model has no price."""
        if any(
            not p.price_known and p.usage.calls and p.evaluations for p in self.rubrics.values()
        ):
            return None
        return sum(p.cost_usd for p in self.rubrics.values())


def typical_usage(engine: Engine, rubric: Rubric, *, judge_configured: bool) -> Usage:
    """Mean judge calls and tokens per evaluation over the rubric's recent records."""
    if not judge_configured:
        return Usage(0.0, 0.0, 0.0, "no judge")
    table = _table("eval_records")
    recent = (
        select(table.c.judge_calls, table.c.judge_input_tokens, table.c.judge_output_tokens)
        .where(table.c.rubric == rubric.name, table.c.status.in_(["ok", "error"]))
        .order_by(table.c.created_at.desc())
        .limit(HISTORY_RECORDS)
        .subquery()
    )
    query = select(
        func.count(),
        func.sum(recent.c.judge_calls),
        func.sum(recent.c.judge_input_tokens),
        func.sum(recent.c.judge_output_tokens),
    )
    with engine.connect() as conn:
        n, calls, tokens_in, tokens_out = conn.execute(query).one()
    if n and calls:
        return Usage(calls / n, tokens_in / n, tokens_out / n, f"history ({n} records)")
    if not needs_judge(rubric):
        return Usage(0.0, 0.0, 0.0, "no judge calls" if n else "no judge")
    per_eval = DEFAULT_CALLS.get(rubric.resolved_method, 1.0)
    return Usage(
        per_eval,
        per_eval * DEFAULT_INPUT_TOKENS,
        per_eval * DEFAULT_OUTPUT_TOKENS,
        "default estimate",
    )


def _ok_records(engine: Engine, trace_ids: list[str]) -> set[tuple[str, str, str, str]]:
    table = _table("eval_records")
    query = select(table.c.trace_id, table.c.span_id, table.c.rubric, table.c.rubric_version).where(
        table.c.trace_id.in_(trace_ids), table.c.status == "ok"
    )
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(query)}


def _windowed_batches(engine: Engine, since: datetime) -> Iterator[list[tuple[str, Any]]]:
    """(trace_id, payload) of the window, a batch at a time (key-set pagination on the id)."""
    table = _table("traces")
    last = ""
    while True:
        query = (
            select(table.c.trace_id, table.c.payload)
            .where(table.c.ingested_at >= since, table.c.trace_id > last)
            .order_by(table.c.trace_id)
            .limit(_BATCH)
        )
        with engine.connect() as conn:
            rows = [(r[0], r[1]) for r in conn.execute(query)]
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def plan_backfill(
    store: Store,
    settings: Settings,
    rubrics: RubricSet,
    *,
    since: timedelta,
    rubric: str | None = None,
    now: datetime | None = None,
) -> Plan:
    """What a backfill of the window would queue and what it would cost; changes nothing."""
    if rubric is not None and rubrics.by_name(rubric) is None:
        known = ", ".join(r.name for r in rubrics.rubrics)
        raise BackfillError(f"--rubric {rubric!r}: no such rubric; known: {known}")
    runtime = Runtime(settings=settings, store=store, rubrics=rubrics, clients=Clients())
    plan = Plan(since=(now or utcnow()) - since, judge_configured=settings.judge.configured)
    for r in rubrics.rubrics:
        model = r.judge.model or settings.judge.model
        plan.rubrics[r.name] = RubricPlan(
            rubric=r,
            usage=typical_usage(store.engine, r, judge_configured=plan.judge_configured),
            model=model,
            price_known=model in settings.pricing,
        )
    for batch in _windowed_batches(store.engine, plan.since):
        plan.in_window += len(batch)
        ok = _ok_records(store.engine, [trace_id for trace_id, _ in batch])
        for trace_id, payload in batch:
            trace = Trace.model_validate(payload)
            try:
                case = build_case(trace)
            except CaseBuildError:
                plan.unbuildable += 1
                continue
            selected = [
                r for r, _ in select_rubrics(runtime, trace_id, trace_signals(trace), case.labels)
            ]
            missing = {
                r.name for r in selected if (trace_id, case.span_id, r.name, r.version) not in ok
            }
            if not selected or (rubric is not None and rubric not in {r.name for r in selected}):
                plan.not_selected += 1
            elif not missing or (rubric is not None and rubric not in missing):
                plan.up_to_date += 1
            else:
                plan.trace_ids.append(trace_id)
                plan.rubrics_of[trace_id] = tuple(r.name for r in selected)
                for r in selected:
                    rp = plan.rubrics[r.name]
                    if r.name in missing:
                        rp.new += 1
                    else:
                        rp.rescored += 1
    for rp in plan.rubrics.values():
        rp.cost_usd = settings.cost_usd(
            rp.model,
            round(rp.usage.input_tokens * rp.evaluations),
            round(rp.usage.output_tokens * rp.evaluations),
        )
    return plan


def new_kind() -> str:
    """A fresh intent kind per run (≤ 16 characters, the column's size)."""
    return f"bf-{uuid.uuid4().hex[:8]}"


@dataclass
class Queued:
    """What one `enqueue_backfill` call queued, and what waits for the judge budget."""

    created: int = 0  # jobs created
    queued: int = 0  # traces recorded as intents
    waiting: list[str] = field(default_factory=list)  # traces the budget has no room for now
    until: int = 0  # the end of the earliest window that refused one (epoch s), 0 = none
    too_large: int = 0  # of `waiting`: more evaluations than a cap's window ever admits


async def enqueue_backfill(
    settings: Settings,
    store: Store,
    rubrics: RubricSet,
    trace_ids: list[str],
    *,
    kind: str,
    rubrics_of: dict[str, tuple[str, ...]] | None = None,
) -> Queued:
    """Record intents, then create their jobs (as the sweeper does). Under a judge budget
    only the traces whose evaluations (`rubrics_of[trace]`, else every rubric) the cap
    admits now; the others are returned as waiting."""
    redis = async_redis(settings)
    result = Queued()
    try:
        sampling = sampling_config(settings, rubrics)
        intake = build_intake(redis, settings, sampling=sampling, engine=store.engine)
        every = tuple(r.name for r in rubrics.rubrics)
        for start in range(0, len(trace_ids), _BATCH):
            part = trace_ids[start : start + _BATCH]
            charged: list[Admission] = []
            if intake.budget is not None:
                groups = [(rubrics_of or {}).get(t, every) for t in part]
                now_s = time.time()
                waits = await intake.budget.charge(groups, now_s)
                charged = [
                    a
                    for t, g, w in zip(part, groups, waits, strict=True)
                    if not w
                    for a in intake.budget.admissions(kind, t, g, now_s)
                ]
                result.waiting.extend(t for t, w in zip(part, waits, strict=True) if w)
                result.too_large += waits.count(-1)
                refused = [w for w in waits if w > 0]
                if refused:
                    result.until = min(refused + ([result.until] if result.until else []))
                part = [t for t, w in zip(part, waits, strict=True) if not w]
            # Empty signals: the job merges the stored trace's own (error, cost, latency,
            # feedback) and selects its rubrics as the plan did.
            intents = [outbox.Intent(trace_id=t, kind=kind, signals={}) for t in part]
            if not intents:
                continue
            if intake.budget is None:
                await asyncio.to_thread(outbox.record_intents, store.engine, intents)
            else:  # the admission rows with the intents, checked against the day caps in SQL
                caps = intake.budget.day_caps
                try:
                    await asyncio.to_thread(
                        admissions.record_intents, store.engine, intents, charged, caps
                    )
                except admissions.OverCap:
                    # Redis's counters were behind SQL's rows: rebuilt before the next admission.
                    await intake.budget.resync()
                    result.waiting.extend(part)
                    continue
            rows = [
                outbox.EvalIntent(id=i.id, trace_id=i.trace_id, kind=kind, signals={})
                for i in intents
            ]
            result.created += await requeue(intake, store.engine, rows)
            result.queued += len(intents)
    finally:
        await redis.aclose()
    return result


@dataclass(frozen=True, slots=True)
class Progress:
    total: int
    done: int
    dead: int

    @property
    def finished(self) -> bool:
        return self.done + self.dead >= self.total


def progress(engine: Engine, kind: str, total: int) -> Progress:
    table = _table("eval_intents")
    query = (
        select(table.c.status, func.count()).where(table.c.kind == kind).group_by(table.c.status)
    )
    with engine.connect() as conn:
        counts = {status: n for status, n in conn.execute(query)}
    return Progress(total=total, done=counts.get(outbox.DONE, 0), dead=counts.get(outbox.DEAD, 0))


async def wait_for(
    engine: Engine,
    kind: str,
    total: int,
    on_progress: Callable[[Progress], None],
    *,
    poll_s: float = 1.0,
) -> Progress:
    """Poll the run's intents until every one is done or dead."""
    while True:
        state = await asyncio.to_thread(progress, engine, kind, total)
        on_progress(state)
        if state.finished:
            return state
        await asyncio.sleep(poll_s)


def records_written(engine: Engine, kind: str, since: datetime) -> int:
    """Eval records written (or replaced) since `since` for the traces of this run."""
    records, intents = _table("eval_records"), _table("eval_intents")
    query = select(func.count()).where(
        records.c.created_at >= since,
        records.c.trace_id.in_(select(intents.c.trace_id).where(intents.c.kind == kind)),
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())
