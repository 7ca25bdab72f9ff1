"""Operations commands: `evaluator retry` (dead letter); `evaluator health` is in health.py."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from evaluator.cli.health import register as register_health
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import load_settings


def cmd_retry(args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

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
            redis = Redis.from_url(settings.redis.url)
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


def register(sub: Any) -> None:
    p = sub.add_parser("retry", help="replay evaluations parked in the dead letter state")
    p.add_argument("--trace", action="append", help="a trace ID (repeatable)")
    p.add_argument("--all", action="store_true", help="every dead intent")
    p.add_argument("--list", action="store_true", help="list dead intents with their cause")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(fn=cmd_retry)

    register_health(sub)  # evaluator/cli/health.py
