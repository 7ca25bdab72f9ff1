"""Retention: delete old rows in bounded batches, never what the service still needs.

`apply_retention(store, settings, now)` runs one pass over the tables named in
`[database.retention]` (days per table, 0 = keep forever). Each statement deletes at most
`batch_rows` rows and commits on its own, so no transaction holds locks on a month of rows
and concurrent inserts wait at most one batch (BENCH-scale.md measures it).

Two floors the settings cannot lower:
* eval records younger than the longest regression horizon (window + baseline over the
  default policy and every rubric's [regression]) stay: deleting them would empty the
  baseline the regression check compares against and fake a drop or hide one; nor younger
  than ROLLUP_REFOLD_MAX (7 days), how far back a late record re-folds a rollup hour;
* a trace with a pending evaluation intent stays until that evaluation has run.

Settled batch-mode requests (batch_requests done or error: the judge call a record came
from) follow the records' cutoff; pending and submitted ones are work in progress and stay.

Rollups (eval_rollups) hold aggregates per hour and label group, not trace ids: they are
kept (they are what trends read after raw records are gone).

The worker runs a pass every hour (`retention_job`); `evaluator retention run [--dry-run]`
runs one now, or counts what it would delete (`dry_run=True`: the same cutoffs and floors,
read-only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from evaluator.config.policy import parse_policy
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Settings
from evaluator.errors import RubricError
from evaluator.store.models import ROLLUP_REFOLD_MAX, utcnow
from evaluator.store.store import Store

log = logging.getLogger("evaluator.store.retention")


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)  # dry run: what would go
    cutoffs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    dry_run: bool = False


def regression_horizon(settings: Settings) -> timedelta:
    """The longest window + baseline any regression check reads (the default policy's if
    the rubrics cannot be loaded: then nothing checks them either)."""
    configs = [parse_policy(settings.alerts.policy)]
    try:
        rubrics = load_rubrics(settings.rubrics.path).rubrics
    except RubricError:
        rubrics = ()
    for rubric in rubrics:
        try:
            configs.append(parse_policy({**settings.alerts.policy, **rubric.regression}))
        except ValueError:
            continue  # refused at worker start-up already
    return max(c.policy.window + c.policy.baseline for c in configs)


# One batch: the ids of at most :n old rows, then delete those. The subquery form works on
# SQLite and PostgreSQL alike and uses the time index on each table.
_BATCHES = {
    "eval_records": (
        "DELETE FROM eval_records WHERE id IN (SELECT id FROM eval_records "
        "WHERE created_at < :cutoff LIMIT :n)"
    ),
    "traces": (
        "DELETE FROM traces WHERE trace_id IN (SELECT t.trace_id FROM traces t "
        "WHERE t.ingested_at < :cutoff AND NOT EXISTS (SELECT 1 FROM eval_intents i "
        "WHERE i.trace_id = t.trace_id AND i.status = 'pending') LIMIT :n)"
    ),
    "eval_intents": (
        "DELETE FROM eval_intents WHERE id IN (SELECT id FROM eval_intents "
        "WHERE created_at < :cutoff AND status != 'pending' LIMIT :n)"
    ),
    "otlp_pending_spans": (
        "DELETE FROM otlp_pending_spans WHERE id IN (SELECT id FROM otlp_pending_spans "
        "WHERE received_s < :cutoff LIMIT :n)"
    ),
    "batch_requests": (
        "DELETE FROM batch_requests WHERE custom_id IN (SELECT custom_id FROM batch_requests "
        "WHERE created_at < :cutoff AND status IN ('done', 'error') LIMIT :n)"
    ),
}


# PostgreSQL: `= ANY(ARRAY(...))` rather than `IN (...)` for the partitioned tables
# (migration 0006). There the planner turns IN into a hash join over every partition — a
# scan of the whole table per batch (measured: ~1.5 k rows/s at 10 M records); the array
# is computed once and each partition probes its own index with it.
_PG_BATCHES = {
    "eval_records": (
        "DELETE FROM eval_records WHERE id = ANY(ARRAY(SELECT id FROM eval_records "
        "WHERE created_at < :cutoff LIMIT :n))"
    ),
    "traces": (
        "DELETE FROM traces WHERE trace_id = ANY(ARRAY(SELECT t.trace_id FROM traces t "
        "WHERE t.ingested_at < :cutoff AND NOT EXISTS (SELECT 1 FROM eval_intents i "
        "WHERE i.trace_id = t.trace_id AND i.status = 'pending') LIMIT :n))"
    ),
}


def delete_in_batches(
    engine: Engine, table: str, cutoff: Any, batch_rows: int, deadline: float = float("inf")
) -> int:
    """Delete rows older than `cutoff`, one committed batch at a time; returns the count.
    Stops after the batch that passes `deadline` (time.monotonic()): the next run goes on."""
    pg = engine.dialect.name == "postgresql"
    statement = text(_PG_BATCHES[table] if pg and table in _PG_BATCHES else _BATCHES[table])
    total = 0
    while time.monotonic() < deadline:
        with engine.begin() as conn:
            deleted = conn.execute(statement, {"cutoff": cutoff, "n": batch_rows}).rowcount
        total += deleted
        if deleted < batch_rows:
            break
    return total


# What a batch deletes, counted whole (a dry run): the same conditions as _BATCHES.
_COUNTS = {
    "eval_records": "SELECT count(*) FROM eval_records WHERE created_at < :cutoff",
    "traces": (
        "SELECT count(*) FROM traces t WHERE t.ingested_at < :cutoff AND NOT EXISTS "
        "(SELECT 1 FROM eval_intents i WHERE i.trace_id = t.trace_id AND i.status = 'pending')"
    ),
    "eval_intents": (
        "SELECT count(*) FROM eval_intents WHERE created_at < :cutoff AND status != 'pending'"
    ),
    "otlp_pending_spans": "SELECT count(*) FROM otlp_pending_spans WHERE received_s < :cutoff",
    "batch_requests": (
        "SELECT count(*) FROM batch_requests WHERE created_at < :cutoff "
        "AND status IN ('done', 'error')"
    ),
}


def count_old(engine: Engine, table: str, cutoff: Any) -> int:
    """How many rows `delete_in_batches` would delete now (read-only)."""
    with engine.connect() as conn:
        return int(conn.execute(text(_COUNTS[table]), {"cutoff": cutoff}).scalar() or 0)


def _stamp(engine: Engine, when: datetime) -> Any:
    # SQLite stores SQLAlchemy DateTime as naive UTC text: compare in the same form.
    if engine.dialect.name == "sqlite":
        return when.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return when


def _has_table(engine: Engine, name: str) -> bool:
    return inspect(engine).has_table(name)


def apply_retention(
    store: Store,
    settings: Settings,
    now: datetime,
    *,
    budget_s: float | None = None,
    dry_run: bool = False,
) -> RetentionResult:
    """One retention pass as configured; `now` is timezone-aware UTC. With `budget_s`, no
    batch starts after that many seconds (committed batches stay deleted). `dry_run`
    deletes nothing and counts what the pass would delete."""
    t0 = time.perf_counter()
    deadline = float("inf") if budget_s is None else time.monotonic() + budget_s
    r = settings.database.retention
    engine = store.engine
    result = RetentionResult(dry_run=dry_run)

    def purge(table: str, cutoff: Any) -> int:
        if dry_run:
            return count_old(engine, table, cutoff)
        return delete_in_batches(engine, table, cutoff, r.batch_rows, deadline)

    plan: list[tuple[str, int, timedelta]] = [
        # Rollups re-fold a late record's hour up to ROLLUP_REFOLD_MAX back: keep those.
        ("eval_records", r.records_days, max(regression_horizon(settings), ROLLUP_REFOLD_MAX)),
        ("traces", r.traces_days, timedelta(0)),
        ("eval_intents", r.intents_days, timedelta(0)),
    ]
    for table, days, floor in plan:
        if days <= 0:
            continue
        keep = max(timedelta(days=days), floor)
        cutoff = now - keep
        result.cutoffs[table] = cutoff.isoformat()
        result.deleted[table] = purge(table, _stamp(engine, cutoff))
        if table == "eval_records" and _has_table(engine, "batch_requests"):
            # A settled batch request goes with the records of its age.
            result.cutoffs["batch_requests"] = cutoff.isoformat()
            result.deleted["batch_requests"] = purge("batch_requests", _stamp(engine, cutoff))
    # Created on first use by `evaluator serve`; received_s is epoch seconds.
    if r.pending_spans_days > 0 and _has_table(engine, "otlp_pending_spans"):
        cutoff_s = now.timestamp() - r.pending_spans_days * 86400
        result.cutoffs["otlp_pending_spans"] = str(cutoff_s)
        result.deleted["otlp_pending_spans"] = purge("otlp_pending_spans", cutoff_s)
    result.seconds = time.perf_counter() - t0
    if any(result.deleted.values()) and not dry_run:
        log.info("retention: deleted %s in %.1f s", result.deleted, result.seconds)
    return result


# A cancelled to_thread keeps running: bound the pass itself, well inside the cron timeout.
JOB_BUDGET_S = 240.0


async def retention_job(ctx: dict[str, Any]) -> dict[str, int]:
    """arq cron body: one bounded pass in a thread (the deletes are synchronous SQL); what
    is left over goes in the next run."""
    runtime = ctx["runtime"]
    result = await asyncio.to_thread(
        apply_retention, runtime.store, runtime.settings, utcnow(), budget_s=JOB_BUDGET_S
    )
    return result.deleted
