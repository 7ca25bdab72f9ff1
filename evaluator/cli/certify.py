"""`evaluator certify --rubric R [--json] [--compute]`: a cascade rubric's certifications —
stratum, status against today's judge epoch, guarantee, threshold, share decided, P(fail |
passed) bound and its joint confidence, saved judge calls — and, with --compute, what the
stored labels certify now or how many more they need (read only).

Exit codes: 0 listed (or, with --compute, something is certifiable now); 6 (undecided, the
errors table) with --compute when no key of today's stage and judge epoch can be certified
from the stored labels; 2 for an unknown rubric, or --compute on one with no cheap stage."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_certify(args: argparse.Namespace) -> int:
    from evaluator.analytics.certification_view import (
        certifiable_now,
        certifications_data,
        certifications_table,
        compute_now,
        computed_table,
    )
    from evaluator.cli.common import check_rubric, reader
    from evaluator.config.rubrics import load_rubrics
    from evaluator.config.settings import load_settings
    from evaluator.errors import ExitCode, InputError
    from evaluator.worker.cascade_routing import rubrics_now
    from evaluator.worker.runtime import make_judge
    from judges.types import Clients

    settings = load_settings(args.settings)
    found = [r for r in load_rubrics(settings.rubrics.path).rubrics if r.name == args.rubric]
    # The judge the worker would build (no connection is made): its epoch keys the router.
    now = rubrics_now(found, Clients(judge=make_judge(settings)))
    current = now.get(args.rubric)
    store = reader(settings)
    try:
        check_rubric(store, settings, args.rubric)
        data = certifications_data(store, args.rubric, now)
        if args.compute:
            if current is None:
                raise InputError(
                    f"rubric {args.rubric!r} has no cheap stage in {settings.rubrics.path} "
                    '(only method = "cascade" has one): there is nothing to certify'
                )
            data["computed"] = compute_now(store, found[0], current)
    finally:
        store.close()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{args.rubric}: " + certifications_table(data))
        if args.compute:
            print(computed_table(data["computed"], data["uncertified"]))
    if args.compute and not certifiable_now(data["computed"]):
        return int(ExitCode.UNDECIDED)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "certify",
        help="a cascade rubric's certifications (guarantee, threshold, share decided, saved "
        "judge calls); --compute: what the stored labels certify now (exit 6: nothing yet)",
    )
    p.add_argument("--rubric", required=True, help="the rubric")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--compute",
        action="store_true",
        help="also compute from the stored calibration labels now (read only; the worker "
        "stores certifications) and say how many more labels are needed; exits 6 when "
        "nothing can be certified yet",
    )
    p.set_defaults(fn=cmd_certify)
