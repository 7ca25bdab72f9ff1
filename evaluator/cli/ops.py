"""Operations commands: `evaluator retry` (dead letter); `evaluator health` is in health.py."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

from evaluator.cli.common import positive
from evaluator.cli.health import register as register_health
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import load_settings
from evaluator.errors import ErrorKind, ExitCode


def cmd_retry(args: argparse.Namespace) -> int:

    from evaluator.cli.common import check_rubric, reader
    from evaluator.cli.exit_codes import BUDGET
    from evaluator.config.redis_clients import async_redis
    from evaluator.intake.drain import build_intake
    from evaluator.intake.sweeper import Retried, retry_dead, retry_errors
    from evaluator.store import outbox
    from evaluator.worker.runtime import sampling_config

    if not (args.list or args.errors or args.all or args.trace):
        print("say which: --trace ID, --all, --errors or --list", file=sys.stderr)
        return ExitCode.USAGE
    settings = load_settings(args.settings)
    store = reader(settings)  # retry re-runs what is stored: no database, nothing to retry
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
            check_rubric(store, settings, args.rubric)
            errors = store.error_trace_ids(
                rubric=args.rubric, kind=args.kind, since=args.since, until=args.until
            )

        async def run() -> Retried:
            redis = async_redis(settings)
            try:
                rubrics = load_rubrics(settings.rubrics.path)
                sampling = sampling_config(settings, rubrics)
                intake = build_intake(redis, settings, sampling=sampling, engine=store.engine)
                if errors is not None:
                    return await retry_errors(intake, store.engine, errors)
                return await retry_dead(intake, store.engine, None if args.all else args.trace)
            finally:
                await redis.aclose()

        done = asyncio.run(run())
        print(f"re-enqueued {done.queued} {'error' if args.errors else 'dead'} intent(s)")
        if done.waiting:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(done.until))
            later = f"it has room again at {when}" if done.until else "a trace never fits it"
            print(
                f"{done.waiting} trace(s) wait for the judge budget ({later}); they are left "
                "as they were: run the same `evaluator retry` again then",
                file=sys.stderr,
            )
            return BUDGET
        return 0
    finally:
        store.close()


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def register(sub: Any) -> None:
    p = sub.add_parser("retry", help="replay evaluations parked in the dead letter state")
    p.add_argument("--trace", action="append", help="a trace ID (repeatable)")
    p.add_argument("--all", action="store_true", help="every dead intent")
    p.add_argument("--list", action="store_true", help="list dead intents with their cause")
    p.add_argument("--limit", type=positive, default=100, help="with --list: at most N (100)")
    p.add_argument("--errors", action="store_true", help="re-run traces with error records")
    p.add_argument("--rubric", help="with --errors: only this rubric's error records")
    p.add_argument("--kind", choices=[k.value for k in ErrorKind], help="with --errors: cause")
    p.add_argument("--since", type=_when, help="with --errors: recorded at/after (ISO 8601)")
    p.add_argument("--until", type=_when, help="with --errors: recorded before (ISO 8601)")
    p.set_defaults(fn=cmd_retry)

    register_health(sub)  # evaluator/cli/health.py
