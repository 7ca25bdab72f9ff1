"""The regression check fed LOCAL faithfulness scores: false alerts on swaps whose labelled
hallucination rate barely changes, next to the detection delay on real swaps.

    python -m bench.regression_local --runs 100

Streams resample one generator's answers with replacement (bench/regression_sim.py's
`delay_runs`, version-swap mode: the new version is compared from its first score with a
7-day baseline of the old one, fixed-window Welch/Fisher test and the e-process, 24 h cap for
the "same rate" swaps). Scores per answer, from the shipped method (2.1):

  local mean     the local score (1 − calibrated P(hallucinated)); RAGTruth values are
                 out-of-sample (5-fold CV by document), FRANK values use the shipped constants
                 (the weights never saw FRANK; FRANK valid fitted only the summary calibration);
  local pass     1 if the local score passes the shipped mark (0.5), else 0;
  no hard        1 unless a sentence asserts a value or name the contexts contradict or lack;
  labels         1 if the human labels find no hallucination (the reference: what an ideal
                 scorer would show).

"Same-rate" swaps (labelled rate change ≤ 4 points, below the policy's 0.05 effect bound):
RAGTruth gpt-4-0613 → gpt-3.5-turbo-0613 (3.6 % → 6.0 %), FRANK CNN/DM pgn → bert_sum
(24.4 % → 28.4 %), FRANK XSum TConvS2S → TranS2S (93.6 % → 94.0 %). Real swaps: RAGTruth
gpt-4-0613 → llama-2-7b-chat (3.6 % → 60.4 %), FRANK CNN/DM bart → s2s (18.4 % → 75.6 %).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from bench import regression_sim as rs
from bench.local_data import Item, load_frank, load_ragtruth, probabilities
from bench.local_faithfulness import collect, names_for, out_of_sample, shipped_fit
from judges.scorers import local as lg

STATS = ("local mean", "local pass", "no hard", "labels")
# Old generator → new one. "Rate-matched": the new generator's answers are drawn so that its
# labelled hallucination rate equals the old one's (clean and hallucinated answers resampled
# with the old rate), so any alert is the generator's *style*, not its faithfulness.
SWAPS = (
    ("RAGTruth gpt-4 -> gpt-3.5", "ragtruth", "gpt-4-0613", "gpt-3.5-turbo-0613"),
    ("RAGTruth gpt-4 -> llama-2-7b", "ragtruth", "gpt-4-0613", "llama-2-7b-chat"),
    ("RAGTruth gpt-4 -> mistral-7B", "ragtruth", "gpt-4-0613", "mistral-7B-instruct"),
    ("CNN/DM pgn -> bert_sum", "cnndm", "pgn", "bert_sum"),
    ("CNN/DM bart -> s2s", "cnndm", "bart", "s2s"),
    ("XSum TConvS2S -> TranS2S", "xsum", "TConvS2S", "TranS2S"),
    ("XSum BERTS2S -> PtGen", "xsum", "BERTS2S", "PtGen"),
)
REAL = (SWAPS[1], SWAPS[4])
# Judge confirmation of a local alert (the proposed advisory class): this many answers of each
# version are judged (here: their human labels stand in for an ideal judge).
CONFIRM_N = 60
Pools = dict[tuple[str, str], dict[str, np.ndarray]]


def score_pools(items: list[Item]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """(data set, generator) → statistic → per-answer values."""
    names = names_for(None)
    p_of = out_of_sample(items, names)
    frank = [it for it in items if it.dataset != "ragtruth"]
    weights, table = shipped_fit(items, names)
    p_of |= dict(zip(map(id, frank), probabilities(frank, weights, table), strict=True))
    pools: dict[tuple[str, str], dict[str, list[float]]] = {}
    for it in items:
        value = 1.0 - p_of[id(it)]
        hard = any(ev.hard_evidence for ev in it.evidence)
        row = (value, float(value >= lg.DEFAULT_THRESHOLD), float(not hard),
               float(not it.hallucinated))  # fmt: skip
        cell = pools.setdefault((it.dataset, it.model), {s: [] for s in STATS})
        for stat, v in zip(STATS, row, strict=True):
            cell[stat].append(v)
    return {k: {s: np.array(v) for s, v in cell.items()} for k, cell in pools.items()}


def rate_matched(pools: Pools, old: tuple[str, str], new: tuple[str, str], stat: str) -> rs.Source:
    """The new generator's `stat` values, clean/hallucinated mixed at the old labelled rate."""
    clean = pools[new]["labels"] == 1.0
    rate = 1.0 - float(pools[old]["labels"].mean())
    values = pools[new][stat]
    return rs.Source((values[clean], values[~clean]), (1.0 - rate, rate))


def confirmed(args: tuple[list[int | None], np.ndarray, np.ndarray, int]) -> int:
    """How many of the runs' local alerts a judged sample of CONFIRM_N per version confirms
    (Fisher exact, the policy's alpha and effect bound)."""
    delays, before, after, seed = args
    rng = np.random.default_rng([seed, 4242])
    hits = 0
    for delay in delays:
        if delay is None:
            continue
        base = rs.stats_of(rng.choice(before, CONFIRM_N))
        cur = rs.stats_of(rng.choice(after, CONFIRM_N))
        verdict = rs.compare_stats(base, cur, rs.POLICY)
        hits += bool(verdict.regression)
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = load_ragtruth() + load_frank()
    collect(items, None)
    pools = score_pools(items)
    jobs, rows = [], []
    for kind, swaps, cap in (("matched", SWAPS, 24 * rs.PER_HOUR), ("real", REAL, 400)):
        for name, ds, old, new in swaps:
            for stat in STATS:
                before = rs.Source((pools[(ds, old)][stat],), (1.0,))
                after = (rate_matched(pools, (ds, old), (ds, new), stat) if kind == "matched"
                         else rs.Source((pools[(ds, new)][stat],), (1.0,)))  # fmt: skip
                score = "binary" if stat != "local mean" else "continuous"
                for det in ("fixed-window", "sequential"):
                    jobs.append((name, score, det, before, after, True, args.runs, cap, args.seed))
                    rows.append((kind, name, stat, det, cap, before.mean, after.mean, ds, old, new))
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(rs.delay_runs, jobs))
    confirm_jobs = []
    for (kind, _, _, _, _, _, _, ds, old, new), delays in zip(rows, results, strict=True):
        after = pools[(ds, new)]["labels"]
        if kind == "matched":  # the judged sample of the new version has the old rate too
            rate = 1.0 - float(pools[(ds, old)]["labels"].mean())
            after = np.where(np.random.default_rng(1).random(len(after) * 4) < rate, 0.0, 1.0)
        confirm_jobs.append((delays, pools[(ds, old)]["labels"], after, args.seed))
    confirms = list(map(confirmed, confirm_jobs))
    print(f"## Regression check on local scores ({args.runs} seeded runs per cell)\n")
    print("Rate-matched swaps: alerts in 24 h are false (labelled rate unchanged). Real swaps:")
    print(f"delay in evaluations. 'confirmed' = also confirmed by judging {CONFIRM_N} answers")
    print("of each version (labels as an ideal judge).\n")
    print("| swap | kind | statistic | detector | mean before → after | alerts (confirmed) "
          "| delay median / p90 (missed) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row, delays, conf in zip(rows, results, confirms, strict=True):
        kind, name, stat, det, cap, mb, ma = row[:7]
        fired = sum(d is not None for d in delays)
        alerts = f"{fired / len(delays):.0%} ({conf / len(delays):.0%})"
        delay = rs.fmt(delays, cap).split()
        shown = f"{delay[0]} / {delay[1]} ({delay[2]})" if kind == "real" else "—"
        print(f"| {name} | {kind} | {stat} | {det} | {mb:.3f} → {ma:.3f} | {alerts} | {shown} |")


if __name__ == "__main__":
    main()
