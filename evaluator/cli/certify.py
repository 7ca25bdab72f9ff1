"""`evaluator certify --rubric R [--json] [--compute]`: a cascade rubric's certifications —
stratum, guarantee, threshold, share decided, P(fail | passed) bound, saved judge calls — and,
with --compute, what the stored labels certify now or how many more they need (read only)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_certify(args: argparse.Namespace) -> int:
    from evaluator.analytics.certification_view import (
        certifications_data,
        certifications_table,
        compute_now,
        computed_table,
    )
    from evaluator.cli.common import check_rubric, reader
    from evaluator.config.rubrics import load_rubrics
    from evaluator.config.settings import load_settings
    from evaluator.errors import InputError

    settings = load_settings(args.settings)
    store = reader(settings)
    try:
        check_rubric(store, settings, args.rubric)
        data = certifications_data(store, args.rubric)
        if args.compute:
            found = [r for r in load_rubrics(settings.rubrics.path).rubrics
                     if r.name == args.rubric]  # fmt: skip
            if not found or found[0].resolved_method != "cascade":
                raise InputError(
                    f"rubric {args.rubric!r} is not a cascade in {settings.rubrics.path}: "
                    '--compute needs its alpha and delta (method = "cascade")'
                )
            data["computed"] = compute_now(store, found[0])
    finally:
        store.close()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{args.rubric}: " + certifications_table(data))
        if args.compute:
            print(computed_table(data["computed"]))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "certify",
        help="a cascade rubric's certifications (guarantee, threshold, share decided, saved "
        "judge calls); --compute: what the stored labels certify now",
    )
    p.add_argument("--rubric", required=True, help="the rubric")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--compute",
        action="store_true",
        help="also compute from the stored calibration labels now (read only; the worker "
        "stores certifications) and say how many more labels are needed",
    )
    p.set_defaults(fn=cmd_certify)
