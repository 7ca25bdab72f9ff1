"""Simulation benchmark of the regression check on score streams built from RAGTruth QA.

Scores per answer (RAGTruth human labels, no judge involved):
  binary      1 if the answer has no labelled hallucinated span, else 0;
  continuous  sentence-level faithfulness: 1 − (sentences overlapping a labelled span /
              sentences), the shape of our faithfulness scorer's supported/total claims.
Streams resample answers of one generator model with replacement; the subtle drop mixes
gpt-4-0613 answers with hallucinated answers of the other models so the stream mean is
exactly 0.94 before and 0.87 after, on each score type.

Scenarios (delay = evaluations of the changed stream until the first alert; median, p90):
  version swap   a new prompt version / model is its own group, compared from its first
                 score with the replaced one (7 days × 200/h of baseline).
  in place       the same group degrades at an unknown time (silent provider change).
Detectors, all checked after every evaluation:
  fixed-window   compare_stats: last 6 h (all of the new version) vs the 7-day baseline,
                 Fisher exact (binary) / Welch t (continuous), min 10 samples, drop ≥ 0.05,
                 alpha 0.01.
  sequential     e-process from the swap (known start, alpha 0.01) / e-detector in place
                 (ARL ≥ 2e6 evaluations), same min samples and effect bound.
  naive          last hour's mean (≥ 10 samples) < 0.85 × baseline mean.
Stationary: 10 groups × 30 days × 200 evaluations/h/group of resampled gpt-4 answers, a
rolling 7-day baseline; fixed-window and naive run on a 5-minute cron with BH across the
10 groups; the e-detector sees every score and is rebased daily; alerts on a group within a
6 h cool-down count once. No-op swaps: a "new version" of the same model, first 24 h.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evalcore.intervals import GroupStats
from evaluator.analytics.regression import (
    RegressionPolicy,
    SequentialState,
    adjust_verdicts,
    advance,
    compare_stats,
    rebase,
    start_sequential,
)

DATA = Path("/work/shared/data/ragtruth_qa/ragtruth_qa.jsonl")
PER_HOUR = 200
WINDOW = 6 * PER_HOUR  # 6 h
BASELINE = 7 * 24 * PER_HOUR  # 7 days
TICK = PER_HOUR / 12  # 5-minute cron
COOL_DOWN = WINDOW
NAIVE_FACTOR = 0.85
POLICY = RegressionPolicy()
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
SCORES = ("binary", "continuous")
DETECTORS = ("fixed-window", "sequential", "naive")


def answer_scores(text: str, labels: list[dict[str, int]]) -> tuple[float, float]:
    spans = [(lab["start"], lab["end"]) for lab in labels]
    sents = [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]
    bad = sum(any(a < end and b > start for a, b in spans) for start, end in sents)
    return float(not spans), 1.0 - bad / max(len(sents), 1)


def load_pools(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """model → score type → per-answer scores; '_hallucinated' = flagged answers of others."""
    raw: dict[str, list[tuple[float, float]]] = {}
    for line in path.read_text().splitlines():
        for resp in json.loads(line)["responses"]:
            raw.setdefault(resp["model"], []).append(
                answer_scores(resp["response"], resp["labels"])
            )
    bad = [s for model, rows in raw.items() if model != "gpt-4-0613" for s in rows if s[0] == 0]
    raw["_hallucinated"] = bad
    return {
        m: {k: np.array([r[i] for r in rows]) for i, k in enumerate(SCORES)}
        for m, rows in raw.items()
    }


@dataclass(frozen=True)
class Source:
    """Answers drawn with replacement from pools with the given weights."""

    pools: tuple[np.ndarray, ...]
    weights: tuple[float, ...]

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(len(self.pools), size=n, p=self.weights)
        out = np.empty(n)
        for i, pool in enumerate(self.pools):
            mask = which == i
            out[mask] = rng.choice(pool, size=int(mask.sum()))
        return out

    @property
    def mean(self) -> float:
        return float(sum(w * p.mean() for w, p in zip(self.weights, self.pools, strict=True)))


def mixture(good: np.ndarray, bad: np.ndarray, target: float) -> Source:
    w = (good.mean() - target) / (good.mean() - bad.mean())
    return Source((good, bad), (1 - w, w))


def stats_of(x: np.ndarray) -> GroupStats:
    return GroupStats(len(x), float(x.sum()), float((x * x).sum())).with_passes()


def _windows(s: np.ndarray, ends: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, ...]:
    c1 = np.concatenate([[0.0], np.cumsum(s)])
    c2 = np.concatenate([[0.0], np.cumsum(s * s)])
    return length, c1[ends] - c1[ends - length], c2[ends] - c2[ends - length]


def first_alert(
    detector: str, base: GroupStats, hist: np.ndarray, new: np.ndarray, known_start: bool
) -> int | None:
    """Evaluations of `new` until the first alert (None = not within len(new))."""
    if detector == "sequential":
        state = start_sequential(base, POLICY, known_start=known_start)
        if not known_start:
            state = advance(state, hist, POLICY)
            if state.alarm_at is not None:  # a false alarm before the change: start over
                state = start_sequential(base, POLICY, known_start=False)
        offset = state.n
        for lo in range(0, len(new), 50):  # stop feeding once it fired
            state = advance(state, new[lo : lo + 50], POLICY)
            if state.alarm_at is not None:
                return state.alarm_at - offset
        return None
    s = new if known_start else np.concatenate([hist[-WINDOW:], new])
    pre = 0 if known_start else WINDOW
    steps = np.arange(1, len(new) + 1)
    span = WINDOW if detector == "fixed-window" else PER_HOUR
    length = np.minimum(steps + pre, span)
    n, tot, sq = _windows(s, steps + pre, length)
    means = tot / n
    ok = n >= POLICY.min_samples
    if detector == "naive":
        hits = np.flatnonzero(ok & (means < NAIVE_FACTOR * base.mean))
        return int(steps[hits[0]]) if len(hits) else None
    bound = min(POLICY.min_effect_mean, POLICY.min_effect_pass_rate) - 1e-9
    for i in np.flatnonzero(ok & (base.mean - means >= bound)):  # the effect gate, exactly
        cur = GroupStats(int(n[i]), float(tot[i]), float(sq[i])).with_passes()
        if compare_stats(base, cur, POLICY).regression:
            return int(steps[i])
    return None


def delay_runs(args: tuple[str, str, str, Source, Source, bool, int, int, int]) -> list[int | None]:
    name, score, detector, before, after, known_start, runs, cap, seed = args
    out = []
    for r in range(runs):
        rng = np.random.default_rng([seed, r, hash_name(name), SCORES.index(score)])
        base = stats_of(before.draw(rng, BASELINE))
        hist = before.draw(rng, int(rng.integers(WINDOW, 3 * WINDOW)))
        out.append(first_alert(detector, base, hist, after.draw(rng, cap), known_start))
    return out


def hash_name(name: str) -> int:
    return sum(ord(c) * 31**i for i, c in enumerate(name)) % 2**31  # stable across runs


def stationary(args: tuple[str, tuple[Source, ...], int, int]) -> dict[str, int]:
    """False alerts over `days` on stationary groups, one per source."""
    score, sources, days, seed = args
    rng = np.random.default_rng([seed, 99, SCORES.index(score)])
    total = BASELINE + days * 24 * PER_HOUR
    streams = [source.draw(rng, total) for source in sources]
    groups = len(streams)
    alerts = {d: 0 for d in DETECTORS}
    c1 = [np.concatenate([[0.0], np.cumsum(s)]) for s in streams]
    c2 = [np.concatenate([[0.0], np.cumsum(s * s)]) for s in streams]

    def stats(g: int, lo: int, hi: int) -> GroupStats:
        return GroupStats(hi - lo, c1[g][hi] - c1[g][lo], c2[g][hi] - c2[g][lo]).with_passes()

    # Cron detectors: every 5 minutes, BH across the groups for the fixed window.
    last = {d: [-(10**9)] * groups for d in ("fixed-window", "naive")}
    ticks = np.arange(BASELINE + WINDOW, total + 1, TICK).astype(int)
    for t in ticks:
        verdicts = {
            g: compare_stats(
                stats(g, t - WINDOW - BASELINE, t - WINDOW), stats(g, t - WINDOW, t), POLICY
            )
            for g in range(groups)
        }
        for g, v in adjust_verdicts(verdicts, POLICY).items():
            naive = (
                stats(g, t - PER_HOUR, t).mean
                < NAIVE_FACTOR * stats(g, t - PER_HOUR - BASELINE, t - PER_HOUR).mean
            )
            for det, fired in (("fixed-window", v.regression), ("naive", naive)):
                if fired and t - last[det][g] >= COOL_DOWN:
                    alerts[det] += 1
                    last[det][g] = t
    # e-detector: every score, rebased daily, restarted after an alert.
    for g in range(groups):
        state: SequentialState = start_sequential(stats(g, 0, BASELINE), POLICY, known_start=False)
        pos, last_alert = BASELINE, -(10**9)
        while pos < total:
            if (pos - BASELINE) % (24 * PER_HOUR) == 0 and pos > BASELINE:
                state = rebase(state, stats(g, pos - BASELINE, pos), POLICY)
            chunk = streams[g][pos : min(pos + PER_HOUR, total)]
            new = advance(state, chunk, POLICY)
            if new.alarm_at is None:
                state, pos = new, pos + len(chunk)
                continue
            at = pos + new.alarm_at - state.n  # absolute index after the alarming score
            if at - last_alert >= COOL_DOWN:
                alerts["sequential"] += 1
                last_alert = at
            state = start_sequential(stats(g, at - BASELINE, at), POLICY, known_start=False)
            state = advance(state, streams[g][at : pos + len(chunk)], POLICY)  # rest of hour
            pos += len(chunk)  # (a second alarm inside the same hour is ignored: cool-down)
    return alerts


def fmt(delays: list[int | None], cap: int) -> str:
    got = sorted(d if d is not None else 10**9 for d in delays)
    med, p90 = np.percentile(got, 50, method="lower"), np.percentile(got, 90, method="lower")

    def one(v: float) -> str:
        return f">{cap}" if v >= 10**9 else str(int(v))

    missed = sum(d is None for d in delays)
    return f"{one(med):>6} {one(p90):>6} {missed:>4}"


def main() -> None:
    global POLICY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="seeded runs per delay cell")
    parser.add_argument("--days", type=int, default=30, help="stationary days per replicate")
    parser.add_argument("--replicates", type=int, default=3, help="stationary replicates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--arl",
        type=float,
        default=POLICY.arl,
        help="e-detector's evaluations per false alert, at least (alerts.policy.arl); "
        f"shipped {POLICY.arl:g}",
    )
    args = parser.parse_args()
    POLICY = RegressionPolicy(arl=args.arl)  # read by the forked pool workers
    print("$ /work/venv/bin/python bench/regression_sim.py " + " ".join(sys.argv[1:]))
    started = time.perf_counter()
    pools = load_pools(DATA)
    for model in ("gpt-4-0613", "mistral-7B-instruct", "llama-2-7b-chat", "_hallucinated"):
        print(
            f"  pool {model:<20} n={len(pools[model]['binary']):>3}  "
            + "  ".join(f"{k} mean={pools[model][k].mean():.3f}" for k in SCORES)
        )
    jobs: list[tuple[str, str, str, Source, Source, bool, int, int, int]] = []
    rows: list[tuple[str, str, str, int]] = []
    for score in SCORES:
        gpt4 = Source((pools["gpt-4-0613"][score],), (1.0,))
        scenarios: list[tuple[str, Source, Source, bool, int]] = [
            (
                "swap gpt-4 -> llama-2-7b (new version)",
                gpt4,
                Source((pools["llama-2-7b-chat"][score],), (1.0,)),
                True,
                400,
            ),
            (
                "swap gpt-4 -> mistral-7B (new version)",
                gpt4,
                Source((pools["mistral-7B-instruct"][score],), (1.0,)),
                True,
                400,
            ),
            ("drop 0.94 -> 0.87 (new version)", *_subtle(pools, score), True, 3000),
            (
                "swap gpt-4 -> llama-2-7b (in place)",
                gpt4,
                Source((pools["llama-2-7b-chat"][score],), (1.0,)),
                False,
                1200,
            ),
            ("drop 0.94 -> 0.87 (in place)", *_subtle(pools, score), False, 3000),
            ("no-op swap gpt-4 -> gpt-4, 24 h", gpt4, gpt4, True, 24 * PER_HOUR),
        ]
        for name, before, after, known, cap in scenarios:
            runs = args.runs // 2 if name.startswith("no-op") else args.runs
            for det in DETECTORS:
                jobs.append((name, score, det, before, after, known, runs, cap, args.seed))
                rows.append((name, score, det, cap))
    with ProcessPoolExecutor(args.workers) as pool:
        delays = list(pool.map(delay_runs, jobs))
        station = list(pool.map(stationary, [
            (score, groups, args.days, args.seed * 1000 + 100 * k + rep)
            for score in SCORES
            for k, (_, groups) in enumerate(_stationary_sets(pools, score))
            for rep in range(args.replicates)
        ]))  # fmt: skip
    print(
        f"\nDetection delay, evaluations of the changed stream ({args.runs} seeded runs; "
        "median, p90, runs not detected within the cap):"
    )
    print(f"{'scenario':<40} {'score':<10} {'detector':<13} {'median':>6} {'p90':>6} {'miss':>4}")
    for (name, score, det, cap), d in zip(rows, delays, strict=True):
        if name.startswith("no-op"):
            continue
        print(f"{name:<40} {score:<10} {det:<13} {fmt(d, cap)}")
    print(
        f"\nFalse alerts on stationary streams ({args.replicates} × {args.days} days, "
        f"10 groups, {PER_HOUR} evals/h/group), per 30 days (all 10 groups together):"
    )
    results = iter(station)
    for score in SCORES:
        for name, _ in _stationary_sets(pools, score):
            res = [next(results) for _ in range(args.replicates)]
            per30 = {
                d: sum(r[d] for r in res) * 30 / (args.days * args.replicates) for d in DETECTORS
            }
            print(
                f"  {name:<28} {score:<10} " + "  ".join(f"{d} {per30[d]:.2f}" for d in DETECTORS)
            )
    print("\nFalse alerts on no-op version swaps (same model), share of swaps alerting in 24 h:")
    for (name, score, det, _), d in zip(rows, delays, strict=True):
        if name.startswith("no-op"):
            print(f"  {score:<10} {det:<13} {sum(x is not None for x in d)}/{len(d)}")
    print(f"\n(wall time {time.perf_counter() - started:.0f} s)")


def _stationary_sets(
    pools: dict[str, dict[str, np.ndarray]], score: str
) -> list[tuple[str, tuple[Source, ...]]]:
    one = {m: Source((p[score],), (1.0,)) for m, p in pools.items() if not m.startswith("_")}
    mixed = [one[m] for m in sorted(one)] * 2  # six models, then four again: 10 groups
    return [("10 x gpt-4-0613", (one["gpt-4-0613"],) * 10),
            ("10 groups over all 6 models", tuple(mixed[:10]))]  # fmt: skip


def _subtle(pools: dict[str, dict[str, np.ndarray]], score: str) -> tuple[Source, Source]:
    good, bad = pools["gpt-4-0613"][score], pools["_hallucinated"][score]
    return mixture(good, bad, 0.94), mixture(good, bad, 0.87)


if __name__ == "__main__":
    main()
