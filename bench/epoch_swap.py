"""Does swapping the judge ever page as an application regression, and is a real drop
after the swap still caught?

    python -m bench.epoch_swap --seeds 30 [--rate-per-hour 100] [--check-every-min 60]

Per seed, a fresh SQLite store holds one rubric's eval records as the worker writes them:
an application whose answers are good with probability --good (0.85), judged by judge A
(epoch "A") for a week; then judge B takes over (epoch "B"). B is *equally good* — it gets
the latent verdict right with the same probability (--accuracy 0.85) — but reads on its own
scale (stricter: lower scores for the same verdict), which is what a provider's model update
or a rubric edit does. --drop-after-h hours after the swap the application really gets
worse (good with probability --bad, 0.60), judged by B. The regression check
(`evaluator.analytics.check_job.decide`, the cron body, default policy: 6 h window, 7 d
baseline, e-detector) runs every --check-every-min minutes from 2 h before the swap to
--tail-h hours after the drop. Counted per seed: alerts opened between the swap and the
drop (false: the application did not change), and whether and how soon the real drop
was alerted.

The control ("pooled") stores the very same scores with one epoch for both judges, as a
system without epochs would: its swap-to-drop alerts are what the epoch boundary prevents.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from evaluator.analytics.check_job import decide
from evaluator.config.rubrics import RubricSet, parse_rubric
from evaluator.config.settings import AlertsSettings
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store

RUBRIC = """
name = "faith"
version = "1"
scorer = "faithfulness"
method = "judge"
pass_threshold = 0.5
"""
LABELS = {"prompt_version": "v7", "model": "gpt-4o", "feature": "qa"}


@dataclass(frozen=True)
class Judge:
    """Right about the latent verdict with `accuracy`; a verdict reads as a score near
    `pass_mean` / `fail_mean` (two judges of equal accuracy may use different scales)."""

    epoch: str
    accuracy: float
    pass_mean: float
    fail_mean: float
    spread: float = 0.08

    def score(self, good: bool, rng: random.Random) -> float:
        says_good = good if rng.random() < self.accuracy else not good
        mean = self.pass_mean if says_good else self.fail_mean
        return min(1.0, max(0.0, rng.gauss(mean, self.spread)))


def stream(
    args: argparse.Namespace, seed: int, start: datetime, swap: datetime, drop: datetime,
    end: datetime,
) -> list[tuple[datetime, str, float]]:  # fmt: skip
    """(time, epoch, score) of every record, in time order (pure given the seed)."""
    rng = random.Random(seed)
    a = Judge("A", args.accuracy, 0.85, 0.20)
    b = Judge("B", args.accuracy, 0.85 - args.scale_shift, 0.20 - args.scale_shift / 2)
    out, at = [], start
    step = timedelta(hours=1) / args.rate_per_hour
    while at < end:
        judge = a if at < swap else b
        good = rng.random() < (args.good if at < drop else args.bad)
        out.append((at, judge.epoch, judge.score(good, rng)))
        at += step * rng.uniform(0.5, 1.5)
    return out


def run(
    records: list[tuple[datetime, str, float]], checks: list[datetime], pooled: bool
) -> list[tuple[datetime, str]]:
    """Store the records, run the cron's decision at each check time; (time, kind) opened."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'evals.db'}")
        rows = [
            EvalRecord(trace_id=f"t{i}", rubric="faith", rubric_version="1", scorer="faithfulness",
                       status="ok", score=s, passed=s >= 0.5, created_at=at,
                       epoch="A" if pooled else epoch, **LABELS)
            for i, (at, epoch, s) in enumerate(records)
        ]  # fmt: skip
        with Session(store.engine) as session:
            session.add_all(rows)
            session.commit()
        rubrics = RubricSet((parse_rubric(RUBRIC, source=Path(tmp) / "faith.toml"),), Path(tmp))
        opened: list[tuple[datetime, str]] = []
        settings = AlertsSettings()
        for now in checks:
            report, _events = decide(store, rubrics, settings, now)
            opened += [(now, alert.kind) for alert in report.opened]
        store.close()
    return opened


def one_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    swap = start + timedelta(days=args.before_days)
    drop = swap + timedelta(hours=args.drop_after_h)
    end = drop + timedelta(hours=args.tail_h)
    records = stream(args, seed, start, swap, drop, end)
    every = timedelta(minutes=args.check_every_min)
    checks, at = [], swap - timedelta(hours=2)
    while at <= end:
        checks.append(at)
        at += every
    out: dict[str, Any] = {"seed": seed, "records": len(records)}
    for scenario in ("epochs", "pooled"):
        opened = run(records, checks, pooled=scenario == "pooled")
        false = [(t, k) for t, k in opened if t < drop]
        caught = [t for t, _k in opened if t >= drop]
        out[scenario] = {
            "false_alerts": len(false),
            "false_kinds": sorted({k for _t, k in false}),
            "drop_caught": bool(caught),
            "delay_h": (caught[0] - drop) / timedelta(hours=1) if caught else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--rate-per-hour", type=float, default=100.0, help="scored traces/hour")
    parser.add_argument("--accuracy", type=float, default=0.85, help="both judges'")
    parser.add_argument("--scale-shift", type=float, default=0.12, help="judge B reads lower")
    parser.add_argument("--good", type=float, default=0.85, help="P(good answer) before")
    parser.add_argument("--bad", type=float, default=0.60, help="P(good answer) after the drop")
    parser.add_argument("--before-days", type=float, default=8.0)
    parser.add_argument("--drop-after-h", type=float, default=36.0)
    parser.add_argument("--tail-h", type=float, default=24.0)
    parser.add_argument("--check-every-min", type=int, default=60)
    args = parser.parse_args()
    started = time.perf_counter()
    runs = [one_seed(args, seed) for seed in range(1, args.seeds + 1)]
    summary: dict[str, Any] = {"config": vars(args), "seeds": len(runs)}
    for scenario in ("epochs", "pooled"):
        rows = [r[scenario] for r in runs]
        delays = [r["delay_h"] for r in rows if r["delay_h"] is not None]
        summary[scenario] = {
            "runs_with_false_alert": sum(r["false_alerts"] > 0 for r in rows),
            "false_alerts": sum(r["false_alerts"] for r in rows),
            "false_kinds": sorted({k for r in rows for k in r["false_kinds"]}),
            "drop_caught": sum(r["drop_caught"] for r in rows),
            "median_delay_h": statistics.median(delays) if delays else None,
            "max_delay_h": max(delays) if delays else None,
        }
    summary["records_per_seed"] = statistics.median(r["records"] for r in runs)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
