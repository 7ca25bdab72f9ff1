"""What the certified cascade costs per trace against judging everything (issue 28, 4b), and
how many traces it passes locally after a shift it was not told about.

    python -m bench.cascade_cost                      # 50 repeats, 50,000 traces each
    python -m bench.cascade_cost --repeats 20 --traces 20000

The pipeline simulated is the shipped rule in `evalcore.certification`: cold start = the judge
on every sampled trace; a calibration draw of rate r (`audit_rate`) judges a trace whatever its
cheap score, and only those draws are labels; `certify_at_checkpoints` re-certifies at
k_j = 100·2^j labels (level delta/2^(j+1), delta over the schedule), the latest checkpoint
in force; under a certification a trace scoring ≥ t is passed without the judge unless drawn;
the drawn traces the cheap stage would pass feed `Monitor.for_certification` (level delta),
which withdraws the certification (judge everything) until the next checkpoint.
Judge-everything makes 1,000 calls per 1,000 sampled traces and misses nothing the judge
would fail; the cascade is held to m ≤ alpha at 1 − delta, as certified.

Traffic per stratum (never pooled; as bench/cascade_cert.py): each trace is a uniform document
then a uniform answer of it, with replacement, each trace its own cluster (a fresh session),
drawn independently with probability r. Judge = gold with 0/10/20 % of verdicts flipped, 5×
likelier near the gold-optimal threshold, fixed per answer within a repeat.

Reported per (stratum, flip share, r): judge calls per 1,000 traces in windows of the run
(medians over repeats); break-even = traces until a certification that passes traffic is
first in force (from then on it saves; it never costs more calls than judging everything,
as the draw is a subset of what that judges); steady-state saving = 1 − calls/1,000 over the
last window; realised miss rates over the whole run, pooled over repeats: the share of the
judge's fails passed locally and of gold fails passed locally; P(fail | passed locally),
gold; repeats in which every certification in force had population m ≤ alpha (judge, gold).

Shift: traffic of stratum A for `--traces` traces, then stratum B under the same key (judge =
gold, r = 0.1): traces of B passed locally before no certification is in force any more
(withdrawn by the monitor or by a checkpoint that certifies nothing), how many of them are
hallucinated, and in how many repeats that happened within `--traces` traces of B.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass

import numpy as np

from bench.cascade_cert import Stratum, judge_verdicts, label_stream, load_strata, oracle_threshold
from evalcore.recertification import Monitor, certify_checkpoints, first_withdrawal

RATES = (0.05, 0.1, 0.2)
FLIPS = (0.0, 0.1, 0.2)
WINDOWS = (0, 1_000, 2_000, 5_000, 10_000, 20_000, 35_000, 50_000)


@dataclass
class Run:
    local: np.ndarray  # per trace: passed without the judge
    threshold: np.ndarray  # per trace: the threshold in force (inf: none)
    certs: list[tuple[int, float]]  # (first trace in force, threshold) of each certification
    monitored: int  # certifications a monitor watched
    withdrawals: list[tuple[int, float]]  # (trace index, threshold) where a monitor withdrew


def _withdrawal(stream: np.ndarray, positions: np.ndarray, ceiling: float,
                delta: float) -> int | None:  # fmt: skip
    at = first_withdrawal(stream, ceiling, delta)
    return None if at is None else int(positions[at - 1]) + 1


def simulate(scores: np.ndarray, judge: np.ndarray, draw: np.ndarray, alpha: float,
             delta: float, monitor: str = "passes") -> Run:  # fmt: skip
    """The pipeline over one stream (module docstring); labels = the drawn traces. `monitor`:
    "passes" (`Monitor.for_certification`: drawn traces it would pass, fail rate against the
    ceiling) or "misses" (`Monitor.for_misses`: drawn traces the judge fails, miss rate
    against alpha)."""
    labelled = np.flatnonzero(draw)
    runs = certify_checkpoints(scores[labelled], judge[labelled], alpha=alpha, delta=delta)
    starts = [int(labelled[c.labels - 1]) + 1 for c in runs] + [scores.size]
    threshold = np.full(scores.size, np.inf)
    certs, withdrawals, monitored = [], [], 0
    for c, start, end in zip(runs, starts, starts[1:], strict=False):
        if c.threshold is None or start >= end:
            continue
        t, seg = c.threshold, np.arange(start, end)
        stop = None
        if monitor == "misses":
            monitored += 1
            failing = seg[draw[seg] & judge[seg]]
            mon = Monitor.for_misses(c, delta)
            stop = _withdrawal(scores[failing] >= t, failing, mon.ceiling, delta)
        elif c.decided_share > 0:
            monitored += 1
            audited = seg[draw[seg] & (scores[seg] >= t)]
            mon = Monitor.for_certification(c, c.failing / c.labels)
            stop = _withdrawal(judge[audited], audited, mon.ceiling, delta)
        if stop is not None:
            end = stop
            withdrawals.append((stop, t))
        threshold[start:end] = t
        certs.append((start, t))
    local = (scores >= threshold) & ~draw
    return Run(local, threshold, certs, monitored, withdrawals)


def cost_rows(st: Stratum, flip: float, r: float, args: argparse.Namespace, seed: int) -> str:
    rng = np.random.default_rng(seed)
    a, d, n = args.alpha, args.delta, args.traces
    centre = oracle_threshold(st, a)
    windows = [w for w in WINDOWS if w <= n] + ([n] if n not in WINDOWS else [])
    per_window, breakeven, total_saving = [], [], []
    counts = np.zeros(5)  # judge fails, of them local; gold fails, of them local; all local
    ok_judge = ok_gold = 0
    # Per monitor: withdrawals of certifications whose m (judge) ≤ alpha (false), of the
    # others (due), and certifications watched.
    stops = {"passes": [0, 0, 0], "misses": [0, 0, 0]}
    for _ in range(args.repeats):
        judge = judge_verdicts(st, flip, centre, rng)
        idx = label_stream(st, n, rng)
        draw = rng.random(n) < r
        run = simulate(st.scores[idx], judge[idx], draw, a, d)
        other = simulate(st.scores[idx], judge[idx], draw, a, d, monitor="misses")
        for kind, sim in (("passes", run), ("misses", other)):
            due = sum(st.miss(t, judge) > a for _, t in sim.withdrawals)
            stops[kind][0] += len(sim.withdrawals) - due
            stops[kind][1] += due
            stops[kind][2] += sim.monitored
        calls = ~run.local
        per_window.append([calls[lo:hi].mean() * 1000 for lo, hi in itertools.pairwise(windows)])
        deciding = [s for s, t in run.certs if st.decided(t) > 0]
        breakeven.append(deciding[0] if deciding else np.inf)
        total_saving.append(run.local.mean())
        jf, gf = judge[idx], st.gold_fail[idx]
        counts += [jf.sum(), (jf & run.local).sum(), gf.sum(), (gf & run.local).sum(),
                   run.local.sum()]  # fmt: skip
        ok_judge += all(st.miss(t, judge) <= a for _, t in run.certs)
        ok_gold += all(st.miss(t, st.gold_fail) <= a for _, t in run.certs)
    w = np.median(np.array(per_window), axis=0)
    be = np.median(breakeven)
    be_txt = "never" if not np.isfinite(be) else f"{be:,.0f}"
    steady = 1 - w[-1] / 1000
    return (
        f"| {st.name} | {flip:.0%} | {r:.2f} | " + " | ".join(f"{x:.0f}" for x in w)
        + f" | {be_txt} | {np.mean(total_saving):.1%} | {steady:.1%} "
        f"| {counts[1] / counts[0]:.3f} | {counts[3] / counts[2]:.3f} "
        f"| {counts[3] / max(counts[4], 1):.3f} | {ok_judge}/{args.repeats} "
        f"| {ok_gold}/{args.repeats} | {'/'.join(map(str, stops['passes']))}; "
        f"{'/'.join(map(str, stops['misses']))} |"
    )  # fmt: skip


def shift_row(pre: Stratum, post: Stratum, args: argparse.Namespace, seed: int) -> str:
    rng = np.random.default_rng(seed)
    n, r = args.traces, 0.1
    cells = []
    streams = []
    for _ in range(args.repeats):
        i_pre, i_post = label_stream(pre, n, rng), label_stream(post, n, rng)
        scores = np.concatenate([pre.scores[i_pre], post.scores[i_post]])
        judge = np.concatenate([pre.gold_fail[i_pre], post.gold_fail[i_post]])
        streams.append((scores, judge, rng.random(2 * n) < r))
    for monitor in ("passes", "misses"):
        passed, bad, never, delays, by_monitor = [], [], 0, [], 0
        for scores, judge, draw in streams:
            run = simulate(scores, judge, draw, args.alpha, args.delta, monitor)
            after = np.arange(n, 2 * n)
            off = after[~np.isfinite(run.threshold[after])]
            end = int(off[0]) if off.size else 2 * n
            never += not off.size
            if off.size:
                delays.append(end - n)
                by_monitor += end in [at for at, _ in run.withdrawals]
            window = run.local[n:end]
            passed.append(int(window.sum()))
            bad.append(int((window & judge[n:end]).sum()))
        delay_txt = f"{np.median(delays):,.0f}" if delays else "–"
        cells.append(f"{np.median(passed):,.0f} (max {max(passed):,}) | {np.median(bad):,.0f} "
                     f"(max {max(bad):,}) | {delay_txt} | {args.repeats - never}/{args.repeats} "
                     f"({by_monitor}) ")  # fmt: skip
    return f"| {pre.name} → {post.name} | " + "| ".join(cells) + "|"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--traces", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=284)
    args = parser.parse_args()
    started = time.monotonic()
    strata, _ = load_strata()
    print(f"## Certified cascade cost: alpha {args.alpha}, delta {args.delta}, {args.repeats} "
          f"repeats of {args.traces:,} traces\n")  # fmt: skip
    windows = [w for w in WINDOWS if w <= args.traces]
    heads = " | ".join(f"{lo // 1000}k–{hi // 1000}k" for lo, hi in itertools.pairwise(windows))
    print(f"| stratum | flipped | r | judge calls per 1,000 traces: {heads} | break-even "
          "(traces) | saved, whole run | saved, steady state | miss (judge) | miss (gold) "
          "| P(fail∣local), gold | m ≤ α (judge) | m ≤ α (gold) | withdrawals false/due/"
          "certifications watched: pass monitor; miss monitor |")  # fmt: skip
    print("|---|---|---|" + "---|" * (len(windows) - 1) + "---|---|---|---|---|---|---|---|---|")
    for i, st in enumerate(strata):
        for j, flip in enumerate(FLIPS):
            for k, r in enumerate(RATES):
                print(cost_rows(st, flip, r, args, args.seed + 100 * i + 10 * j + k))
    print("\n| shift (same key, r = 0.1) | pass monitor: passed locally after the shift "
          "(median) | of them hallucinated | traces to withdrawal (median) | withdrawn (by the "
          "monitor) | miss monitor: passed locally | hallucinated | traces to withdrawal "
          "| withdrawn (by the monitor) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for i, pre in enumerate(strata):
        for j, post in enumerate(strata):
            if i != j:
                print(shift_row(pre, post, args, args.seed + 1000 + 10 * i + j))
    print(f"\nwall {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
