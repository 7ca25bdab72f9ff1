"""`evaluator gate`: exit non-zero when a candidate prompt version is worse than its baseline.

Live canary (default): the production scores of --candidate and --baseline over --since.
Replay (--replay DATASET): both prompt templates are re-generated on the dataset's items
with the configured generator and scored under the current judge, then compared pair by pair.

Exit codes (the one table, evaluator.errors.ExitCode): 0 no worse (non-inferior within
--margin), 1 worse, 6 undecided (not enough data either way yet); errors are 2 usage (an
unknown rubric or prompt version), 3 unavailable, 4 schema behind. Undecided used to be 3,
the code of "unavailable" (CHANGELOG, breaking change). `--json` prints the numbers for CI.

Guarantees (evaluator.analytics.gate): the live canary is anytime-valid with both versions'
scores growing — re-running it as scores arrive keeps P(wrong "no worse") ≤ alpha and
P(wrong "worse") ≤ alpha; the replay is exact at its n. A rubric with a cheap stage (a
cascade with an audit rate; `options.ppi_regression = false` turns this off) decides on two
tests at alpha/2 each, the judged verdicts and the PPI++ pseudo-outcomes, and says which
decided (`estimator`, `arms`). `--json` says which (`guarantee`),
the bound that decided (`decided_by`) and, when undecided, the scores still needed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluator.cli.common import count, since_instant, since_start
from evaluator.errors import ExitCode, NotFound


def cmd_gate(args: argparse.Namespace) -> int:
    if args.replay is not None:
        return cmd_gate_replay(args)
    if not args.candidate or not args.baseline:
        print(
            "evaluator gate: --candidate and --baseline are needed (or --replay)", file=sys.stderr
        )
        return ExitCode.USAGE
    from evaluator.analytics.alerts import policy_for
    from evaluator.analytics.findings import ppi_floor
    from evaluator.analytics.gate import cascade_gate, gate
    from evaluator.analytics.gate_data import version_scores, version_stream
    from evaluator.analytics.names import unknown_rubric
    from evaluator.cli.common import reader
    from evaluator.config.policy import parse_duration
    from evaluator.config.rubrics import load_rubrics
    from evaluator.config.settings import load_settings

    settings = load_settings(args.settings)
    rubrics = load_rubrics(settings.rubrics.path)
    rubric = rubrics.by_name(args.rubric)
    if rubric is None:  # the gate needs the rubric's policy: a configured one only
        raise unknown_rubric(args.rubric, [r.name for r in rubrics.rubrics]) or NotFound("")
    policy = policy_for(rubric, settings.alerts).policy
    since = since_instant(args.since) or datetime.now(UTC) - parse_duration(args.since)
    floor = ppi_floor(rubric)  # a cheap stage: the judge-only and PPI++ tests at alpha/2
    where = {"feature": args.feature, "tenant": args.tenant}
    store = reader(settings)
    try:
        _known_versions(store, rubric.name, (args.baseline, args.candidate))
        base, cand = (
            version_scores(store, rubric.name, version, since, **where)
            for version in (args.baseline, args.candidate)
        )
        streams = (
            None
            if floor is None
            else [
                version_stream(store, rubric.name, version, since, **where)
                for version in (args.baseline, args.candidate)
            ]
        )
    finally:
        store.close()
    if floor is not None and streams is not None and None not in streams:
        b_s, c_s = streams
        assert b_s is not None and c_s is not None
        result = cascade_gate(
            b_s,
            c_s,
            policy,
            margin=args.margin,
            pi_floor=floor,
            pass_threshold=rubric.pass_threshold,
        )
    else:
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


def cmd_gate_replay(args: argparse.Namespace) -> int:
    import asyncio

    from evaluator.analytics.alerts import policy_for
    from evaluator.analytics.gate import paired_gate
    from evaluator.analytics.names import unknown_rubric
    from evaluator.config.settings import load_settings
    from evaluator.worker.replay import read_dataset, replay
    from evaluator.worker.runtime import build_runtime

    if not args.baseline_template or not args.candidate_template:
        print(
            "evaluator gate --replay: --baseline-template and --candidate-template are needed",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    settings = load_settings(args.settings)
    templates = (args.baseline_template.read_text(), args.candidate_template.read_text())
    cases = list(read_dataset(args.replay))[: args.limit or None]

    async def run() -> Any:
        runtime = build_runtime(settings)
        try:
            rubric = runtime.rubrics.by_name(args.rubric)
            if rubric is None:
                names = [r.name for r in runtime.rubrics.rubrics]
                raise unknown_rubric(args.rubric, names) or NotFound("")
            outcome = await replay(cases, templates, rubric, runtime.clients, model=args.model)
            return rubric, outcome
        finally:
            await runtime.aclose()

    rubric, outcome = asyncio.run(run())
    policy = policy_for(rubric, settings.alerts).policy
    result = paired_gate(outcome.pairs, policy, margin=args.margin)
    doc = {
        "rubric": rubric.name,
        "mode": "replay",
        "items": len(cases),
        "pairs": len(outcome.pairs),
        "skipped": [{"trace_id": t, "why": w} for t, w in outcome.skipped],
        "generator_calls": outcome.generator_calls,
        "judge_calls": outcome.judge_calls,
        "cost_usd": outcome.cost_usd,
        **result.to_dict(),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        label = argparse.Namespace(
            candidate=args.candidate_template.name,
            baseline=args.baseline_template.name,
            since="replay",
        )
        print(_text(rubric.name, label, result.to_dict()))
        print(
            f"  {len(outcome.pairs)} pairs of {len(cases)} items, {len(outcome.skipped)} left "
            f"out; {outcome.generator_calls} generator and {outcome.judge_calls} judge calls"
        )
    return result.exit_code


def _known_versions(store: Any, rubric: str, versions: tuple[str, str]) -> None:
    """A prompt version with no record of the rubric at all is a typo (exit 2), not a
    version without data yet; one with records outside --since is only undecided."""
    from sqlalchemy import select
    from sqlmodel import col

    from evaluator.store.models import EvalRecord

    r = EvalRecord
    query = select(col(r.prompt_version)).where(col(r.rubric) == rubric).distinct()
    with store.engine.connect() as conn:
        known = {v for (v,) in conn.execute(query) if v is not None}
    for version in versions:
        if version not in known:
            names = ", ".join(sorted(known)[:20]) or "none"
            raise NotFound(
                f"no {rubric} record of prompt version {version!r}; versions with records: {names}"
            )


def _num(value: Any, spec: str) -> str:
    """A number for the text report; 'n/a' where there is none (no data, no bound)."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return format(value, spec)


def _text(rubric: str, args: argparse.Namespace, d: dict[str, Any]) -> str:
    b, c = d["baseline"], d["candidate"]

    def side(s: dict[str, Any]) -> str:
        return (
            f"n={s['n']:<5} mean={_num(s.get('mean'), '.3f')} "
            f"[{_num(s.get('mean_ci_low'), '.3f')}, {_num(s.get('mean_ci_high'), '.3f')}]"
        )

    return (
        f"{rubric}: {args.candidate} vs {args.baseline} (since {args.since}): "
        f"{d['decision'].replace('_', ' ').upper()}\n"
        f"  baseline  {side(b)}\n"
        f"  candidate {side(c)}\n"
        f"  drop {_num(d.get('drop'), '+.3f')}, {d['drop_bound_level']:.0%} bounds "
        f"[{_num(d.get('drop_lower_bound'), '.3f')}, {_num(d.get('drop_upper_bound'), '.3f')}] "
        f"(margin {d['margin']}); p {_num(d.get('p_value'), '.3g')} "
        f"({d['test']}, {d['guarantee']})\n"
        f"  {d['reason']}" + ("" if "arms" not in d else f"\n  {_arms(d)}")
    )


def _arms(d: dict[str, Any]) -> str:
    """A cheap stage's two tests, each at alpha/2, and which decided."""
    each = "; ".join(
        f"{k} [{_num(a['drop_lower_bound'], '.3f')}, {_num(a['drop_upper_bound'], '.3f')}]"
        for k, a in d["arms"].items()
    )
    return f"estimator: {d['estimator'] or 'neither decided'} ({each}, each at alpha/2)"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gate",
        help="exit 1 when a candidate prompt version scores worse than its baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rubric", required=True, help="rubric name")
    p.add_argument("--candidate", help="candidate prompt version, e.g. v19 (live canary)")
    p.add_argument("--baseline", help="baseline prompt version, e.g. v18 (live canary)")
    p.add_argument(
        "--replay",
        type=Path,
        metavar="DATASET",
        help="replay this dataset JSONL (e.g. from `evaluator dataset export`)",
    )
    p.add_argument("--baseline-template", type=Path, help="replay: the baseline's prompt")
    p.add_argument("--candidate-template", type=Path, help="replay: the candidate's prompt")
    p.add_argument("--model", help="replay: the generator model (default: each trace's model)")
    p.add_argument("--limit", type=count, default=0, help="replay: at most N items (0: all)")
    p.add_argument(
        "--since",
        type=since_start,
        default="24h",
        help="window both versions are read from: a duration back from now (24h), or a fixed "
        "start such as the rollout (2026-12-06T09:00Z) — re-runs over a fixed start keep the "
        "gate's error rates, a rolling window does not",
    )
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
