"""`evaluator dataset export`: production traces to a regression dataset (JSONL + manifest).

    evaluator dataset export OUT.jsonl --alert ALERT_ID [--good 20]
    evaluator dataset export OUT.jsonl --rubric faithfulness --failed --since 7d \\
        [--prompt-version v18] [--limit 500]
    evaluator dataset export OUT.jsonl --labelled [--rubric faithfulness]

Text is redacted as for the judge unless --no-redact. OUT.manifest.json records the
selection, the counts and when the export was made. Replay the file with
`evaluator gate --replay OUT.jsonl ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluator.cli.common import count, duration
from evaluator.errors import ExitCode, NotFound

GOOD = 20  # --alert exports: passing traces of the alert's group beside its worst


def cmd_export(args: argparse.Namespace) -> int:
    from evaluator.analytics.datasets import Selection, export_lines, select_trace_ids
    from evaluator.cli.common import check_rubric, reader
    from evaluator.config.policy import parse_duration
    from evaluator.config.settings import load_settings

    if args.alert is not None and (args.rubric is not None or args.labelled):
        print("evaluator dataset export: --alert selects on its own", file=sys.stderr)
        return ExitCode.USAGE
    if args.alert is None and args.rubric is None and not args.labelled:
        print("evaluator dataset export: give --alert, --rubric or --labelled", file=sys.stderr)
        return ExitCode.USAGE
    if args.good is not None and args.alert is None:
        print(
            "evaluator dataset export: --good applies to --alert exports only (passing "
            "traces of the alert's group beside its worst ones)",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    if args.alert is not None:
        args.alert = _alert_id(args.alert)
    since = datetime.now(UTC) - parse_duration(args.since) if args.since else None
    sel = Selection(
        kind="alert" if args.alert else "labelled" if args.labelled else "query",
        rubric=args.rubric or "",
        alert_id=args.alert,
        failed_only=args.failed,
        since=since,
        prompt_version=args.prompt_version,
        limit=args.limit,
        good=GOOD if args.good is None else args.good,
    )
    settings = load_settings(args.settings)
    store = reader(settings)
    try:
        if sel.kind != "alert":
            check_rubric(store, settings, args.rubric)
        try:
            chosen = select_trace_ids(store, sel)
        except LookupError:
            raise NotFound(
                f"no alert {args.alert}: `evaluator alerts` lists the alert IDs"
            ) from None
        if sel.kind == "alert":
            sel = _with_alert_rubric(store, sel)
        lines = list(export_lines(store, chosen, sel, redact=not args.no_redact))
    finally:
        store.close()
    good = sum(1 for _, why in chosen if why == "good")
    if sel.kind == "alert" and good < sel.good:
        print(
            f"evaluator dataset export: {good} of the {sel.good} passing traces asked for "
            f"(--good) exist in the alert's group {sel.labels or '(all)'}",
            file=sys.stderr,
        )
    args.out.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    manifest = {
        "file": args.out.name,
        "created_at": datetime.now(UTC).isoformat(),
        "selection": {
            k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in sel.__dict__.items()
        },
        "redacted": not args.no_redact,
        "traces": len(lines),
        "selected": len(chosen),
        "missing_traces": len(chosen) - len(lines),
        "by_reason": {
            r: sum(1 for x in lines if x["selected_by"]["why"] == r)
            for r in ("worst", "good", "query", "labelled")
        },
    }
    manifest_path = args.out.with_name(args.out.stem + ".manifest.json")
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"{len(lines)} traces -> {args.out} (manifest {manifest_path.name})")
    return ExitCode.OK


def _alert_id(text: str) -> str:
    """An alert ID as `evaluator alerts` prints it (a UUID); anything else is a usage error."""
    import uuid

    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise NotFound(
            f"no alert {text!r}: alert IDs are UUIDs, as `evaluator alerts` lists them"
        ) from None


def _with_alert_rubric(store: Any, sel: Any) -> Any:
    import dataclasses
    import uuid

    from sqlmodel import Session

    from evaluator.store.models import AlertRecord

    with Session(store.engine) as session:
        alert = session.get(AlertRecord, uuid.UUID(str(sel.alert_id)))
    return (
        dataclasses.replace(sel, rubric=alert.rubric, labels=dict(alert.labels)) if alert else sel
    )


def register(sub: Any) -> None:
    p = sub.add_parser("dataset", help="regression datasets from production traces")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    e = dsub.add_parser(
        "export",
        help="write selected traces with their scores to JSONL (+ a manifest)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("out", type=Path, help="output JSONL file")
    e.add_argument("--alert", help="an alert's worst traces (see `evaluator alerts`)")
    e.add_argument(
        "--good",
        type=count,
        help=f"with --alert: N passing traces of the alert's group too ({GOOD})",
    )
    e.add_argument("--rubric", help="select by this rubric's records")
    e.add_argument("--failed", action="store_true", help="only traces that failed --rubric")
    e.add_argument("--since", type=duration, help="only records newer than this (e.g. 7d)")
    e.add_argument("--prompt-version", help="only this prompt version")
    e.add_argument("--limit", type=count, default=1000, help="at most N traces (1000)")
    e.add_argument(
        "--labelled",
        action="store_true",
        help="traces with human feedback (the review queue's labels), carried as labels",
    )
    e.add_argument("--no-redact", action="store_true", help="export raw text (policy permitting)")
    e.set_defaults(fn=cmd_export)
