"""Evaluate one trace: load it, select rubrics, build the case, score, write records."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from arq import Retry
from sqlalchemy.engine import Connection

from evaluator.errors import CaseBuildError, ErrorKind
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
from judges.errors import EscalationRefused, JudgeDeferred
from judges.provenance import VerdictIdentity, provenance_json
from judges.redact import redact_case
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.types import Clients, EvalCase, Score

log = logging.getLogger("evaluator.worker.pipeline")


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


async def _score(
    runtime: Runtime, clients: Clients, case: EvalCase, rubric: Rubric
) -> tuple[Outcome, float]:
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
    transaction), then tell metrics (all of them: work done) and the export sinks (only
    those written: a re-run must not send an event or a score twice)."""

    # With other jobs' writes in one transaction (evaluator.worker.group_commit).
    inserted = await runtime.group_commit.write(records, settle, then)
    written = [r for r, new in zip(records, inserted, strict=True) if new]
    if runtime.recorder is not None:
        try:
            await runtime.recorder.observe(records)
        except Exception:
            log.warning(
                "metrics: flush to Redis failed; the counts are kept for the next one",
                exc_info=True,
            )
    if written and runtime.otel is not None:
        await runtime.otel.export(written)  # logs and swallows its own failures
    if written and runtime.langfuse is not None:
        try:
            await runtime.langfuse.send(written)
        except Exception as exc:  # the record is stored; the copy in Langfuse is best effort
            log.warning("langfuse: could not send %d scores: %s", len(written), exc)
    return len(written)


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


def _errors_for(
    runtime: Runtime,
    trace_id: str,
    selected: list[tuple[Rubric, Reason]],
    cause: str,
    labels: dict[str, str],
    probability: dict[str, float],
) -> list[EvalRecord]:
    from judges.scorers.identity import identity_for

    score = Score.error(cause, details={"error_kind": ErrorKind.INPUT.value})
    return [
        to_record(
            trace_id,
            "",
            rubric,
            score,
            labels,
            reason=reason,
            latency_ms=0.0,
            identity=identity_for(rubric, runtime.clients),
            inclusion_probability=probability.get(rubric.name),
        )
        for rubric, reason in selected
    ]


async def evaluate_trace(
    runtime: Runtime,
    trace_id: str,
    wire_signals: dict[str, Any],
    *,
    job_try: int,
    intent_id: str | None = None,
) -> dict[str, Any]:
    """The body of the arq job. Raises arq.Retry while the trace is not ingested yet.

    With `intent_id`, the durable intent (evaluator.store.outbox) counts this attempt before any
    work and is marked done in the transaction that writes the records.
    """
    signals = Signals.from_wire(wire_signals or {})
    allocated = allocated_of(wire_signals or {})

    def begin() -> Trace | None:
        if intent_id is not None:
            # Committed on its own, before the read: a trace that fails to load must still
            # count towards the dead letter, or the sweeper would re-run it forever.
            outbox.start_attempt(runtime.store.engine, intent_id)
        return runtime.traces.get_trace(trace_id)

    if runtime.source is None:
        # The attempt count and the read with other jobs' (evaluator.worker.group_commit).
        trace = await runtime.group_read.begin(trace_id, intent_id)
    else:
        trace = await asyncio.to_thread(begin)
    if trace is None:
        tries = runtime.settings.worker.trace_not_found_tries
        if job_try < tries:
            raise Retry(defer=runtime.settings.worker.trace_not_found_delay_s * job_try)
        selected = select_rubrics(runtime, trace_id, signals, None, allocated)
        cause = f"trace {trace_id!r} not found in the store after {tries} tries (was it ingested?)"
        probability = _probabilities(runtime, selected, signals, allocated)
        errors = _errors_for(runtime, trace_id, selected, cause, {}, probability)
        written = await write_records(runtime, errors, settle=intent_id)
        return {"trace_id": trace_id, "written": written, "statuses": {"error": len(selected)}}

    signals = signals.merged(trace_signals(trace))
    try:
        case = build_case(trace)
    except CaseBuildError as exc:
        labels = {
            k: v
            for k, v in {
                "prompt_version": trace.prompt_version,
                "feature": trace.feature,
                "tenant": trace.tenant,
            }.items()
            if v is not None
        }
        selected = select_rubrics(runtime, trace_id, signals, labels, allocated)
        probability = _probabilities(runtime, selected, signals, allocated)
        errors = _errors_for(runtime, trace_id, selected, str(exc), labels, probability)
        written = await write_records(runtime, errors, settle=intent_id)
        return {"trace_id": trace_id, "written": written, "statuses": {"error": len(selected)}}

    if runtime.settings.redaction.enabled:
        case = redact_case(case, runtime.settings.redaction.kinds)
    chosen = select_rubrics(runtime, trace_id, signals, case.labels, allocated)
    probability = _probabilities(runtime, chosen, signals, allocated)
    happened, claimed = trace_time(trace)
    # Batch-mode rubrics park their judge call for the Batch API (written with the records).
    parked = parked_requests(
        runtime,
        case,
        [c for c in chosen if waits_for_batch(runtime, case, c[0])],
        probability,
        happened,
    )
    waiting = {row["rubric"] for row in parked}
    selected = [c for c in chosen if c[0].name not in waiting]
    # With a judge budget, a cascade's judge call is charged when it escalates.
    escalations = escalations_for(runtime, wire_signals or {})
    clients = runtime.clients
    if escalations is not None:
        clients = dataclasses.replace(clients, escalation_gate=escalations.ask)
    if runtime.cascade_router is not None:  # what a cascade's cheap stage may decide
        route = runtime.cascade_router.for_trace(case, trace.label("session.id"))
        clients = dataclasses.replace(clients, cascade_route=route)
    scored = await asyncio.gather(*(_score(runtime, clients, case, r) for r, _ in selected))
    selected, results = await settle(runtime, escalations, selected, scored)
    deferred = [s for s, _ in results if _unavailable(s)]
    last_try = job_try >= runtime.settings.worker.max_tries
    if deferred and last_try and intent_id is not None:
        # Out of this job's tries while the judge is down: hand the intent to the sweeper
        # with a growing delay, until the outage is older than judge_outage_max_age_s.
        last_try = not await _postpone(runtime, intent_id, deferred)
    records = [
        to_record(
            trace_id,
            case.span_id,
            rubric,
            _settle(score, job_try),
            case.labels,
            reason=reason,
            latency_ms=latency,
            inclusion_probability=probability[rubric.name],
            trace_at=happened,
            trace_at_claimed=claimed,
        )
        for (rubric, reason), (score, latency) in zip(selected, results, strict=True)
        if last_try or not _unavailable(score)
    ]
    retry = bool(deferred) and not last_try
    written = await write_records(
        runtime,
        records,
        settle=None if retry else intent_id,
        then=(lambda conn: batches.park(conn, parked)) if parked else None,
    )
    if retry and job_try < runtime.settings.worker.max_tries:
        # What finished is stored (final records are not redone); the rest comes back later,
        # its finished judge calls served from the reply cache.
        raise Retry(defer=max(_retry_after(d, job_try) for d in deferred))
    statuses = Counter(r.status for r in records)
    if parked:
        statuses["batched"] = len(parked)
    if retry:
        statuses["postponed"] = len(deferred)
    return {"trace_id": trace_id, "written": written, "statuses": dict(statuses)}


def _probabilities(
    runtime: Runtime,
    selected: list[tuple[Rubric, Reason]],
    signals: Signals,
    allocated: dict[str, float] | None,
) -> dict[str, float]:
    return {
        rubric.name: inclusion_probability(runtime, rubric, signals, allocated)
        for rubric, _ in selected
    }


def _cause(deferred: Score | JudgeDeferred) -> str:
    return deferred.explanation or "" if isinstance(deferred, Score) else str(deferred)


def _retry_after(deferred: Score | JudgeDeferred, job_try: int) -> float:
    if isinstance(deferred, JudgeDeferred):
        return deferred.retry_after_s
    return outage_delay_s(job_try)


async def _postpone(
    runtime: Runtime, intent_id: str, deferred: list[Score | JudgeDeferred]
) -> bool:
    """Postpone the intent unless the outage has lasted too long; True when postponed. A
    trace that waits only for a judge budget's window is postponed to its end, however old:
    the window ends, an outage may not."""
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
