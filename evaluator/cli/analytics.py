"""`evaluator trends`, `evaluator alerts` and `evaluator serve` (registered by cli.py)."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import sys
from typing import Any

EXIT_OK, EXIT_USAGE = 0, 2


def _known_rubric(store: Any, settings: Any, name: str) -> None:
    """An unknown rubric is a typo, not an empty result: name the ones that exist."""
    from evaluator.config.rubrics import load_rubrics
    from evaluator.errors import InputError, RubricError

    known = set(store.rubric_names())
    with contextlib.suppress(RubricError):  # `rubrics check` reports those
        known |= {r.name for r in load_rubrics(settings.rubrics.path).rubrics}
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InputError(
            f"no rubric named {name!r}; {hint}known: {', '.join(sorted(known)) or 'none'}"
        )


def cmd_trends(args: argparse.Namespace) -> int:
    from evaluator.analytics.trends import TrendQuery, trend, trends_table
    from evaluator.config.settings import load_settings
    from evaluator.store.store import Store

    try:
        query = TrendQuery.parse(args.rubric, args.by, args.since, args.bucket)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings(args.settings)
    store = Store(settings.database.url, migrate=False)
    try:
        _known_rubric(store, settings, args.rubric)
        doc = trend(store, query)
    finally:
        store.close()
    print(json.dumps(doc, indent=2) if args.json else trends_table(doc))
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace) -> int:
    from evaluator.analytics.alerts import alert_to_json, alerts_table, list_alerts
    from evaluator.config.settings import load_settings
    from evaluator.store.store import Store

    settings = load_settings(args.settings)
    store = Store(settings.database.url, migrate=False)
    try:
        if args.rubric is not None:
            _known_rubric(store, settings, args.rubric)
        rows = list_alerts(store, open_only=args.open, rubric=args.rubric, limit=args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"alerts": [alert_to_json(a) for a in rows]}, indent=2))
    else:
        print(alerts_table(rows))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from evaluator.config.settings import load_settings
    from evaluator.web.server import serve

    serve(load_settings(args.settings), host=args.host, port=args.port)
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the analytics commands to the `evaluator` sub-parsers."""
    p = sub.add_parser("trends", help="score trends per prompt version (or model, feature)")
    p.add_argument("--rubric", required=True, help="rubric name")
    p.add_argument("--by", default="prompt_version",
                   choices=["prompt_version", "model", "feature", "none"])  # fmt: skip
    p.add_argument("--since", default="7d", help="how far back, e.g. 24h, 7d, 30d (default 7d)")
    p.add_argument("--bucket", default="1d", help="bucket size in whole hours, e.g. 1h, 6h, 1d")
    p.add_argument("--json", action="store_true", help="stable JSON (see README: Trends JSON)")
    p.set_defaults(fn=cmd_trends)

    p = sub.add_parser("alerts", help="regression alerts (newest first)")
    p.add_argument("--open", action="store_true", help="only open alerts")
    p.add_argument("--rubric", help="only this rubric")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="stable JSON (see README: Alerts JSON)")
    p.set_defaults(fn=cmd_alerts)

    p = sub.add_parser("serve", help="HTTP: trends page and JSON API (read-only)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8700)
    p.set_defaults(fn=cmd_serve)
