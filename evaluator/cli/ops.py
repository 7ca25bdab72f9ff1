"""Operations commands: `evaluator retry` (dead letter) and `evaluator health`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from evaluator.config.rubrics import RubricError, load_rubrics
from evaluator.config.settings import load_settings


def cmd_retry(args: argparse.Namespace) -> int:
    from evaluator.config.redis_clients import async_redis
    from evaluator.intake.sweeper import make_intake, retry_dead
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
        if not args.all and not args.trace:
            print("say which: --trace ID [--trace ID ...], --all, or --list", file=sys.stderr)
            return 2

        async def run() -> int:
            redis = async_redis(settings)
            try:
                rubrics = load_rubrics(settings.rubrics.path)
                intake = make_intake(
                    redis, settings, store.engine, sampling_config(settings, rubrics)
                )
                return await retry_dead(intake, store.engine, None if args.all else args.trace)
            finally:
                await redis.aclose()

        revived = asyncio.run(run())
        print(f"re-enqueued {revived} dead intent(s)")
        return 0
    finally:
        store.close()


def _check_health(settings_path: Any) -> dict[str, Any]:
    from sqlalchemy import text

    from evaluator.config.redis_clients import async_redis
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
        redis = async_redis(settings, socket_connect_timeout=2, socket_timeout=2)
        try:
            await redis.ping()
            # arq writes "<queue>:health-check" from every running worker.
            beat = await redis.get(f"{settings.redis.queue_name}:health-check")
            return {"ok": True, "worker_heartbeat": beat.decode() if beat else None}
        except Exception as exc:
            return {"ok": False, "error": str(exc)}
        finally:
            await redis.aclose()

    checks["redis"] = asyncio.run(redis_check())
    checks["ok"] = all(c["ok"] for c in checks.values() if isinstance(c, dict))
    return checks


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


def register(sub: Any) -> None:
    p = sub.add_parser("retry", help="replay evaluations parked in the dead letter state")
    p.add_argument("--trace", action="append", help="a trace ID (repeatable)")
    p.add_argument("--all", action="store_true", help="every dead intent")
    p.add_argument("--list", action="store_true", help="list dead intents with their cause")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(fn=cmd_retry)

    p = sub.add_parser("health", help="check Redis, database and rubrics; exit 1 if unhealthy")
    p.add_argument(
        "--require-worker",
        action="store_true",
        help="also require a running worker's heartbeat (for supervisors)",
    )
    p.set_defaults(fn=cmd_health)
