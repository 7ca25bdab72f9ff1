"""`evaluator retention run [--dry-run] [--json]`: apply `[database.retention]` now.

The worker applies retention once an hour; this runs the same pass on demand (the same
cutoffs and floors, evaluator.store.retention), or with --dry-run counts what it would
delete and deletes nothing. Tables whose days are 0 are kept forever and listed as such.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from evaluator.errors import ExitCode

_TABLES = {
    "eval_records": "records_days",
    "batch_requests": "records_days",
    "traces": "traces_days",
    "eval_intents": "intents_days",
    "otlp_pending_spans": "pending_spans_days",
}


def cmd_retention_run(args: argparse.Namespace) -> int:
    from evaluator.cli.common import reader
    from evaluator.config.settings import load_settings
    from evaluator.store.retention import apply_retention

    settings = load_settings(args.settings)
    store = reader(settings)  # a database that is not there has nothing to keep or drop
    try:
        result = apply_retention(store, settings, datetime.now(UTC), dry_run=args.dry_run)
    finally:
        store.close()
    days = settings.database.retention
    kept = sorted(
        {t for t, key in _TABLES.items() if getattr(days, key) <= 0} - set(result.deleted)
    )
    doc: dict[str, Any] = {
        "dry_run": result.dry_run,
        ("would_delete" if result.dry_run else "deleted"): result.deleted,
        "cutoffs": result.cutoffs,
        "kept_forever": kept,
        "seconds": round(result.seconds, 3),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return ExitCode.OK
    verb = "would delete" if result.dry_run else "deleted"
    for table, n in result.deleted.items():
        print(f"{table:<20} {verb} {n:>9}  (older than {result.cutoffs[table]})")
    if kept:
        print(f"kept forever (0 days in [database.retention]): {', '.join(kept)}")
    if result.dry_run:
        print("dry run: nothing deleted; run without --dry-run to apply")
    return ExitCode.OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "retention",
        help="apply [database.retention] now (the worker does it hourly)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = p.add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    run = rsub.add_parser("run", help="one retention pass now; --dry-run only counts")
    run.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    run.add_argument("--json", action="store_true", help="JSON for scripts")
    run.set_defaults(fn=cmd_retention_run)
