"""`evaluator trends`, `evaluator alerts` and `evaluator serve` (registered by cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evaluator.cli.common import check_rubric, port, reader
from evaluator.errors import ExitCode

EXIT_OK, EXIT_USAGE = ExitCode.OK, ExitCode.USAGE


def cmd_cost_per_pass(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from evaluator.analytics.cost import cost_per_pass, cost_table
    from evaluator.config.policy import parse_duration
    from evaluator.config.settings import load_settings

    settings = load_settings(args.settings)
    end = datetime.now(UTC)
    store = reader(settings)
    try:
        doc = cost_per_pass(
            store,
            settings.cost_usd,
            end - parse_duration(args.since),
            end,
            args.by,
            pricing=settings.pricing,
        )
    finally:
        store.close()
    print(json.dumps(doc, indent=2) if args.json else cost_table(doc))
    return EXIT_OK


def cmd_trends(args: argparse.Namespace) -> int:
    if args.metric == "cost_per_pass":
        return cmd_cost_per_pass(args)
    if args.rubric is None:
        print("evaluator trends: --rubric is needed for --metric score", file=sys.stderr)
        return EXIT_USAGE
    if args.by == "tenant":
        print(
            "evaluator trends: --by tenant is available for --metric cost_per_pass; score "
            "trends read hourly rollups kept per prompt version, model and feature",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from evaluator.analytics.trends import TrendQuery, trend, trends_table
    from evaluator.config.settings import load_settings

    try:
        query = TrendQuery.parse(args.rubric, args.by, args.since, args.bucket)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings(args.settings)
    store = reader(settings)
    try:
        check_rubric(store, settings, args.rubric)
        doc = trend(store, query)
    finally:
        store.close()
    print(json.dumps(doc, indent=2) if args.json else trends_table(doc))
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace) -> int:
    from evaluator.analytics.alerts import alert_to_json, alerts_table, list_alerts
    from evaluator.config.settings import load_settings

    settings = load_settings(args.settings)
    store = reader(settings)
    try:
        check_rubric(store, settings, args.rubric)
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
    p.add_argument("--rubric", help="rubric name (needed for --metric score)")
    p.add_argument(
        "--metric",
        default="score",
        choices=["score", "cost_per_pass"],
        help="score (default) or cost_per_pass: judge + generator USD per answer that "
        "passed all of its rubrics",
    )
    p.add_argument(
        "--by",
        default="prompt_version",
        choices=["prompt_version", "model", "feature", "tenant", "none"],
    )
    p.add_argument("--since", default="7d", help="how far back, e.g. 24h, 7d, 30d (default 7d)")
    p.add_argument("--bucket", default="1d", help="bucket size in whole hours, e.g. 1h, 6h, 1d")
    p.add_argument("--json", action="store_true", help="stable JSON (docs/how-to/trends.md)")
    p.set_defaults(fn=cmd_trends)

    p = sub.add_parser("alerts", help="regression alerts (newest first)")
    p.add_argument("--open", action="store_true", help="only open alerts")
    p.add_argument("--rubric", help="only this rubric")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="stable JSON (docs/how-to/alerts.md)")
    p.set_defaults(fn=cmd_alerts)

    p = sub.add_parser("serve", help="HTTP: trends page and JSON API (read-only)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8700, help="TCP port, 0-65535 (default 8700)")
    p.set_defaults(fn=cmd_serve)
