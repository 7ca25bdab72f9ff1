"""Prediction-powered trends (issue 30): at equal judge calls, how wide and how well calibrated
is a bucket's mean under four designs, on the shared labelled data and on synthetic streams?

    python -m bench.ppi                       # 1,000 seeds per row, both budgets
    python -m bench.ppi --seeds 200 --tasks "RAGTruth QA"

One bucket = N traces (default 2,000) arriving over 60 minutes with uneven minutes (log-normal
intensities, σ 0.5), drawn with replacement from a task's answers (so the truth — the task's
pass rate, judge verdict = human label "not hallucinated" — is exact). Cheap score = the shipped
local scorer (`judges.scorers.local.score_faithfulness_local`, lexical, as the cascade runs
it), cached in bench/results/ppi_local_scores.json with each answer's CPU time (recomputed
when the file is missing or `--rescore`). Arms, at the judge calls the budget arm realised in
that seed:

- (a) judge-only uniform: every trace judged with p = r; today's Hájek interval;
- (b) today's budgeted allocation: a cap of `cap` judge calls a minute, the shipped
  `base_probability` (rate 1, the previous minute's arrivals, floor 0.01) and `window_quotas`
  (random admission when the window closes, realised p = p_draw × q/n); today's Hájek interval
  with those p;
- (c) PPI++ uniform: (a)'s draw, the cheap score on all N; `evalcore.ppi` (what a trend shows:
  PPI++ from judged n 30);
- (d) PPI++ uncertainty-driven: π ∝ the cheap score's uncertainty √(g(1 − g)), g = P(pass |
  score decile) from a pilot of 300 labels (earlier traffic, not charged here), floor
  max(0.1 × r, audit share 0.1 × r), mean r (`evalcore.ppi.uncertainty_rates`); PPI++ shown
  from judged n 100 (unequal weights), else the judge-only interval;
- (e) PPI++ through the worker's shipped routing (`evaluator.worker.two_stage.JudgePlan`, the
  function a cascade's certified-pass region runs): π = clip(c · u(f), floor, 1) on the raw
  local score, u(f) = √(f(1 − f)) + 0.1, c refitted on the last 256 scores, mean r
  (options.judge_rate), floor max(0.1 × r, audit share 0.1 × r), no pilot; drawn by hash
  point as in the worker (here a uniform draw per trace).

Per arm: coverage of the truth by the shown 95 % interval, mean width, the empirical variance
of the point estimate across seeds and ESS gain = Var(a) / Var(arm). Synthetic streams (cheap
score Beta(0.5, 0.5), pass ~ Bernoulli(a + b·f)): useful, useless, anti-correlated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from evalcore.ppi import hajek, ppi_mean, uncertainty_rates
from evaluator.budget.allocation import base_probability, window_quotas
from evaluator.worker.two_stage import JudgePlan

CACHE = Path(__file__).parent / "results" / "ppi_local_scores.json"
TASKS = ("RAGTruth QA", "FRANK CNN/DM test", "FRANK XSum test")
MINUTES = 60
PILOT = 300
AUDIT_SHARE = 0.1  # the cascade's audit_rate: the calibration draw's share of the draws
SYNTHETIC = {"useful": (0.05, 0.9), "useless": (0.7, 0.0), "anti-correlated": (0.95, -0.9)}


def local_scores(rescore: bool) -> dict[str, dict[str, list[float]]]:
    """Per task: the local score, pass (1 = not hallucinated) and CPU ms of every answer the
    scorer scores (the others go to the judge in the worker: left out here)."""
    if CACHE.exists() and not rescore:
        return json.loads(CACHE.read_text())
    from bench.local_data import load_frank, load_ragtruth
    from judges.scorers import local as lg
    from judges.types import Status

    items = load_ragtruth() + load_frank()
    pick = {
        "RAGTruth QA": lambda it: it.dataset == "ragtruth",
        "FRANK CNN/DM test": lambda it: it.dataset == "cnndm" and it.split == "test",
        "FRANK XSum test": lambda it: it.dataset == "xsum" and it.split == "test",
    }
    out: dict[str, dict[str, list[float]]] = {}
    for task in TASKS:
        rows: dict[str, list[float]] = {"score": [], "passed": [], "cpu_ms": []}
        for it in filter(pick[task], items):
            t0 = time.thread_time_ns()
            s = lg.score_faithfulness_local(it.case)
            ms = (time.thread_time_ns() - t0) / 1e6
            if s.status is not Status.OK or s.value is None:
                continue
            rows["score"].append(float(s.value))
            rows["passed"].append(0.0 if it.hallucinated else 1.0)
            rows["cpu_ms"].append(ms)
        out[task] = rows
    CACHE.write_text(json.dumps(out))
    return out


def budget_arm(minute: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(b): per minute, the shipped base rate and window quota; returns (judged, realised p)."""
    judged = np.zeros(minute.size, bool)
    p = np.ones(minute.size)
    counts = np.bincount(minute, minlength=MINUTES)
    for m in range(MINUTES):
        here = np.flatnonzero(minute == m)
        prev = int(counts[m - 1]) if m else 0
        p_draw = base_probability(1.0, room=cap, arrivals=prev, reserved=0.0, floor=0.01)
        drawn = here[rng.random(here.size) < p_draw]
        if not drawn.size:
            continue
        q = window_quotas({"r": {"s": int(drawn.size)}}, {"r": cap}, None, float(rng.random()))
        quota = q["r"]["s"]
        take = rng.permutation(drawn)[: quota.admit]
        judged[take] = True
        p[take] = p_draw * quota.probability
    return judged, p


def uncertainty(f: np.ndarray, pilot_f: np.ndarray, pilot_y: np.ndarray) -> np.ndarray:
    """√(g(1 − g)), g = the pilot's pass rate in the score's decile (Laplace-smoothed)."""
    edges = np.unique(np.quantile(pilot_f, np.linspace(0, 1, 11)[1:-1]))
    pb, fb = np.searchsorted(edges, pilot_f), np.searchsorted(edges, f)
    k = edges.size + 1
    g = (np.bincount(pb, pilot_y, k) + 1.0) / (np.bincount(pb, minlength=k) + 2.0)
    return np.sqrt(g[fb] * (1 - g[fb]))


def one_seed(f_all, y_all, n_traces: int, cap: int, rng: np.random.Generator,
             rng_e: np.random.Generator) -> dict:  # fmt: skip
    idx = rng.integers(0, f_all.size, n_traces)
    f, y = f_all[idx], y_all[idx]
    intensity = np.exp(rng.normal(0.0, 0.5, MINUTES))
    minute = np.sort(rng.choice(MINUTES, n_traces, p=intensity / intensity.sum()))
    out = {}
    jb, pb = budget_arm(minute, cap, rng)
    out["b"] = hajek(y[jb], pb[jb])
    r = jb.sum() / n_traces
    ja = rng.random(n_traces) < r
    pa = np.full(n_traces, r)
    res = ppi_mean(np.where(ja, y, np.nan), ja, f, pa)
    out["a"], out["c"] = res.judge_only, res.shown()
    pilot = rng.integers(0, f_all.size, PILOT)
    floor = max(0.1 * r, AUDIT_SHARE * r)
    pd = uncertainty_rates(uncertainty(f, f_all[pilot], y_all[pilot]) + 1e-3, r, floor)
    jd = rng.random(n_traces) < pd
    out["d"] = ppi_mean(np.where(jd, y, np.nan), jd, f, pd).shown()
    plan = JudgePlan(target=r, audit_rate=AUDIT_SHARE * r)
    points = rng_e.random(n_traces)  # its own stream: (a)-(d) draw what they drew before (e)
    drawn = [plan.sample(float(x), float(u)) for x, u in zip(f, points, strict=True)]
    pe = np.array([p for p, _ in drawn])
    je = np.array([j for _, j in drawn])
    out["e"] = ppi_mean(np.where(je, y, np.nan), je, f, pe).shown()
    out["calls"] = {"a": int(ja.sum()), "b": int(jb.sum()), "c": int(ja.sum()),
                    "d": int(jd.sum()), "e": int(je.sum())}  # fmt: skip
    return out


def run_rows(name, f_all, y_all, truth, args, seed) -> list[str]:
    rows = []
    for cap in args.caps:
        rng, rng_e = np.random.default_rng([seed, cap]), np.random.default_rng([seed, cap, 5])
        got = [one_seed(f_all, y_all, args.traces, cap, rng, rng_e) for _ in range(args.seeds)]
        var_a = np.var([g["a"].mean for g in got])
        for arm, label in (("a", "(a) judge-only uniform"), ("b", "(b) budgeted (today)"),
                           ("c", "(c) PPI++ uniform"), ("d", "(d) PPI++ uncertainty"),
                           ("e", "(e) PPI++ shipped routing")):  # fmt: skip
            est = [g[arm] for g in got]
            means = np.array([e.mean for e in est])
            cover = np.mean([e.ci_low <= truth <= e.ci_high for e in est])
            width = np.mean([e.ci_high - e.ci_low for e in est])
            ppi_share = np.mean([e.estimator == "ppi++" for e in est])
            calls = statistics.median(g["calls"][arm] for g in got)
            rows.append(
                f"| {name} | {cap}/min | {label} | {calls:.0f} | {cover:.1%} | {width:.4f} | "
                f"{var_a / np.var(means):.2f} | {np.mean(means) - truth:+.4f} | {ppi_share:.0%} |"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--traces", type=int, default=2000, help="traces per bucket")
    ap.add_argument("--caps", type=int, nargs="+", default=[1, 4], help="judge calls a minute")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--rescore", action="store_true", help="recompute the cached local scores")
    args = ap.parse_args()
    started = time.perf_counter()
    data = local_scores(args.rescore)
    print("| stream | cap | arm | judge calls (median) | coverage | mean width | ESS gain "
          "Var(a)/Var | bias | PPI++ shown |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for i, task in enumerate(args.tasks):
        f, y = np.array(data[task]["score"]), np.array(data[task]["passed"])
        for row in run_rows(task, f, y, float(y.mean()), args, 30 + i):
            print(row, flush=True)
    if not args.no_synthetic:
        rng = np.random.default_rng(300)
        f = rng.beta(0.5, 0.5, 20_000)
        for j, (name, (a, b)) in enumerate(SYNTHETIC.items()):
            p = a + b * f
            g = rng.beta(0.5, 0.5, f.size) if b == 0 else f
            y = (rng.random(f.size) < p).astype(float)
            for row in run_rows(f"synthetic {name}", g, y, float(y.mean()), args, 60 + j):
                print(row, flush=True)
    print()
    for task in args.tasks:
        ms = data[task]["cpu_ms"]
        print(f"cheap stage CPU per trace, {task}: median {statistics.median(ms):.1f} ms, "
              f"p90 {np.percentile(ms, 90):.1f} ms ({len(ms)} answers)")  # fmt: skip
    print(f"wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
