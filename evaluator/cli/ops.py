"""Operations commands: `evaluator retry` (dead letter) and `evaluator health`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from evaluator.config.rubrics import RubricError, load_rubrics
from evaluator.config.settings import load_settings
from evaluator.errors import ErrorKind


def cmd_retry(args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from evaluator.intake.drain import build_intake
    from evaluator.intake.sweeper import retry_dead, retry_errors
    from evaluator.store import outbox
    from evaluator.store.store import Store
    from evaluator.worker.runtime import sampling_config

    settings = load_settings(args.settings)
    store = Store(settings.database.url)
    try:
        if args.list:
            dead = outbox.list_intents(store.engine, status=outbox.DEAD, limit=args.limit)
            for intent in dead:
                print(
                    f"{intent.trace_id}\t{intent.kind}\tattempts={intent.attempts}\t{intent.last_error}"
                )
            if not dead:
                print("no dead intents")
            return 0
        errors = None
        if args.errors:
            errors = store.error_trace_ids(
                rubric=args.rubric, kind=args.kind, since=args.since, until=args.until
            )
        elif not args.all and not args.trace:
            print("say which: --trace ID, --all, --errors or --list", file=sys.stderr)
            return 2

        async def run() -> int:
            redis = Redis.from_url(settings.redis.url)
            try:
                rubrics = load_rubrics(settings.rubrics.path)
                sampling = sampling_config(settings, rubrics)
                intake = build_intake(redis, settings, sampling=sampling, engine=store.engine)
                if errors is not None:
                    return await retry_errors(intake, store.engine, errors)
                return await retry_dead(intake, store.engine, None if args.all else args.trace)
            finally:
                await redis.aclose()

        revived = asyncio.run(run())
        print(f"re-enqueued {revived} {'error' if args.errors else 'dead'} intent(s)")
        return 0
    finally:
        store.close()


def _check_health(settings_path: Any) -> dict[str, Any]:
    from redis.asyncio import Redis
    from sqlalchemy import text

    from evaluator.store import outbox
    from evaluator.store.store import Store

    settings = load_settings(settings_path)
    checks: dict[str, Any] = {}
    try:
        rubrics = load_rubrics(settings.rubrics.path)
        checks["rubrics"] = {"ok": True, "count": len(rubrics.rubrics)}
    except RubricError as exc:
        checks["rubrics"] = {"ok": False, "error": "; ".join(exc.problems)}
    try:
        store = Store(settings.database.url)
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        pending = outbox.count_intents(store.engine, outbox.PENDING)
        dead = outbox.count_intents(store.engine, outbox.DEAD)
        store.close()
        checks["database"] = {"ok": True, "pending_intents": pending, "dead_intents": dead}
    except Exception as exc:  # any driver error means "not healthy", with its text
        checks["database"] = {"ok": False, "error": str(exc).splitlines()[0]}

    async def redis_check() -> dict[str, Any]:
        redis = Redis.from_url(settings.redis.url, socket_connect_timeout=2, socket_timeout=2)
        try:
            await redis.ping()
            # arq writes "<queue>:health-check" from every running worker.
            beat = await redis.get(f"{settings.redis.queue_name}:health-check")
            return {
                "ok": True,
                "worker_heartbeat": beat.decode() if beat else None,
                **await _persistence(redis),
            }
        except Exception as exc:
            return {"ok": False, "error": str(exc)}
        finally:
            await redis.aclose()

    checks["redis"] = asyncio.run(redis_check())
    checks["ok"] = all(c["ok"] for c in checks.values() if isinstance(c, dict))
    return checks


async def _persistence(redis: Any) -> dict[str, Any]:
    """Warn when Redis keeps the intake list in memory only (lost with a restart)."""
    try:
        aof = (await redis.config_get("appendonly")).get("appendonly", b"no")
        save = (await redis.config_get("save")).get("save", b"")
    except Exception as exc:  # managed Redis often refuses CONFIG: say so, do not fail
        warning = f"CONFIG GET refused ({exc}); make sure appendonly is on"
        return {"persistence": "unknown", "warning": warning}
    aof_on = (aof.decode() if isinstance(aof, bytes) else str(aof)) == "yes"
    rdb = (save.decode() if isinstance(save, bytes) else str(save)).strip()
    if aof_on:
        return {"persistence": "aof"}
    warning = "appendonly is off: IDs in the intake list not yet drained are lost with a restart"
    return {"persistence": "rdb" if rdb else "none", "warning": warning}


def cmd_health(args: argparse.Namespace) -> int:
    checks = _check_health(args.settings)
    if (
        args.require_worker
        and checks["redis"].get("ok")
        and not checks["redis"].get("worker_heartbeat")
    ):
        checks["redis"]["ok"] = False
        checks["redis"]["error"] = "no worker heartbeat in Redis"
        checks["ok"] = False
    print(json.dumps(checks, indent=2))
    return 0 if checks["ok"] else 1


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(sub: Any) -> None:
    p = sub.add_parser("retry", help="replay evaluations parked in the dead letter state")
    p.add_argument("--trace", action="append", help="a trace ID (repeatable)")
    p.add_argument("--all", action="store_true", help="every dead intent")
    p.add_argument("--list", action="store_true", help="list dead intents with their cause")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--errors", action="store_true", help="re-run traces with error records")
    p.add_argument("--rubric", help="with --errors: only this rubric's error records")
    p.add_argument("--kind", choices=[k.value for k in ErrorKind], help="with --errors: cause")
    p.add_argument("--since", type=_when, help="with --errors: recorded at/after (ISO 8601)")
    p.add_argument("--until", type=_when, help="with --errors: recorded before (ISO 8601)")
    p.set_defaults(fn=cmd_retry)

    p = sub.add_parser("health", help="check Redis, database and rubrics; exit 1 if unhealthy")
    p.add_argument(
        "--require-worker",
        action="store_true",
        help="also require a running worker's heartbeat (for supervisors)",
    )
    p.set_defaults(fn=cmd_health)
