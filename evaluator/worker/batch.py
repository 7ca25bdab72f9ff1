"""Batch mode: park a rubric's judge call in SQL, send the parked calls to the provider's
Batch API once a minute, and write the records when a batch completes.

The job that evaluates a trace parks the request (`parked_requests`, stored in the same
transaction as the trace's other records); `batch_job` (an arq cron job) first collects every
open batch that has finished, then submits what is pending. Records go through the pipeline's
`to_record` and `write_records`, keyed by the same unique identity as online mode, so a result read
twice (a duplicated output line, a batch collected again after a crash) writes once.

What happens to a request whose batch ends without an answer for it:
- `expired` or `cancelled`: it returns to pending and goes out in the next batch, up to
  `judge.batch_max_submissions` submissions; then it is an error record naming the cause.
  OpenAI writes each such request into the batch's error file with code `batch_expired` /
  `batch_cancelled`; a provider that leaves it out of both files is treated the same;
- `failed` (the provider rejected the file): an error record with the provider's errors at
  once: sending the same file again would fail the same way;
- `completed` without a line for it: an error record;
- its rubric version is no longer loaded (the rubric changed or was removed while the request
  waited): an error record for that version (`error_kind = rubric_changed`), never a silent
  drop; `evaluator retry --errors --kind rubric_changed` re-runs those traces under the
  loaded version. A pending request in that state is turned into that record at submit time
  instead of being paid for.

Each request ends in exactly one record for its (trace, span, rubric, rubric version).

One run at a time across workers (a Redis lock, evaluator.worker.run_lock). A run that dies
between the provider creating a batch and the transaction that records it leaves that batch
unrecorded while its requests are still pending: before it submits, the next run lists the
account's recent batches, finds the ones marked as this deployment's (`metadata.source =
"evaluator"`, `metadata.name = <redis.key_prefix>`) that `judge_batches` lacks, and records
them with their requests (`adopt`), so they are neither sent twice nor lost. Left open: such a
batch beyond the 100 most recent of the account, whose requests then go out again (paid
twice, written once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from typing import Any

from sqlalchemy.engine import Connection

from evaluator.errors import ErrorKind
from evaluator.sampling import Reason
from evaluator.store import batches
from evaluator.store.batches import BatchRequest
from evaluator.store.models import EvalRecord, utcnow
from evaluator.store.store import as_utc
from evaluator.worker.pipeline import to_record, write_records
from evaluator.worker.run_lock import held
from evaluator.worker.runtime import Runtime
from judges.errors import JudgeError, judge_failure
from judges.llm.batch import (
    BatchClient,
    BatchResult,
    BatchStatus,
    batch_line,
    custom_ids_of,
    fitting,
    metadata_for,
    read_results,
    reply_of,
)
from judges.rubric import Rubric
from judges.scorers import llm_rubric
from judges.scorers.registry import identity_for
from judges.types import Score, Status

log = logging.getLogger("evaluator.worker.batch")

_UNANSWERED_ON = frozenset({"expired", "cancelled"})


async def batch_job(ctx: dict[str, Any]) -> dict[str, Any]:
    """The cron job: collect finished batches, then submit pending requests. One run at a
    time across workers: a run longer than the minute would otherwise overlap the next, and
    both would send the same pending requests (two paid batches)."""
    runtime = ctx["runtime"]
    settings = runtime.settings
    key = f"{settings.redis.key_prefix}:batches:lock"
    # Longer than the job's timeout, so it lapses only after a run that died holding it.
    ttl_s = settings.worker.job_timeout_s + 60
    async with held(ctx["redis"], key, ttl_s=ttl_s) as mine:
        if not mine:
            return {"skipped": "another batch run is in progress"}
        return await run_batches(runtime)


async def run_batches(runtime: Runtime) -> dict[str, Any]:
    """One run; returns the batches collected, the records written (of which `rubric_changed`
    are error records of requests whose rubric version is no longer loaded) and the requests
    submitted."""
    judge = runtime.clients.judge
    counts = {"collected": 0, "written": 0, "submitted": 0, "rubric_changed": 0}
    if judge is None:
        return counts
    client = BatchClient.for_judge(judge)
    try:
        counts["collected"], counts["written"], changed = await collect(runtime, client)
        submitted, written, changed_pending = await submit(runtime, client)
    finally:
        await client.aclose()
    counts["submitted"] = submitted
    counts["written"] += written
    counts["rubric_changed"] = changed + changed_pending
    return counts


def stale_cause(runtime: Runtime, request: BatchRequest) -> str | None:
    """Why this request's result can no longer be recorded as judged, or None: the loaded
    rubric of its name is another version (or gone), so the prompt it carries is not the
    rubric's any more."""
    rubric = runtime.rubrics.by_name(request.rubric)
    if rubric is not None and rubric.version == request.rubric_version:
        return None
    now = "was removed" if rubric is None else f"is now version {rubric.version}"
    return (
        f"rubric {request.rubric} {now}; this request for version {request.rubric_version} "
        "was not judged (it waited in batch mode across the change): re-run with "
        "`evaluator retry --errors --kind rubric_changed`"
    )


async def submit(runtime: Runtime, client: BatchClient) -> tuple[int, int, int]:
    """Send the oldest pending requests as one batch (at most `judge.batch_max_requests`
    requests and `judge.batch_max_bytes` bytes). Returns (requests sent, records
    written, of which rubric_changed): a pending request whose rubric version is no longer
    loaded is not sent but recorded as an error at once."""
    engine = runtime.store.engine
    limit = runtime.settings.judge.batch_max_requests
    waiting = await asyncio.to_thread(batches.pending, engine, limit)
    stale = [(r, cause) for r in waiting if (cause := stale_cause(runtime, r)) is not None]
    written = 0
    if stale:
        records = [_stale_record(runtime, r, cause, batch_id=None) for r, cause in stale]
        failed = [r.custom_id for r, _ in stale]
        written = await write_records(
            runtime, records, then=lambda conn: batches.finish(conn, failed=failed)
        )
        log.warning("batch mode: %d pending requests of a changed rubric recorded", len(stale))
        gone = set(failed)
        waiting = [r for r in waiting if r.custom_id not in gone]
    if not waiting:
        return 0, written, len(stale)
    if await adopt(runtime, client):
        # Requests an earlier run did send are with that batch now: read what is left.
        waiting = await asyncio.to_thread(batches.pending, engine, limit)
        waiting = [r for r in waiting if stale_cause(runtime, r) is None]
        if not waiting:
            return 0, written, len(stale)
    lines = [batch_line(r.custom_id, r.body) for r in waiting]
    # The provider refuses an input file over 200 MB: the rest waits for the next run.
    sent = fitting(lines, runtime.settings.judge.batch_max_bytes)
    waiting, lines = waiting[:sent], lines[:sent]
    # A crash from here until record_submission commits leaves the batch unrecorded; the
    # next submission adopts it (`adopt`) instead of sending its requests again.
    status = await client.submit(lines, name=runtime.settings.redis.key_prefix)
    taken = await asyncio.to_thread(
        lambda: batches.record_submission(
            engine,
            batch_id=status.id,
            status=status.status,
            input_file_id=status.input_file_id,
            custom_ids=[r.custom_id for r in waiting],
        )
    )
    log.info("batch %s: submitted %d judge requests", status.id, taken)
    return taken, written, len(stale)


async def adopt(runtime: Runtime, client: BatchClient) -> int:
    """Record this deployment's batches that the provider holds and `judge_batches` does not
    (a run that died between creating a batch and recording it), with the requests of their
    input file that are still pending; returns how many requests it took. Run before a
    submission, so those requests are not sent (and paid for) again. Looks at the account's
    100 most recent batches."""
    engine = runtime.store.engine
    mark = metadata_for(runtime.settings.redis.key_prefix)
    ours = [b for b in await client.recent() if b.metadata.items() >= mark.items()]
    recorded = await asyncio.to_thread(batches.known, engine, [b.id for b in ours])
    taken = 0
    for orphan in (b for b in ours if b.id not in recorded):
        ids = custom_ids_of(await client.content(orphan.input_file_id))
        n = await asyncio.to_thread(
            functools.partial(
                batches.record_submission,
                engine,
                batch_id=orphan.id,
                status=orphan.status,
                input_file_id=orphan.input_file_id,
                custom_ids=ids,
            )
        )
        log.warning("batch %s: found unrecorded at the provider, took %d requests", orphan.id, n)
        taken += n
    return taken


async def collect(runtime: Runtime, client: BatchClient) -> tuple[int, int, int]:
    """Read every open batch; write the records of those that ended. Returns (batches
    settled, records written, of which rubric_changed)."""
    engine = runtime.store.engine
    settled = written = changed = 0
    for batch_id in await asyncio.to_thread(batches.open_batches, engine):
        status = await client.retrieve(batch_id)
        if not status.terminal:
            await asyncio.to_thread(batches.note_status, engine, batch_id, status.status)
            continue
        results: list[BatchResult] = []
        for file_id in (status.output_file_id, status.error_file_id):
            if file_id:
                results += read_results(await client.content(file_id))
        requests = await asyncio.to_thread(batches.submitted_in, engine, batch_id)
        n, stale = await _settle(runtime, status, requests, results)
        written, changed, settled = written + n, changed + stale, settled + 1
    return settled, written, changed


async def _settle(
    runtime: Runtime,
    status: BatchStatus,
    requests: list[BatchRequest],
    results: list[BatchResult],
) -> tuple[int, int]:
    """Write the batch's records and close it; returns (records written, of which
    rubric_changed)."""
    answers: dict[str, BatchResult] = {}
    for result in results:
        answers.setdefault(result.custom_id, result)  # a duplicated line counts once
    limit = runtime.settings.judge.batch_max_submissions
    records: list[EvalRecord] = []
    done: list[str] = []
    failed: list[str] = []
    released: list[str] = []
    stale = 0
    for request in requests:
        rubric = runtime.rubrics.by_name(request.rubric)
        answer = answers.get(request.custom_id)
        cause = stale_cause(runtime, request)
        if cause is not None or rubric is None:
            # The reply answers a prompt that is no longer the rubric's: recorded as an error
            # of the version it was asked for, so the trace keeps its one record.
            records.append(_stale_record(runtime, request, cause or "", batch_id=status.id))
            failed.append(request.custom_id)
            stale += 1
            continue
        # Unanswered: no line (a provider that omits them) or a batch_expired /
        # batch_cancelled line in the error file (OpenAI's way).
        unanswered = (answer is None and status.status in _UNANSWERED_ON) or (
            answer is not None and answer.not_run
        )
        if unanswered and request.submissions < limit:
            released.append(request.custom_id)
            continue
        if answer is not None and answer.not_run:
            answer = None  # out of submissions: recorded as never answered, with the cause
        score = _score(rubric, request, answer, status, runtime)
        records.append(_record(runtime, rubric, request, score, status.id))
        (failed if score.status is Status.ERROR else done).append(request.custom_id)
    error = status.errors or (f"batch {status.id} {status.status}" if released else "")

    def close(conn: Connection) -> None:
        batches.settle(
            conn,
            status.id,
            status=status.status,
            done=done,
            failed=failed,
            released=released,
            error=error,
        )

    written = await write_records(runtime, records, then=close)
    log.info(
        "batch %s %s: %d records written, %d requests sent again",
        status.id,
        status.status,
        written,
        len(released),
    )
    if stale:
        log.warning("batch %s: %d requests of a changed rubric recorded", status.id, stale)
    return written, stale


def _score(
    rubric: Rubric,
    request: BatchRequest,
    answer: BatchResult | None,
    status: BatchStatus,
    runtime: Runtime,
) -> Score:
    judge = runtime.clients.judge
    model = str(request.body.get("model") or (judge.model if judge else ""))
    if answer is None:
        if status.status == "completed":
            cause = f"batch {status.id} completed without a result for this request"
        elif status.status == "failed":
            cause = f"batch {status.id} failed: {status.errors or 'no reason given'}"
        else:
            cause = (
                f"batch {status.id} {status.status} without a result for this request after "
                f"{request.submissions} submissions"
            )
        return Score.error(
            cause,
            method="judge",
            judge_model=model,
            details={"error_kind": ErrorKind.JUDGE_UNAVAILABLE.value},
        )
    price = judge.price if judge is not None else None
    try:
        reply = reply_of(
            answer, llm_rubric.verdict_schema(rubric.scale), model=model, price=price or _free
        )
    except JudgeError as exc:
        return judge_failure(exc, method="judge", judge_model=model)
    score = llm_rubric.score_from_reply(rubric, reply)
    return dataclasses.replace(score, judge_model_reported=reply.reported_model)


def _free(_model: str, _in: int, _out: int) -> float:
    return 0.0


def _stale_record(
    runtime: Runtime, request: BatchRequest, cause: str, *, batch_id: str | None
) -> EvalRecord:
    """The error record of a request whose rubric version is no longer loaded: the loaded
    rubric (or a bare stand-in when it was removed) under the request's version. No verdict
    identity: the loaded rubric's would name a prompt this request never carried."""
    loaded = runtime.rubrics.by_name(request.rubric)
    base = loaded or Rubric.model_construct(
        name=request.rubric, version=request.rubric_version, scorer="llm_rubric", method=None
    )
    rubric = base.model_copy(update={"version": request.rubric_version})
    judge = runtime.clients.judge
    score = Score.error(
        cause,
        method="judge",
        judge_model=str(request.body.get("model") or (judge.model if judge else "")),
        details={"error_kind": ErrorKind.RUBRIC_CHANGED.value},
    )
    return _record(runtime, rubric, request, score, batch_id, identity=False)


def _record(
    runtime: Runtime,
    rubric: Rubric,
    request: BatchRequest,
    score: Score,
    batch_id: str | None,
    *,
    identity: bool = True,
) -> EvalRecord:
    waited_ms = (utcnow() - as_utc(request.created_at)).total_seconds() * 1000
    score = dataclasses.replace(
        score,
        identity=identity_for(rubric, runtime.clients) if identity else None,
        details={**score.details, "judge_mode": "batch", "batch_id": batch_id},
    )
    return to_record(
        request.trace_id,
        request.span_id,
        rubric,
        score,
        dict(request.labels),
        reason=Reason(request.sampled_by),
        latency_ms=waited_ms,
        inclusion_probability=request.inclusion_probability,
        trace_at=as_utc(request.trace_at) if request.trace_at is not None else None,
    )
