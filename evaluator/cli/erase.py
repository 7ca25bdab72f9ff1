"""`evaluator erase`: delete everything stored about traces or a tenant (right to erasure).

    evaluator erase --trace ID [--trace ID ...] [--yes]
    evaluator erase --tenant T [--yes]

Without --yes it only counts what would go (a dry run). See evaluator.store.erasure for
what is found; cached judge replies in Redis are keyed by prompt hash, not by trace, and
expire after judge.cache_ttl_s: --judge-cache also drops the whole cache namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from evaluator.config.settings import Settings, load_settings


def _dry_run(settings: Settings, trace_ids: list[str]) -> dict[str, int]:
    from sqlalchemy import func, select

    from evaluator.store.models import EvalRecord, TraceRecord, table_of
    from evaluator.store.outbox import EvalIntent
    from evaluator.store.store import Store

    store = Store(settings.database.url)
    counts = {}
    try:
        with store.engine.connect() as conn:
            for model, name in ((TraceRecord, "traces"), (EvalRecord, "eval_records"),
                                (EvalIntent, "eval_intents")):  # fmt: skip
                t = table_of(model)
                counts[name] = sum(
                    conn.scalar(
                        select(func.count()).where(t.c.trace_id.in_(trace_ids[i : i + 500]))
                    )
                    or 0
                    for i in range(0, len(trace_ids), 500)
                )
    finally:
        store.close()
    return counts


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
    from evaluator.store.erasure import erase_tenant, erase_traces, tenant_trace_ids
    from evaluator.store.store import Store

    if bool(args.trace) == bool(args.tenant):
        print("say which: --trace ID [--trace ID ...] or --tenant T", file=sys.stderr)
        return 2
    settings = load_settings(args.settings)
    store = Store(settings.database.url)
    try:
        ids = list(args.trace or []) or tenant_trace_ids(store.engine, args.tenant)
    finally:
        store.close()
    out: dict[str, Any] = {"trace_ids": len(ids), "applied": bool(args.yes)}
    if not args.yes:
        out["would_delete"] = _dry_run(settings, ids)
        print(json.dumps(out, indent=2))
        print("dry run: add --yes to delete", file=sys.stderr)
        return 0
    store = Store(settings.database.url)
    try:
        report = (
            erase_tenant(store.engine, args.tenant)
            if args.tenant
            else erase_traces(store.engine, ids)
        )
    finally:
        store.close()
    out["deleted"] = report.deleted
    out["alerts_scrubbed"] = report.alerts_scrubbed
    if args.judge_cache:
        out["judge_cache_keys_dropped"] = asyncio.run(_drop_judge_cache(settings))
    print(json.dumps(out, indent=2))
    return 0


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
