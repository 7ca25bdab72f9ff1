"""The PPI++ trend interval (evalcore.ppi) on seeded buckets whose joint law of (cheap score f,
judge score y) is known, so the true mean of y is exact: a useful cheap score, a useless one, an
anti-correlated one, a drift in the cheap score alone (within the bucket), pass/fail and
continuous judges; uniform judge probabilities at judged n 30, 50, 200, and unequal ones
(uncertainty-driven, the issue's floor, a first stage that scores only half of one stratum) at
judged n 120 and 200 — below 100 a trend with unequal weights shows the judge-only interval
(`evalcore.ppi.shows_ppi`: PPI++ covered 91.0–92.9 % in 5 of 16 such cells).

Checked per cell, on the buckets where a trend shows PPI++: coverage ≥ 93 % at 95 % (the
issue's bar; also the suite's rule at the complementary level 0.07: the 99 % Clopper–Pearson
lower bound of the miss rate must not exceed it); with a useless or anti-correlated cheap score,
mean PPI++ width ≤ 1.03 × the judge-only width (today's Hájek interval with equal weights; with
unequal ones the same interval with the linearised variance, because Kish's is too narrow
there: today's interval covered 92.5–93.3 % with a useful or anti-correlated score); with a
useful one an ESS gain.
The predictable pseudo-outcomes of the anytime checks are unbiased for the stream's mean.
Vectorised: one array of buckets per cell."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from evalcore.ppi import (
    hajek_core,
    intervals,
    ppi_core,
    pseudo_outcomes,
    shows_ppi,
    t_ppf,
    uncertainty_rates,
)
from tests.statistics.calibration import SEEDS, assert_within_level, beta_scores

N = 400  # scored traces per bucket (the first stage)
COVERAGE = 0.93


@dataclass(frozen=True)
class Law:
    """f ~ Beta(0.5, 0.5) (mean 0.5, spread to both ends like a scorer's); E[y | f] = a + b·f,
    so E[y] = a + b/2 exactly."""

    name: str
    a: float
    b: float
    independent_f: bool = False  # f drawn apart from y's law (a useless cheap score)
    drift: float = 0.0  # added to f in the bucket's second half, y's law unchanged

    @property
    def mean(self) -> float:
        return self.a + self.b / 2


USEFUL = Law("useful", 0.05, 0.9)
USELESS = Law("useless", 0.7, 0.0, independent_f=True)
ANTI = Law("anti-correlated", 0.95, -0.9)
DRIFT = Law("cheap-score drift", 0.05, 0.9, drift=0.3)


def draw(rng, law: Law, seeds: int, *, binary: bool):
    f0 = rng.beta(0.5, 0.5, (seeds, N))
    m = law.a + law.b * f0
    y = (rng.random((seeds, N)) < m).astype(float) if binary else beta_scores(rng, m, m.shape)
    f = rng.beta(0.5, 0.5, (seeds, N)) if law.independent_f else f0
    if law.drift:  # the cheap scorer changes half-way; the judged traffic does not
        f = np.where(np.arange(N) >= N // 2, np.clip(f + law.drift, 0.0, 1.0), f)
    return f, y


def run_cell(law: Law, n: int, *, binary: bool, unequal: bool, seeds: int, seed: int):
    rng = np.random.default_rng(seed)
    f, y = draw(rng, law, seeds, binary=binary)
    rate = n / N if not unequal else n / (0.75 * N)  # unequal: a quarter of traces unscored
    if unequal:  # more judge calls where f is uncertain; half of one stratum unscored (p1)
        pi = uncertainty_rates(0.2 + np.sqrt(f * (1 - f)), rate, max(0.1 * rate, 0.01))
        p1 = np.where(f < 0.5, 1.0, 0.5)
    else:
        pi, p1 = np.full(f.shape, rate), np.ones(f.shape)
    kept = rng.random(f.shape) < p1  # the first stage: dropped traces are absent
    judged = kept & (rng.random(f.shape) < pi)
    # absent traces: weight 0 in the first stage (p1 = inf keeps the arrays rectangular)
    p1_eff = np.where(kept, p1, np.inf)
    core = ppi_core(y, judged, f, pi, p1_eff)
    stats = hajek_core(y, judged, p1 * pi)
    lo, hi = intervals(core["mean"], stats, core["ess"], t_ppf=t_ppf)
    jlo, jhi = intervals(stats["mean"], stats, stats["ess"], t_ppf=t_ppf)
    # The judge-only interval with the linearised variance (PPI++ at λ = 0): what "never
    # wider" is measured against when the weights differ and Kish's ESS is too optimistic.
    lin = ppi_core(y, judged, f, pi, p1_eff, lam=0.0)["ess"]
    llo, lhi = intervals(stats["mean"], stats, lin, t_ppf=t_ppf)
    # With p1 < 1 the truth is still the traffic's mean E[y]: p1 depends on f only, and the
    # weights 1/p1 undo it.
    shown = shows_ppi(core["n_judged"], stats["ess"])
    miss = ((lo > law.mean) | (hi < law.mean))[shown]
    miss_only = ((jlo > law.mean) | (jhi < law.mean))[shown]
    return {
        "buckets": int(shown.sum()),
        "miss": int(miss.sum()),
        "miss_only": int(miss_only.sum()),
        "width": float((hi - lo)[shown].mean()),
        "width_only": float((jhi - jlo)[shown].mean()),
        "width_linear": float((lhi - llo)[shown].mean()),
        "ess_gain": float((core["ess"] / stats["ess"])[shown].mean()),
        "lam": float(core["lam"][shown].mean()),
    }


CELLS = [
    (law, n, binary, unequal)
    for law in (USEFUL, USELESS, ANTI, DRIFT)
    for n, unequal in ((30, False), (50, False), (200, False), (120, True), (200, True))
    for binary in (True, False)
]


@pytest.mark.parametrize(
    ("law", "n", "binary", "unequal"),
    CELLS,
    ids=[
        f"{c[0].name}-n{c[1]}-{'pf' if c[2] else 'cont'}-{'uneq' if c[3] else 'unif'}"
        for c in CELLS
    ],
)
def test_ppi_interval_covers_and_is_never_much_wider(law: Law, n: int, binary: bool,
                                                     unequal: bool) -> None:  # fmt: skip
    seeds = 2 * SEEDS if n == 30 else SEEDS  # at n = 30 half the buckets reach 30 judged
    seed = zlib.crc32(f"{law.name} {n} {binary} {unequal}".encode())
    r = run_cell(law, n, binary=binary, unequal=unequal, seeds=seeds, seed=seed)
    cell = f"{law.name} n={n} {'pass/fail' if binary else 'continuous'} {unequal=}"
    print(f"{cell}: {r}")
    assert r["buckets"] >= 1000, f"{cell}: PPI++ shown in only {r['buckets']} buckets"
    coverage = 1 - r["miss"] / r["buckets"]
    assert coverage >= COVERAGE, f"{cell}: coverage {coverage:.4f} < {COVERAGE}"
    assert_within_level(r["miss"], r["buckets"], 1 - COVERAGE, cell)
    if law in (USELESS, ANTI):
        against = r["width_linear"] if unequal else r["width_only"]
        assert r["width"] <= 1.03 * against, f"{cell}: wider than judge-only: {r}"
    if law is USEFUL:  # the harness can tell a useful score: it gains
        assert r["ess_gain"] > 1.2, f"{cell}: no gain from a useful cheap score: {r}"


def test_pseudo_outcomes_are_unbiased_and_their_clt_interval_covers() -> None:
    """λ_i fitted on earlier records only: the mean of φ over a bucket is unbiased for E[y];
    with a useful cheap score its variance is below the judge-only Horvitz–Thompson one."""
    rng = np.random.default_rng(30)
    f, y = draw(rng, USEFUL, SEEDS, binary=True)
    pi = np.full(f.shape, 0.1)
    judged = rng.random(f.shape) < pi
    phi, _lam = pseudo_outcomes(y, judged, f, pi)
    ht, _ = pseudo_outcomes(y, judged, f, pi, warmup=10**9)  # λ = 0: plain HT
    est = phi.mean(-1)
    se = phi.std(-1, ddof=1) / np.sqrt(N)
    miss = int((np.abs(est - USEFUL.mean) > 1.959964 * se).sum())
    bias_z = (est.mean() - USEFUL.mean) / (est.std() / np.sqrt(SEEDS))
    print(f"pseudo-outcomes: miss {miss}/{SEEDS}, bias z {bias_z:.2f}, "
          f"var ratio {ht.mean(-1).var() / est.var():.2f}")  # fmt: skip
    assert abs(bias_z) < 4.0
    assert 1 - miss / SEEDS >= COVERAGE
    assert ht.mean(-1).var() > 1.1 * est.var()
