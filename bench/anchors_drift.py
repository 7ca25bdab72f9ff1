"""Does the anchor set catch a judge that drifts, and stay quiet when it does not?

    python -m bench.anchors_drift --seeds 30 [--before 0.85 --after 0.70] [--resample]

Per seed: a fresh SQLite store, RAGTruth QA as a labelled anchor set (hallucinated iff
`labels` non-empty), the label-aware drifting judge (bench/drifting_judge.py) on loopback,
and `run_anchors` in-process (no worker): a baseline run at --before, then a second run
with the judge switched to --after (drift) or left alone (null). Counts the JUDGE-DRIFT
alerts each scenario opened, and the calls, tokens and USD of one anchor run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import load_settings
from evaluator.sources.ragtruth import record_to_traces
from evaluator.store.store import Store
from evaluator.worker.anchors import run_anchors
from evaluator.worker.runtime import Runtime, make_judge
from judges.types import Clients

from .drifting_judge import DATA, DriftingJudgeServer, DriftPolicy, labels_from_ragtruth

RUBRIC = """
name = "faithfulness_anchored"
version = "1"
scorer = "llm_rubric"
pass_threshold = 0.5
[llm_rubric]
criteria = "Is every claim of the answer supported by the retrieved documents?"
inputs = ["question", "contexts", "answer"]
[anchors]
file = "anchors.jsonl"
every = "7d"
max_items = {max_items}
seed = {seed}
resample = {resample}
"""
MODEL = "gpt-4o-mini"  # priced at $0.15 / $0.60 per million input / output tokens


def write_anchor_set(data: Path, out: Path) -> None:
    with data.open() as fh, out.open("w") as dst:
        for line in fh:
            for trace in record_to_traces(json.loads(line)):
                bad = trace["attributes"].pop("ragtruth.hallucinated")
                label = "hallucinated" if bad else "faithful"
                dst.write(json.dumps({"trace": trace, "label": label}) + "\n")


def settings_file(root: Path, judge_url: str) -> Path:
    path = root / "settings.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{root / "evals.db"}"\n'
        f'[rubrics]\ndir = "{root / "rubrics"}"\n'
        f'[judge]\nbase_url = "{judge_url}"\nmodel = "{MODEL}"\ncache_ttl_s = 0\n'
        "[redaction]\nenabled = false\n"
        f'[pricing."{MODEL}"]\ninput_per_mtok = 0.15\noutput_per_mtok = 0.60\n'
    )
    return path


async def one_seed(args: argparse.Namespace, labels: dict[str, bool], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": seed}
    for scenario, second in (("drift", args.after), ("null", args.before)):
        policy = DriftPolicy(labels, args.before, noise=args.noise, seed=seed)
        server = DriftingJudgeServer(policy)
        url = await server.start()
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "rubrics").mkdir()
            (root / "rubrics" / "r.toml").write_text(
                RUBRIC.format(
                    max_items=args.max_items, seed=seed, resample=str(args.resample).lower()
                )
            )
            write_anchor_set(args.data, root / "rubrics" / "anchors.jsonl")
            settings = load_settings(settings_file(root, url), environ={})
            rt = Runtime(
                settings=settings,
                store=Store(settings.database.url),
                rubrics=load_rubrics(settings.rubrics.path),
                clients=Clients(judge=make_judge(settings)),
            )
            rubric = rt.rubrics.rubrics[0]
            try:
                first = await run_anchors(rt, rubric, bootstrap_reps=args.reps)
                policy.set_accuracy(second)
                later = await run_anchors(rt, rubric, bootstrap_reps=args.reps)
            finally:
                await rt.aclose()
        await server.close()
        assert first.run is not None and later.run is not None
        out[scenario] = {
            "alert": later.alert,
            "ba_before": first.run.metrics["balanced_accuracy"]["value"],
            "ba_after": later.run.metrics["balanced_accuracy"]["value"],
            "p": later.run.drift.get("p_value"),
            "test": later.run.drift.get("test"),
            "n": later.run.n,
            "positives": later.run.metrics["positives"],
            "calls": later.run.judge_calls,
            "input_tokens": later.run.input_tokens,
            "output_tokens": later.run.output_tokens,
            "cost_usd": later.run.cost_usd,
            "estimate_usd": later.estimate.usd,
            "first_estimate_usd": first.estimate.usd,
        }
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    labels = labels_from_ragtruth(args.data)
    started = time.perf_counter()
    runs = [await one_seed(args, labels, seed) for seed in range(1, args.seeds + 1)]
    drift = [r["drift"] for r in runs]
    null = [r["null"] for r in runs]
    calls = statistics.mean(d["calls"] for d in drift + null)
    usd = statistics.mean(d["cost_usd"] for d in drift + null)
    per_call_in = statistics.mean(d["input_tokens"] / d["calls"] for d in drift + null)
    per_call_out = statistics.mean(d["output_tokens"] / d["calls"] for d in drift + null)
    # A rubric's daily cost: traces/day × sampling rate × 1 judge call at the measured tokens.
    daily_calls = args.traces_per_day * args.rate
    daily_usd = daily_calls * (per_call_in * 0.15 + per_call_out * 0.60) / 1e6
    return {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": round(time.perf_counter() - started, 1),
        "drift_alerted": sum(d["alert"] == "opened" for d in drift),
        "null_alerted": sum(d["alert"] == "opened" for d in null),
        "seeds": len(runs),
        "ba_before_mean": round(statistics.mean(d["ba_before"] for d in drift + null), 4),
        "ba_after_drift_mean": round(statistics.mean(d["ba_after"] for d in drift), 4),
        "ba_after_null_mean": round(statistics.mean(d["ba_after"] for d in null), 4),
        "anchor_run": {
            "items": drift[0]["n"],
            "positives": drift[0]["positives"],
            "judge_calls": calls,
            "input_tokens_per_call": round(per_call_in, 1),
            "output_tokens_per_call": round(per_call_out, 1),
            "usd": round(usd, 5),
            "first_estimate_usd": round(statistics.mean(d["first_estimate_usd"] for d in drift), 5),
            "estimate_usd": round(statistics.mean(d["estimate_usd"] for d in drift), 5),
        },
        "rubric_daily": {"judge_calls": daily_calls, "usd": round(daily_usd, 4)},
        "missed_drift_seeds": [r["seed"] for r in runs if r["drift"]["alert"] != "opened"],
        "false_alarm_seeds": [r["seed"] for r in runs if r["null"]["alert"] == "opened"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--before", type=float, default=0.85)
    parser.add_argument("--after", type=float, default=0.70)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--max-items", type=int, default=200)
    parser.add_argument("--resample", action="store_true", help="a fresh sample per run")
    parser.add_argument("--reps", type=int, default=200, help="bootstrap replicates")
    parser.add_argument("--traces-per-day", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=0.1, help="rubric sampling rate")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
