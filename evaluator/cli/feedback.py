"""`evaluator feedback import|agreement` and `evaluator review next`.

evaluator feedback import labels.jsonl [--source S] [--no-enqueue] [--json]
evaluator feedback agreement --rubric faithfulness [--json]
evaluator review next [--rubric R] [-n 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_NOT_ENQUEUED = {
    "no_redis": "--no-enqueue",
    "rule_off": "sampling.always_on_negative_feedback is off",
    "redis_error": "Redis unreachable",
}


def _store(args: argparse.Namespace) -> Any:
    """The store `feedback import` writes to (created and migrated as any writer's)."""
    from evaluator.config.settings import load_settings
    from evaluator.store.store import Store

    return Store(load_settings(args.settings).database.url)


def _reader(args: argparse.Namespace) -> Any:
    """The store a read command reads, after checking --rubric (an unknown one: exit 2)."""
    from evaluator.cli.common import check_rubric, reader
    from evaluator.config.settings import load_settings

    settings = load_settings(args.settings)
    store = reader(settings)
    try:
        check_rubric(store, settings, args.rubric)
    except BaseException:
        store.close()
        raise
    return store


def cmd_import(args: argparse.Namespace) -> int:
    from evaluator.config.redis_clients import sync_redis
    from evaluator.config.settings import load_settings
    from evaluator.sources.feedback import import_feedback
    from evaluator.sources.feedback_tail import FeedbackIntake

    if not args.file.is_file():
        print(f"{args.file}: no such file", file=sys.stderr)
        return 2
    settings = load_settings(args.settings)
    store = _store(args)
    # Negative feedback on a stored trace enqueues it for the tail rules; with --no-enqueue
    # only the trace's stored signal turns negative; Redis unreachable changes nothing (retry).
    rclient = (
        None
        if args.no_enqueue
        else sync_redis(settings, socket_connect_timeout=2.0, socket_timeout=2.0)
    )
    intake = (
        None
        if rclient is None
        else FeedbackIntake(
            rclient, settings.redis.key_prefix, settings.sampling.always_on_negative_feedback
        )
    )
    try:
        report = import_feedback(store, args.file, source=args.source, intake=intake)
    finally:
        store.close()
        if rclient is not None:
            rclient.close()
    for line, reason in report.errors:
        print(f"{args.file}:{line}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in report.to_json().items() if k != "ids"}, indent=2))
    else:
        print(
            f"{args.file}: {report.inserted} new, {report.updated} changed, "
            f"{report.duplicates} already there, {len(report.errors)} rejected "
            f"({report.traces} new traces)"
        )
        tail = report.tail
        if tail.skipped == "redis_error":
            print(
                "negative feedback not enqueued (Redis unreachable); the traces' signals are "
                "left unmarked: import the file again to retry",
                file=sys.stderr,
            )
        elif tail.marked:
            why = _NOT_ENQUEUED.get(tail.skipped or "", "")
            print(
                f"{len(tail.marked)} stored traces turned negative: {tail.enqueued} enqueued"
                + (f" (not enqueued: {why}; their stored signal is set)" if why else "")
            )
    return 1 if report.errors else 0


def _fmt(metric: dict[str, Any]) -> str:
    if metric.get("value") is None:
        return "   n/a"
    if metric.get("ci_low") is None:
        return f"{metric['value']:.3f}"
    return f"{metric['value']:.3f} [{metric['ci_low']:.2f}, {metric['ci_high']:.2f}]"


def cmd_agreement(args: argparse.Namespace) -> int:
    from evaluator.analytics.human_feedback import agreement_by_epoch

    store = _reader(args)
    try:
        rows = agreement_by_epoch(store, args.rubric)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"rubric": args.rubric, "epochs": rows}, indent=2))
        return 0
    if not rows:
        print(f"no eval record of {args.rubric} has human feedback yet")
        return 0
    print(f"judge-human agreement, rubric {args.rubric} (positive = fails; 95% bootstrap CI)")
    print(f"{'epoch':<28}{'first seen':<12}{'n':>5}  {'BalAcc':<22}{'kappa':<22}AUROC")
    for r in rows:
        print(
            f"{r['epoch'][:27]:<28}{r['first_seen'][:10]:<12}{r['n']:>5}  "
            f"{_fmt(r['balanced_accuracy']):<22}{_fmt(r['cohen_kappa']):<22}{_fmt(r['auroc'])}"
        )
    return 0


def cmd_review_next(args: argparse.Namespace) -> int:
    from evaluator.analytics.human_feedback import review_queue
    from evaluator.config.rubrics import pass_thresholds
    from evaluator.config.settings import load_settings

    settings = load_settings(args.settings)
    thresholds = pass_thresholds(settings.rubrics.path)
    store = _reader(args)
    try:
        items = review_queue(store, thresholds, rubric=args.rubric, n=args.n)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"queue": [i.to_json() for i in items]}, indent=2))
        return 0
    if not items:
        print("nothing to review: no uncertain, disputed or alerted trace without a label")
        return 0
    print(f"{'#':>3} {'priority':>8}  {'trace':<36}{'rubric':<18}{'score':>6}  why")
    for n, item in enumerate(items, 1):
        score = "" if item.score is None else f"{item.score:.2f}"
        print(
            f"{n:>3} {item.priority:>8.2f}  {item.trace_id[:35]:<36}{item.rubric[:17]:<18}"
            f"{score:>6}  {'; '.join(item.reasons)}"
        )
    print("label one: evaluator feedback import FILE  (or POST /api/feedback)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("feedback", help="human feedback: import it, track judge-human agreement")
    fsub = p.add_subparsers(dest="feedback_command", required=True)
    imp = fsub.add_parser(
        "import",
        help="import labelled JSONL or compact {trace_id, value|label} lines (idempotent)",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--source", help="recorded as the feedback's source (import:FILE)")
    imp.add_argument(
        "--no-enqueue",
        action="store_true",
        help="do not enqueue stored traces that negative feedback turns negative (the tail "
        "rule); only set their stored signal",
    )
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(fn=cmd_import)
    agr = fsub.add_parser("agreement", help="judge-human agreement per epoch, with intervals")
    agr.add_argument("--rubric", required=True)
    agr.add_argument("--json", action="store_true")
    agr.set_defaults(fn=cmd_agreement)

    r = sub.add_parser("review", help="traces whose human label would teach the most")
    rsub = r.add_subparsers(dest="review_command", required=True)
    nxt = rsub.add_parser("next", help="print the review queue")
    nxt.add_argument("--rubric")
    nxt.add_argument("-n", type=int, default=20, help="queue length (20)")
    nxt.add_argument("--json", action="store_true")
    nxt.set_defaults(fn=cmd_review_next)
