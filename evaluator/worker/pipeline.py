"""Evaluate one trace, the body of the arq job, in five steps:

    load     the trace, after counting the attempt on its intent (`load_trace`)
    select   the rubrics that evaluate it (`select_rubrics`: applies_to, rate, tail rules,
             the budget's allocation); batch-mode rubrics park their judge call
    score    each rubric, concurrently (`score_rubrics`)
    write    the records, the intent's "done" and parked calls in one transaction
    emit     the committed records to the record sinks (`write_records`, evaluator.outputs)

Every exit returns a `TraceResult`: a trace not found after its tries, or one with no span a
rubric can use, writes one error record per selected rubric. `TraceJob` carries the job's
trace ID, signals and try through every step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

from arq import Retry
from sqlalchemy.engine import Connection

from evaluator.errors import CaseBuildError, ErrorKind, TraceFormatError
from evaluator.intake.drain import allocated_of
from evaluator.sampling import (
    Reason,
    Signals,
    decide,
    hash_point,
    tail_reason,
    trace_signals,
)
from evaluator.store import batches, outbox
from evaluator.store.models import TRACE_AT_MAX_LAG, EvalRecord
from evaluator.store.store import as_utc
from evaluator.traces.cases import build_case
from evaluator.traces.model import Trace
from evaluator.worker.batch_requests import parked_requests, waits_for_batch
from evaluator.worker.escalation import Outcome, escalations_for, settle
from evaluator.worker.faults import (
    is_infrastructure,
    judge_unavailable,
    kind_of,
    outage_delay_s,
    postpone_delay_s,
)
from evaluator.worker.runtime import Runtime
from evaluator.worker.two_stage import p1_of
from judges.errors import EscalationRefused, JudgeDeferred
from judges.provenance import VerdictIdentity, provenance_json
from judges.redact import redact_case
from judges.rubric import Rubric
from judges.scorers.registry import identity_for, run_scorer
from judges.types import Clients, EvalCase, Score

log = logging.getLogger("evaluator.worker.pipeline")

Selected = list[tuple[Rubric, Reason]]
Results = list[tuple[Score | JudgeDeferred, float]]  # each rubric's outcome and latency (ms)


@dataclasses.dataclass(frozen=True, slots=True)
class TraceJob:
    """What the job was asked, carried through every step: the trace ID (the records' and
    the result's, whatever the source returns), the intake's signals, the try and intent."""

    trace_id: str
    wire: dict[str, Any]  # the signals as enqueued (the budget's escalation grant is there)
    signals: Signals
    allocated: dict[str, float] | None  # {rubric: p} from a budgeted intake
    job_try: int
    intent_id: str | None


class TraceResult(TypedDict):
    """What one evaluation did, from every exit: the arq job's result."""

    trace_id: str
    written: int
    statuses: dict[str, int]  # records by status, and "batched" / "postponed" rubrics


async def evaluate_trace(
    runtime: Runtime,
    trace_id: str,
    wire_signals: dict[str, Any],
    *,
    job_try: int,
    intent_id: str | None = None,
) -> TraceResult:
    """The body of the arq job. Raises arq.Retry while the trace is not ingested yet, and
    while the judge is unavailable and the job has tries left.

    With `intent_id`, the durable intent (evaluator.store.outbox) counts this attempt before any
    work and is marked done in the transaction that writes the records.
    """
    wire = wire_signals or {}
    job = TraceJob(trace_id, wire, Signals.from_wire(wire), allocated_of(wire), job_try, intent_id)
    trace = await load_trace(runtime, job)
    if trace is None:
        return await _write_unusable(runtime, job, _not_found(runtime, job), None)
    job = dataclasses.replace(job, signals=job.signals.merged(trace_signals(trace)))
    try:
        case = build_case(trace)
    except CaseBuildError as exc:
        return await _write_unusable(runtime, job, str(exc), _trace_labels(trace))
    if runtime.settings.redaction.enabled:
        case = redact_case(case, runtime.settings.redaction.kinds)
    chosen = select_rubrics(runtime, job.trace_id, job.signals, case.labels, job.allocated)
    probability = _probabilities(runtime, chosen, job)
    happened, claimed = trace_time(trace)
    # Batch-mode rubrics park their judge call for the Batch API (written with the records).
    waiting = [c for c in chosen if waits_for_batch(runtime, case, c[0])]
    parked = parked_requests(runtime, case, waiting, probability, happened)
    selected = [c for c in chosen if c not in waiting]
    selected, results = await score_rubrics(runtime, job, trace, case, selected)
    held = await _held_back(runtime, job, results)
    records = [
        to_record(
            job.trace_id,
            case.span_id,
            rubric,
            _settle(score, job.job_try),
            case.labels,
            reason=reason,
            latency_ms=latency,
            inclusion_probability=probability[rubric.name],
            trace_at=happened,
            trace_at_claimed=claimed,
        )
        for (rubric, reason), (score, latency) in zip(selected, results, strict=True)
        if not (held and _unavailable(score))
    ]
    written = await write_records(
        runtime,
        records,
        settle=None if held else job.intent_id,
        then=(lambda conn: batches.park(conn, parked)) if parked else None,
    )
    if held and job.job_try < runtime.settings.worker.max_tries:
        # What finished is stored (final records are not redone); the rest comes back later,
        # its finished judge calls served from the reply cache.
        raise Retry(defer=max(_retry_after(d, job.job_try) for d in held))
    return _result(job, records, written, batched=len(parked), postponed=len(held))


async def load_trace(runtime: Runtime, job: TraceJob) -> Trace | None:
    """The trace, or None while it is not ingested. The attempt is counted on the intent
    first, committed on its own: a trace that fails to load must still count towards the dead
    letter, or the sweeper would re-run it forever. A stored trace that no longer validates
    raises TraceFormatError naming it; infrastructure errors pass (the job is retried)."""
    try:
        if runtime.source is None:  # with other jobs' reads (evaluator.worker.group_commit)
            return await runtime.group_read.begin(job.trace_id, job.intent_id)
        return await asyncio.to_thread(_read_from_source, runtime, job)
    except Exception as exc:
        if is_infrastructure(exc):
            raise
        raise TraceFormatError(f"stored trace {job.trace_id!r} no longer loads: {exc}") from exc


def _read_from_source(runtime: Runtime, job: TraceJob) -> Trace | None:
    assert runtime.source is not None
    if job.intent_id is not None:
        outbox.start_attempt(runtime.store.engine, job.intent_id)
    return runtime.source.get_trace(job.trace_id)


def select_rubrics(
    runtime: Runtime,
    trace_id: str,
    signals: Signals,
    labels: dict[str, str] | None,
    allocated: dict[str, float] | None = None,
) -> list[tuple[Rubric, Reason]]:
    """Rubrics that evaluate this trace, with the reason; `labels=None` skips applies_to.
    `allocated` ({rubric: p}, from a budgeted intake) names the rubrics the budget admitted."""
    point = hash_point(trace_id)
    chosen: list[tuple[Rubric, Reason]] = []
    for rubric in runtime.rubrics.rubrics:
        if labels is not None and not rubric.applies_to.matches(labels):
            continue
        if allocated is not None:
            if rubric.name in allocated:
                chosen.append((rubric, tail_reason(signals, runtime.tail_rules) or Reason.RATE))
            continue
        reason = decide(point, runtime.rate(rubric.sampling.rate), signals, runtime.tail_rules)
        if reason is not Reason.NOT_SAMPLED:
            chosen.append((rubric, reason))
    return chosen


def inclusion_probability(
    runtime: Runtime, rubric: Rubric, signals: Signals, allocated: dict[str, float] | None
) -> float:
    """The probability the trace had of being evaluated by `rubric`: what the budget's
    allocation drew it with, else 1 for a trace a tail rule always takes, else the rate."""
    if allocated is not None and rubric.name in allocated:
        return allocated[rubric.name]
    if tail_reason(signals, runtime.tail_rules) is not None:
        return 1.0
    return runtime.rate(rubric.sampling.rate)


def trace_time(
    trace: Trace, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """When the trace happened — its earliest span start, clamped into [now −
    TRACE_AT_MAX_LAG, now] — and the time its spans claimed when the clamp changed it (else
    None). Trends bucket by it: an app clock ahead of ours must not put a record in the
    future, nor a span starting in 1970 (or an old trace sent again) one decades back."""
    starts = [s.start_time for s in trace.spans if s.start_time is not None]
    if not starts:
        return None, None
    claimed = as_utc(min(starts))
    now = now or datetime.now(UTC)
    at = min(max(claimed, now - TRACE_AT_MAX_LAG), now)
    return at, (claimed if at != claimed else None)


def to_record(
    trace_id: str,
    span_id: str,
    rubric: Rubric,
    score: Score,
    labels: dict[str, str],
    *,
    reason: Reason,
    latency_ms: float,
    identity: VerdictIdentity | None = None,
    inclusion_probability: float | None = None,
    trace_at: datetime | None = None,
    trace_at_claimed: datetime | None = None,
) -> EvalRecord:
    """`identity` stands in when the score carries none (a record of a run that never
    reached a scorer); with neither, the record is in the legacy epoch. `trace_at_claimed`:
    the trace's own time when trace_time clamped it (kept in details, for the record)."""
    details = dict(score.details)
    details["sampled_by"] = reason.value
    if inclusion_probability is not None:  # a cascade's cheap stage ran with p1 (two_stage)
        inclusion_probability *= p1_of(score)
    if trace_at_claimed is not None:
        details["trace_at_claimed"] = trace_at_claimed.isoformat()
    ident = score.identity or identity
    provenance = None if ident is None else provenance_json(ident, score.judge_model_reported)
    kind = kind_of(score)
    if kind is not None:
        details["error_kind"] = kind
    return EvalRecord.built(
        trace_id=trace_id,
        span_id=span_id,
        rubric=rubric.name,
        rubric_version=rubric.version,
        scorer=rubric.scorer,
        method=score.method or rubric.resolved_method,
        status=score.status.value,
        score=score.value,
        label=score.label,
        passed=score.passed,
        explanation=score.explanation,
        details=details,
        judge_model=score.judge_model,
        judge_calls=score.usage.calls,
        judge_input_tokens=score.usage.input_tokens,
        judge_output_tokens=score.usage.output_tokens,
        judge_cost_usd=score.usage.cost_usd,
        latency_ms=latency_ms,
        prompt_version=labels.get("prompt_version"),
        model=labels.get("model"),
        feature=labels.get("feature"),
        tenant=labels.get("tenant"),
        inclusion_probability=inclusion_probability,
        trace_at=trace_at,
        **({} if provenance is None else {"epoch": provenance["epoch"], "provenance": provenance}),
    )


async def score_rubrics(
    runtime: Runtime, job: TraceJob, trace: Trace, case: EvalCase, selected: Selected
) -> tuple[Selected, Results]:
    """Each rubric's outcome, scored concurrently, once refused escalations are settled
    (evaluator.worker.escalation). A cascade asks the budget before it escalates to the
    judge, and the router what its cheap stage may decide for this trace."""
    escalations = escalations_for(runtime, job.wire)
    clients = runtime.clients
    if escalations is not None:
        clients = dataclasses.replace(clients, escalation_gate=escalations.ask)
    if runtime.cascade_router is not None:
        clients = runtime.cascade_router.bind(clients, case, trace.label("session.id"))
    scored = await asyncio.gather(*(_score(clients, case, rubric) for rubric, _ in selected))
    return await settle(runtime, escalations, selected, scored)


async def _score(clients: Clients, case: EvalCase, rubric: Rubric) -> tuple[Outcome, float]:
    started = time.perf_counter()
    try:
        score: Outcome = await run_scorer(case, rubric, clients)
    except (JudgeDeferred, EscalationRefused) as exc:
        score = exc  # the job decides (a refused escalation: evaluator.worker.escalation)
    except Exception as exc:  # a scorer bug must not lose the other rubrics' results
        if is_infrastructure(exc):
            raise  # Redis/DB/DNS under the scorer (limiter, cache): the job is retried
        log.exception("scorer %s crashed on trace %s", rubric.name, case.trace_id)
        score = Score.error(
            f"scorer crashed: {type(exc).__name__}: {exc}",
            method=rubric.resolved_method,
            details={"error_kind": ErrorKind.SCORER.value},
        )
    return score, (time.perf_counter() - started) * 1000


async def write_records(
    runtime: Runtime,
    records: list[EvalRecord],
    *,
    settle: str | None = None,
    then: Callable[[Connection], None] | None = None,
) -> int:
    """Upsert the records (and settle the intent `settle`, and run `then`, in the same
    transaction), then hand them to the record sinks: all of them, and which are new (a
    re-run must not send an event or a score twice). Returns how many were new."""
    # With other jobs' writes in one transaction (evaluator.worker.group_commit).
    inserted = await runtime.group_commit.write(records, settle, then)
    new = [r for r, fresh in zip(records, inserted, strict=True) if fresh]
    for sink in runtime.sinks:
        await sink.take(records, new)  # each logs and swallows its own failures
    return len(new)


def _result(
    job: TraceJob, records: Sequence[EvalRecord], written: int, *, batched: int, postponed: int
) -> TraceResult:
    statuses = Counter(r.status for r in records)
    if batched:
        statuses["batched"] = batched
    if postponed:
        statuses["postponed"] = postponed
    return {"trace_id": job.trace_id, "written": written, "statuses": dict(statuses)}


async def _write_unusable(
    runtime: Runtime, job: TraceJob, cause: str, labels: dict[str, str] | None
) -> TraceResult:
    """One error record per selected rubric for a trace that cannot be evaluated (`labels`
    None: not found, so applies_to cannot be checked)."""
    selected = select_rubrics(runtime, job.trace_id, job.signals, labels, job.allocated)
    probability = _probabilities(runtime, selected, job)
    score = Score.error(cause, details={"error_kind": ErrorKind.INPUT.value})
    records = [
        to_record(
            job.trace_id,
            "",
            rubric,
            score,
            labels or {},
            reason=reason,
            latency_ms=0.0,
            identity=identity_for(rubric, runtime.clients),
            inclusion_probability=probability[rubric.name],
        )
        for rubric, reason in selected
    ]
    written = await write_records(runtime, records, settle=job.intent_id)
    return _result(job, records, written, batched=0, postponed=0)


def _not_found(runtime: Runtime, job: TraceJob) -> str:
    """The cause recorded once the job is out of tries; Retry (arq) before that."""
    tries = runtime.settings.worker.trace_not_found_tries
    if job.job_try < tries:
        raise Retry(defer=runtime.settings.worker.trace_not_found_delay_s * job.job_try)
    return f"trace {job.trace_id!r} not found in the store after {tries} tries (was it ingested?)"


def _trace_labels(trace: Trace) -> dict[str, str]:
    """A record's labels for a trace with no case (build_case's, without the model)."""
    found = {
        "prompt_version": trace.prompt_version,
        "feature": trace.feature,
        "tenant": trace.tenant,
    }
    return {k: v for k, v in found.items() if v is not None}


def _probabilities(runtime: Runtime, selected: Selected, job: TraceJob) -> dict[str, float]:
    return {
        rubric.name: inclusion_probability(runtime, rubric, job.signals, job.allocated)
        for rubric, _ in selected
    }


async def _held_back(
    runtime: Runtime, job: TraceJob, results: Results
) -> list[Score | JudgeDeferred]:
    """The judge-unavailable outcomes this run does not record: all of them while the job
    has tries left, or when its intent goes to the sweeper (`_postpone`); none on the last
    try otherwise (they are recorded as errors)."""
    deferred = [outcome for outcome, _ in results if _unavailable(outcome)]
    if not deferred or job.job_try < runtime.settings.worker.max_tries:
        return deferred
    if job.intent_id is not None and await _postpone(runtime, job.intent_id, deferred):
        return deferred
    return []


def _settle(score: Score | JudgeDeferred, job_try: int) -> Score:
    if isinstance(score, JudgeDeferred):
        return Score.error(
            f"{score}; still deferred after {job_try} tries",
            usage=score.usage,
            details={**score.details, "error_kind": ErrorKind.JUDGE_UNAVAILABLE.value},
        )
    return score


def _unavailable(score: Score | JudgeDeferred) -> bool:
    return isinstance(score, JudgeDeferred) or judge_unavailable(score)


def _cause(deferred: Score | JudgeDeferred) -> str:
    return deferred.explanation or "" if isinstance(deferred, Score) else str(deferred)


def _retry_after(deferred: Score | JudgeDeferred, job_try: int) -> float:
    if isinstance(deferred, JudgeDeferred):
        return deferred.retry_after_s
    return outage_delay_s(job_try)


async def _postpone(
    runtime: Runtime, intent_id: str, deferred: list[Score | JudgeDeferred]
) -> bool:
    """Out of the job's tries while the judge is down: hand the intent to the sweeper with
    a growing delay unless the outage is older than judge_outage_max_age_s; True when
    postponed. A trace that waits only for a judge budget's window is postponed to its end,
    however old: the window ends, an outage may not."""
    engine = runtime.store.engine
    cause = _cause(deferred[0])
    if all(isinstance(d, JudgeDeferred) and d.budget for d in deferred):
        delay = max(_retry_after(d, 0) for d in deferred)
        log.info(
            "intent %s: waits %.0f s for the judge budget's window: %s", intent_id, delay, cause
        )
        await asyncio.to_thread(outbox.postpone, engine, intent_id, delay, cause)
        return True
    age = await asyncio.to_thread(outbox.age_s, engine, intent_id)
    if age >= runtime.settings.worker.judge_outage_max_age_s:
        return False
    delay = postpone_delay_s(age)
    log.warning("intent %s: judge unavailable, postponed %.0f s: %s", intent_id, delay, cause)
    await asyncio.to_thread(outbox.postpone, engine, intent_id, delay, cause)
    return True
