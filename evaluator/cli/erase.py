"""`evaluator erase`: delete everything stored about traces or a tenant (right to erasure).

    evaluator erase --trace ID [--trace ID ...] [--yes]
    evaluator erase --tenant T [--yes]

Without --yes it only counts what would go (a dry run). See evaluator.store.erasure for
what is found in SQL and evaluator.intake.erasure for Redis; cached judge replies in Redis
are keyed by prompt hash, not by trace, and expire after judge.cache_ttl_s: --judge-cache
also drops the whole cache namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from evaluator.config.settings import Settings, load_settings
from evaluator.errors import ExitCode, NotFound


def _counts(store: Any, trace_ids: list[str]) -> tuple[dict[str, int], set[str]]:
    """Rows per table that hold these trace IDs, and which of the IDs have any row."""
    from sqlalchemy import inspect, select

    from evaluator.store.models import EvalRecord, PendingSpan, TraceRecord, table_of
    from evaluator.store.outbox import EvalIntent
    from evaluator.store.trust_models import FeedbackRecord

    tables: list[tuple[Any, str]] = [
        (TraceRecord, "traces"),
        (EvalRecord, "eval_records"),
        (EvalIntent, "eval_intents"),
        (FeedbackRecord, "feedback"),
        (PendingSpan, "otlp_pending_spans"),
    ]
    counts: dict[str, int] = {}
    found: set[str] = set()
    present = set(inspect(store.engine).get_table_names())
    with store.engine.connect() as conn:
        for model, name in tables:
            t = table_of(model)
            if t.name not in present:
                continue
            counts[name] = 0
            for i in range(0, len(trace_ids), 500):
                rows = conn.execute(
                    select(t.c.trace_id).where(t.c.trace_id.in_(trace_ids[i : i + 500]))
                ).scalars()
                for trace_id in rows:
                    counts[name] += 1
                    found.add(trace_id)
    return counts, found


async def _erase_in_redis(settings: Settings, ids: list[str], tokens: dict[str, str] | None) -> int:
    """Remove the IDs from Redis (queued work, markers, the budget ledger); with `tokens`
    None, only check that Redis answers (before anything is deleted from the database)."""
    from evaluator.config.redis_clients import async_redis
    from evaluator.intake.erasure import erase_in_redis

    client = async_redis(settings)
    try:
        if tokens is None:
            await client.ping()
            return 0
        redis = settings.redis
        return await erase_in_redis(client, redis.key_prefix, redis.queue_name, ids, tokens)
    finally:
        await client.aclose()


async def _drop_judge_cache(settings: Settings) -> int:
    from evaluator.config.redis_clients import async_redis

    client = async_redis(settings)
    dropped = 0
    try:
        async for key in client.scan_iter(match=f"{settings.redis.key_prefix}:cache:*", count=1000):
            dropped += await client.unlink(key)
    finally:
        await client.aclose()
    return dropped


def cmd_erase(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from evaluator.cli.common import reader
    from evaluator.store.erasure import erase_tenant, erase_traces, tenant_trace_ids

    if bool(args.trace) == bool(args.tenant):
        print("say which: --trace ID [--trace ID ...] or --tenant T", file=sys.stderr)
        return ExitCode.USAGE
    settings = load_settings(args.settings)
    store = reader(settings)  # nothing to erase in a database that is not there
    try:
        ids = sorted(set(args.trace or [])) or tenant_trace_ids(store.engine, args.tenant)
        counts, found = _counts(store, ids)
        if args.tenant and not ids:
            raise NotFound(f"nothing stored for tenant {args.tenant!r}; nothing erased")
        unknown = [t for t in ids if t not in found]
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:5]) + (" …" if len(unknown) > 5 else "")
            raise NotFound(
                f"{len(unknown)} of {len(ids)} trace IDs have nothing stored ({shown}); "
                "nothing erased: check the IDs"
            )
        out: dict[str, Any] = {"trace_ids": len(ids), "applied": bool(args.yes)}
        if not args.yes:
            out["would_delete"] = counts
            print(json.dumps(out, indent=2))
            print("dry run: add --yes to delete", file=sys.stderr)
            return ExitCode.OK
        try:  # Redis holds queued work naming the traces: erase nothing unless it answers
            asyncio.run(_erase_in_redis(settings, ids, None))
        except (OSError, RedisError) as exc:
            print(f"Redis unreachable ({exc}); nothing erased", file=sys.stderr)
            return ExitCode.UNAVAILABLE
        report = (
            erase_tenant(store.engine, args.tenant)
            if args.tenant
            else erase_traces(store.engine, ids)
        )
    finally:
        store.close()
    out["deleted"] = report.deleted
    out["alerts_scrubbed"] = report.alerts_scrubbed
    out["budget_admissions_unlinked"] = report.admissions_unlinked
    try:  # queued work, markers and the budget ledger that name the traces
        out["redis_keys_changed"] = asyncio.run(_erase_in_redis(settings, ids, report.tokens))
    except (OSError, RedisError) as exc:
        print(json.dumps(out, indent=2))
        print(
            f"erased in the database, but Redis stopped answering ({exc}): its queued work "
            "naming these traces was not removed",
            file=sys.stderr,
        )
        return ExitCode.UNAVAILABLE
    if args.judge_cache:
        out["judge_cache_keys_dropped"] = asyncio.run(_drop_judge_cache(settings))
    print(json.dumps(out, indent=2))
    return ExitCode.OK


def register(sub: Any) -> None:
    p = sub.add_parser("erase", help="delete everything stored about traces or a tenant")
    p.add_argument("--trace", action="append", help="a trace ID (repeatable)")
    p.add_argument("--tenant", help="every trace and record of this tenant")
    p.add_argument("--yes", action="store_true", help="delete (without it: count only)")
    p.add_argument(
        "--judge-cache",
        action="store_true",
        help="also drop every cached judge reply (they are keyed by prompt, not by trace)",
    )
    p.set_defaults(fn=cmd_erase)
