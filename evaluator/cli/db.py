"""Schema and backfill commands: `evaluator db upgrade|current`, `evaluator backfill`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import load_settings
from evaluator.errors import BackfillError, SchemaError

if TYPE_CHECKING:  # the store and the worker load only when a command runs
    from evaluator.store.store import Store
    from evaluator.worker import backfill as bf

BAR_WIDTH = 30
STALL_HINT_S = 60.0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from evaluator.store.schema import upgrade
    from evaluator.store.store import make_engine

    settings = load_settings(args.settings)
    engine = make_engine(settings.database.url)
    try:
        result = upgrade(engine)
    except SchemaError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if result.adopted:
        print("adopted a database created before migrations (records kept)")
    if result.before == result.after:
        print(f"database schema is up to date at {result.after}")
    else:
        before = result.before or ("unversioned" if result.adopted else "empty")
        print(f"database schema upgraded: {before} -> {result.after}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from evaluator.store.schema import current_revision, head_revision
    from evaluator.store.store import make_engine, refuse_missing_database

    settings = load_settings(args.settings)
    refuse_missing_database(settings.database.url)  # a read: never create the file
    engine = make_engine(settings.database.url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else "behind: run `evaluator db upgrade`"
    print(f"current: {current or 'none'}\nhead:    {head}\n{state}")
    return 0 if current == head else 1


def _n(x: float) -> str:
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:.0f}"


def render_plan(plan: bf.Plan, since_text: str) -> str:
    lines = [
        f"traces ingested since {plan.since:%Y-%m-%d %H:%M} UTC ({since_text}): {plan.in_window}",
        f"  to evaluate: {len(plan.trace_ids)}",
        f"  already up to date: {plan.up_to_date} (an ok record at every selected rubric's "
        "current version)",
    ]
    if plan.not_selected:
        lines.append(f"  not selected (applies_to / sampling rate / --rubric): {plan.not_selected}")
    if plan.unbuildable:
        lines.append(f"  skipped, no model call with output to evaluate: {plan.unbuildable}")
    active = [p for p in plan.rubrics.values() if p.evaluations]
    if active:
        lines.append(
            f"\n  {'rubric':<20}{'version':>8}{'new':>7}{'re-scored':>11}"
            f"{'calls/eval':>12}{'tokens in/out per eval':>24}  basis"
        )
        for p in active:
            tokens = f"{p.usage.input_tokens:.0f}/{p.usage.output_tokens:.0f}"
            lines.append(
                f"  {p.rubric.name:<20}{p.rubric.version:>8}{p.new:>7}{p.rescored:>11}"
                f"{p.usage.calls:>12.2f}{tokens:>24}  {p.usage.source}"
            )
    tokens_in, tokens_out = plan.tokens
    cost = plan.cost_usd
    if cost is None:
        priced = "unknown: add the judge model to [pricing]"
    else:
        priced = f"${cost:,.2f}" if cost >= 1 else f"${cost:.4f}"
    lines.append(
        f"\nestimated judge usage: {plan.judge_calls:,.0f} calls, {_n(tokens_in)} input + "
        f"{_n(tokens_out)} output tokens, cost {priced}"
    )
    if not plan.judge_configured:
        lines.append("no judge configured (judge.base_url): judge rubrics are recorded as skipped")
    if any(p.rescored for p in plan.rubrics.values()):
        lines.append(
            "note: records are unique per rubric version; a re-scored evaluation of an unchanged "
            "version calls the judge and writes nothing new (the job runs every selected rubric)"
        )
    if plan.up_to_date and not plan.trace_ids:
        lines.append("nothing new to write: bump a rubric's version to score these traces again")
    return "\n".join(lines)


def render_bar(p: bf.Progress, elapsed_s: float) -> str:
    finished = p.done + p.dead
    filled = BAR_WIDTH * finished // max(p.total, 1)
    dead = f", {p.dead} dead" if p.dead else ""
    return (
        f"backfill [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {finished}/{p.total}"
        f"{dead}  {int(elapsed_s) // 60}:{int(elapsed_s) % 60:02d}"
    )


class _BarPrinter:
    """Redraws one stderr line on a terminal; elsewhere prints a line when the count moves."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = self.moved = time.monotonic()
        self.last = -1
        self.hinted = False

    def __call__(self, p: bf.Progress) -> None:
        now = time.monotonic()
        line = render_bar(p, now - self.started)
        count = p.done + p.dead
        if count != self.last:
            self.moved = now
        if self.tty:
            self.stream.write("\r" + line + ("\n" if p.finished else ""))
        elif count != self.last:
            self.stream.write(line + "\n")
        self.last = count
        if not self.hinted and now - self.moved > STALL_HINT_S:
            self.hinted = True
            self.stream.write(
                "\nno progress for a minute: is a worker running (`evaluator worker`)? "
                "Ctrl-C stops waiting; the jobs stay queued.\n"
            )
        self.stream.flush()


def _confirm(yes: bool) -> bool | None:
    if yes:
        return True
    if not sys.stdin.isatty():
        return None
    return input("start the backfill? [y/N] ").strip().lower() in {"y", "yes"}


def cmd_backfill(args: argparse.Namespace) -> int:
    from evaluator.cli.common import reader
    from evaluator.worker import backfill as bf

    settings = load_settings(args.settings)
    rubrics = load_rubrics(settings.rubrics.path)
    try:
        since = bf.parse_since(args.since)
    except BackfillError as exc:
        print(exc, file=sys.stderr)
        return 2
    store = reader(settings)  # backfill re-evaluates what is stored: no database, no traces
    try:
        try:
            plan = bf.plan_backfill(store, settings, rubrics, since=since, rubric=args.rubric)
        except BackfillError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(render_plan(plan, args.since))
        if args.dry_run or not plan.trace_ids:
            return 0
        answer = _confirm(args.yes)
        if answer is None:
            print("not a terminal: pass --yes to start without confirmation", file=sys.stderr)
            return 2
        if not answer:
            print("cancelled")
            return 1
        return _run(settings, store, rubrics, plan, wait=not args.no_wait)
    finally:
        store.close()


def _at(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))


def _run(settings: Any, store: Store, rubrics: Any, plan: bf.Plan, *, wait: bool) -> int:
    from evaluator.cli.exit_codes import BUDGET
    from evaluator.store.models import utcnow
    from evaluator.worker import backfill as bf

    kind = bf.new_kind()
    started = utcnow()
    pending, created, queued = plan.trace_ids, 0, 0
    # Under a judge budget: queue what the cap admits; waiting, queue the rest as windows
    # open (a trace larger than a window never fits and is left out, with the reason).
    while True:
        part = asyncio.run(
            bf.enqueue_backfill(
                settings, store, rubrics, pending, kind=kind, rubrics_of=plan.rubrics_of
            )
        )
        created, queued = created + part.created, queued + part.queued
        never = part.too_large
        pending = part.waiting
        if len(pending) == never or not wait:
            break
        print(
            f"queued {queued} traces; {len(pending)} wait for the judge budget "
            f"(the cap has room again at {_at(part.until)}); Ctrl-C stops, the queued stay queued",
            file=sys.stderr,
        )
        try:
            time.sleep(max(0.0, part.until - time.time()) + 0.5)
        except KeyboardInterrupt:
            print(f"\nstopped; {len(pending)} traces not queued", file=sys.stderr)
            return 130
    print(f"queued {queued} traces as intents {kind}:* ({created} new jobs)")
    if never:
        print(
            f"{never} traces need more evaluations at once than the judge budget's cap allows "
            "in one window (rubrics x 1 > calls_per_minute x burst, or > the daily cap): not "
            "queued; raise the cap or backfill them with --rubric, one rubric at a time",
            file=sys.stderr,
        )
    if pending and not wait:
        print(
            f"{len(pending) - never} traces wait for the judge budget (the cap has room "
            f"again at {_at(part.until)}); run the backfill again then, once the queued "
            "ones are evaluated (a trace still queued would be queued again), or leave out "
            "--no-wait to have it wait",
            file=sys.stderr,
        )
        return BUDGET
    if not wait:
        print(f"not waiting; follow with `evaluator stats`, progress is intents of kind {kind}")
        return BUDGET if never else 0
    try:
        final = asyncio.run(
            bf.wait_for(store.engine, kind, queued, _BarPrinter(sys.stderr), poll_s=1.0)
        )
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the rest stays queued (intents {kind}:*)", file=sys.stderr)
        return 130
    written = bf.records_written(store.engine, kind, started)
    print(f"done: {final.done} evaluated, {final.dead} dead, {written} records written")
    if final.dead:
        print("dead intents keep their cause: `evaluator retry --list`", file=sys.stderr)
    return 1 if final.dead else (BUDGET if never else 0)


def register(sub: Any) -> None:
    p = sub.add_parser("db", help="database schema: upgrade, current revision")
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    c = dsub.add_parser(
        "upgrade", help="apply migrations (adopts a database created before migrations)"
    )
    c.set_defaults(fn=cmd_db_upgrade)
    c = dsub.add_parser("current", help="print the schema revision; exit 1 if behind")
    c.set_defaults(fn=cmd_db_current)

    p = sub.add_parser(
        "backfill",
        help="re-evaluate stored traces of a time window (estimates judge cost first)",
        description="Re-evaluate traces ingested in the window. Records are unique per rubric "
        "version: traces whose selected rubrics all have an ok record at their current version "
        "are left alone; bump a rubric's version to score again.",
    )
    p.add_argument("--since", required=True, help="window, e.g. 7d, 12h, 30m, 2w")
    p.add_argument("--rubric", help="only traces this rubric has no ok record for yet")
    p.add_argument("--dry-run", action="store_true", help="print the estimate and exit")
    p.add_argument("--yes", action="store_true", help="start without asking")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="queue the jobs and return without a progress bar; under a judge budget queue "
        "only what the cap has room for now (exit 5 when some wait), instead of waiting for "
        "the next windows",
    )
    p.set_defaults(fn=cmd_backfill)
