"""`evaluator scores` and `evaluator stats`: read-only views that say what they did not show.

Neither migrates the database (Store(migrate=False)): a database that is missing or behind
is reported with the fix instead. `scores` pages by a cursor and names the total; `stats`
names the Redis key prefix it reads, which is the last demo's when `evaluator demo` left a
marker next to the database it used: that demo's Redis, or, when the demo ran an embedded
Redis that stopped with it, the counters the demo saved in the marker at its end.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.cli import exit_codes
from evaluator.cli.common import positive
from evaluator.config.settings import load_settings

MARKER_SUFFIX = ".demo.json"


def demo_marker(database_url: str) -> Path | None:
    """Where `evaluator demo` records the Redis it used: next to its SQLite file."""
    from sqlalchemy.engine import make_url  # not at import: `evaluator --help` stays light

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    db = Path(url.database)
    return db.with_name(db.name + MARKER_SUFFIX)


def record_demo(
    database_url: str,
    *,
    redis_url: str,
    key_prefix: str,
    queue_name: str,
    embedded: bool,
    saved: dict[str, Any] | None = None,
) -> None:
    """Note where the demo's counters are: its Redis and key prefix, and (`saved`) the
    counters themselves, copied before an embedded Redis stops and takes them with it."""
    from evaluator.cli.exit_codes import hide_password

    path = demo_marker(database_url)
    if path is not None:
        # A URL with a password is not written to disk: `stats` then uses the configured one.
        shown = None if embedded or hide_password(redis_url) != redis_url else redis_url
        doc = {
            "redis_url": shown,
            "key_prefix": key_prefix,
            "queue_name": queue_name,
            "embedded_redis": embedded,
            "saved": saved,
        }
        path.write_text(json.dumps(doc) + "\n")


def cmd_scores(args: argparse.Namespace) -> int:
    from evaluator.cli.common import check_rubric, reader
    from evaluator.cli.present import decode_cursor, encode_cursor, record_to_json, records_table

    settings = load_settings(args.settings)
    limit = None if args.all else args.limit
    after = decode_cursor(args.after) if args.after else None
    store = reader(settings)
    try:
        check_rubric(store, settings, args.rubric)
        rows, total = store.records_page(
            trace_id=args.trace, rubric=args.rubric, status=args.status, limit=limit, after=after
        )
    finally:
        store.close()
    more = limit is not None and len(rows) == limit
    cursor = encode_cursor(rows[-1]) if rows and more else None
    if args.json:
        doc = {"records": [record_to_json(r) for r in rows], "total": total, "next": cursor}
        print(json.dumps(doc, indent=2))
        return exit_codes.OK
    print(records_table(rows, wide=args.wide) if rows else "no eval records match")
    if len(rows) < total:
        nxt = f", or --after {cursor} for the next page" if cursor else ""
        print(
            f"showing {len(rows)} of {total} (use --limit N or --all{nxt})",
            file=sys.stderr,
        )
    return exit_codes.OK


@dataclass(frozen=True)
class StatsSource:
    """Where `stats` reads the counters: a key prefix on a Redis, or the copy a demo saved."""

    prefix: str
    queue: str
    redis_url: str | None  # None: the configured redis.url
    saved: dict[str, Any] | None  # the counters an embedded-Redis demo copied at its end
    note: str


def _source(args: argparse.Namespace, settings: Any) -> StatsSource:
    if args.prefix:
        return StatsSource(args.prefix, settings.redis.queue_name, None, None, "--prefix")
    marker = demo_marker(settings.database.url)
    if marker is not None and marker.is_file():
        doc = json.loads(marker.read_text())
        prefix = str(doc["key_prefix"])
        queue = str(doc.get("queue_name", f"{prefix}:queue"))
        note = f"recorded by `evaluator demo` in {marker}"
        if doc.get("embedded_redis"):
            saved = doc.get("saved")
            note += (
                "; its embedded Valkey stopped with the demo: counters as the demo saved them"
                if saved
                else "; its embedded Valkey stopped with the demo before it saved counters"
            )
            return StatsSource(prefix, queue, None, saved or {}, note)
        return StatsSource(prefix, queue, doc.get("redis_url"), None, note)
    return StatsSource(
        settings.redis.key_prefix,
        settings.redis.queue_name,
        None,
        None,
        "settings redis.key_prefix",
    )


def read_counters(redis_url: str, settings: Any, prefix: str, queue: str) -> dict[str, Any]:
    """The intake counters, pending intake and queued jobs under `prefix` (one Redis)."""
    import asyncio

    from evaluator.config.redis_clients import async_redis
    from evaluator.intake.drain import stats_key
    from evaluator.intake.enqueue import intake_key

    section = settings.redis.model_copy(update={"url": redis_url})
    at = settings.model_copy(update={"redis": section})

    async def read() -> dict[str, Any]:
        redis = async_redis(at, socket_connect_timeout=2, socket_timeout=2)
        try:
            raw = await redis.hgetall(stats_key(prefix))
            pending = await redis.llen(intake_key(prefix))
            queued = await redis.zcard(queue)
        finally:
            await redis.aclose()
        counters = {k.decode(): int(v) for k, v in sorted(raw.items())}
        return {"intake": counters, "intake_pending": pending, "jobs_queued": queued}

    return asyncio.run(read())


def cmd_stats(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from evaluator.cli.common import reader

    settings = load_settings(args.settings)
    src = _source(args, settings)
    out: dict[str, Any] = {"key_prefix": src.prefix, "key_prefix_source": src.note}
    if src.saved is not None:
        out.update({"intake": {}, "intake_pending": 0, "jobs_queued": 0, **src.saved})
    else:
        url = src.redis_url or settings.redis.url
        out.update(read_counters(url, settings, src.prefix, src.queue))
    store = reader(settings)
    try:
        out["records"] = store.status_counts()
        try:
            out["budget"] = budget_stats(store.engine)
        except SQLAlchemyError:  # a database not migrated to 0009 yet: no budget tables
            out["budget"] = None
    finally:
        store.close()
    print(json.dumps(out, indent=2) if args.json else stats_table(out))
    return exit_codes.OK


def budget_stats(engine: Any) -> dict[str, Any]:
    """The judge budget as the database holds it (its source of truth, whatever Redis
    says): evaluations admitted today (UTC) per scope, draws waiting for their cap window,
    and over closed windows the draws offered and admitted."""
    import time

    from evaluator.store import admissions

    today = admissions.counts(engine, admissions.day_of(time.time()))
    offered, admitted = admissions.window_totals(engine)
    return {
        "admitted_today": today,
        "offers_waiting": admissions.pending_offers(engine),
        "windows_offered": offered,
        "windows_admitted": admitted,
    }


def stats_table(out: dict[str, Any]) -> str:
    lines = [f"Redis key prefix: {out['key_prefix']}  ({out['key_prefix_source']})", ""]
    lines.append("intake counters")
    if out["intake"]:
        lines += [f"  {k:<24}{v:>10}" for k, v in out["intake"].items()]
    else:
        lines.append(
            f"  none under {out['key_prefix']}:stats (no intake under this prefix yet; "
            "--prefix P to read another)"
        )
    lines += [
        f"  {'pending (not drained)':<24}{out['intake_pending']:>10}",
        f"  {'jobs queued':<24}{out['jobs_queued']:>10}",
        "",
        "eval records",
    ]
    records = out["records"]
    lines += [f"  {k:<24}{v:>10}" for k, v in sorted(records.items())] or ["  none"]
    if records:
        lines.append(f"  {'total':<24}{sum(records.values()):>10}")
    budget = out.get("budget") or {}
    if budget.get("admitted_today", {}).get("*") or budget.get("offers_waiting"):
        lines += ["", "judge budget (database)"]
        for scope, n in sorted(budget["admitted_today"].items()):
            name = "admitted today" if scope == "*" else f"  of which {scope}"
            lines.append(f"  {name:<24}{n:>10}")
        lines.append(f"  {'waiting for window':<24}{budget['offers_waiting']:>10}")
    return "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser("scores", help="list eval records (newest first)")
    p.add_argument("--trace", help="only this trace ID")
    p.add_argument("--rubric", help="only this rubric")
    p.add_argument("--status", choices=["ok", "error", "skipped"])
    p.add_argument("--limit", type=positive, default=50, help="records per page (default 50)")
    p.add_argument("--all", action="store_true", help="every matching record (no paging)")
    p.add_argument("--after", metavar="CURSOR", help="the next page: the cursor a page printed")
    p.add_argument("--wide", action="store_true", help="do not shorten any column")
    p.add_argument("--json", action="store_true", help="stable JSON (docs/concepts/records.md)")
    p.set_defaults(fn=cmd_scores)

    p = sub.add_parser("stats", help="intake and sampling counters, queue depth, records by status")
    p.add_argument(
        "--prefix", help="Redis key prefix to read (default: the last demo's, else settings)"
    )
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.set_defaults(fn=cmd_stats)
