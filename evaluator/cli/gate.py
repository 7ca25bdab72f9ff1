"""`evaluator gate`: exit non-zero when a candidate prompt version is worse than its baseline.

Exit codes: 0 no worse (non-inferior within --margin), 1 worse, 3 not enough data yet,
2 usage. `--json` prints the numbers for CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any


def cmd_gate(args: argparse.Namespace) -> int:
    from evaluator.analytics.alerts import policy_for
    from evaluator.analytics.gate import gate
    from evaluator.analytics.gate_data import version_scores
    from evaluator.config.policy import parse_duration
    from evaluator.config.rubrics import load_rubrics
    from evaluator.config.settings import load_settings
    from evaluator.store.store import Store

    settings = load_settings(args.settings)
    rubrics = load_rubrics(settings.rubrics.path)
    rubric = rubrics.by_name(args.rubric)
    if rubric is None:
        known = ", ".join(r.name for r in rubrics.rubrics)
        print(f"evaluator gate: no rubric {args.rubric!r} (known: {known})", file=sys.stderr)
        return 2
    policy = policy_for(rubric, settings.alerts).policy
    since = datetime.now(UTC) - parse_duration(args.since)
    store = Store(settings.database.url)
    try:
        base, cand = (
            version_scores(store, rubric.name, version, since,
                           feature=args.feature, tenant=args.tenant)
            for version in (args.baseline, args.candidate)
        )  # fmt: skip
    finally:
        store.close()
    result = gate(base, cand, policy, margin=args.margin, pass_threshold=rubric.pass_threshold)
    if args.json:
        doc = {
            "rubric": rubric.name,
            "baseline_version": args.baseline,
            "candidate_version": args.candidate,
            "since": args.since,
            **result.to_dict(),
        }
        print(json.dumps(doc, indent=2))
    else:
        print(_text(rubric.name, args, result.to_dict()))
    return result.exit_code


def _text(rubric: str, args: argparse.Namespace, d: dict[str, Any]) -> str:
    b, c = d["baseline"], d["candidate"]
    return (
        f"{rubric}: {args.candidate} vs {args.baseline} (since {args.since}): "
        f"{d['decision'].replace('_', ' ').upper()}\n"
        f"  baseline  n={b['n']:<5} mean={b['mean']:.3f} "
        f"[{b['mean_ci_low']:.3f}, {b['mean_ci_high']:.3f}]\n"
        f"  candidate n={c['n']:<5} mean={c['mean']:.3f} "
        f"[{c['mean_ci_low']:.3f}, {c['mean_ci_high']:.3f}]\n"
        f"  drop {d['drop']:+.3f}, {d['drop_upper_bound_level']:.0%} upper bound "
        f"{d['drop_upper_bound']:.3f} (margin {d['margin']}); e-value {d['e_value']:.3g}, "
        f"p {d['p_value']:.3g} ({d['test']})\n"
        f"  {d['reason']}"
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gate",
        help="exit 1 when a candidate prompt version scores worse than its baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rubric", required=True, help="rubric name")
    p.add_argument("--candidate", required=True, help="candidate prompt version, e.g. v19")
    p.add_argument("--baseline", required=True, help="baseline prompt version, e.g. v18")
    p.add_argument("--since", default="24h", help="window both versions are read from (24h)")
    p.add_argument(
        "--margin",
        type=float,
        default=0.05,
        help="largest drop of the mean score still called 'no worse' (0.05)",
    )
    p.add_argument("--feature", help="only this feature's records")
    p.add_argument("--tenant", help="only this tenant's records")
    p.add_argument("--json", action="store_true", help="machine-readable output for CI")
    p.set_defaults(fn=cmd_gate)
