"""`evaluator epochs [--rubric R] [--json]`: which evaluator scored each rubric, and when."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_epochs(args: argparse.Namespace) -> int:
    from evaluator.analytics.epochs import epochs_table, list_epochs
    from evaluator.cli.common import check_rubric, reader
    from evaluator.config.settings import load_settings

    settings = load_settings(args.settings)
    store = reader(settings)
    try:
        check_rubric(store, settings, args.rubric)
        rows = list_epochs(store, args.rubric)
    finally:
        store.close()
    print(json.dumps({"epochs": rows}, indent=2) if args.json else epochs_table(rows))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "epochs",
        help="evaluator epochs per rubric (what produced the verdicts), first/last seen, counts",
    )
    p.add_argument("--rubric", help="only this rubric")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_epochs)
