"""Prediction-powered means (PPI++) for one group × bucket, with inclusion probabilities.

Setting. A bucket's first stage holds N traces, each with a cheap score f ∈ [0, 1] (the local
scorer) and a first-stage inclusion probability p1 (1 when the cheap stage scored every trace;
weight v = 1/p1). Some are judged: trace i with a known probability π_i = p2|1, drawn
independently given the first stage (π may depend on f, never on the judge's verdict), judge
score y ∈ [0, 1]. The record stores p = p1·π, so a judged record's weight is w = v/π = 1/p.
Target: the mean of y over the traffic (the top judge's mean), what today's Hájek trend
estimates from the judged records alone (`evalcore.weights.WeightedStats`).

Estimator (Angelopoulos, Duchi & Zrnic 2023, "PPI++", with Horvitz–Thompson weights):

    θ̂(λ) = λ·F + Σ_S w·(y − λ·f) / Σ_S w,        F = Σ_N v·f / Σ_N v,

the cheap mean over every scored trace plus the judged traces' weighted correction. Any fixed λ
gives a consistent estimate (the correction's expectation cancels the cheap score's bias); λ = 0
is the Hájek mean of the judged records exactly. Its variance, by linearisation (records
independent given their weights, a two-phase draw), is a quadratic in λ:

    L(λ) = λ²·Σ_N v²(f − F)²/V² + Σ_S (v²/π)·2λ(f − F)(e − ē)/(V·W) + Σ_S w²(e − ē)²/W²,

e = y − λf, V = Σ_N v, W = Σ_S w. With uniform π = n/N it is σ_y²/N + σ_e²(1/n − 1/N): the
judge's noise is paid at n only on the part the cheap score does not explain. Power tuning: λ̂
minimises L (a closed form), clipped to [0, 1].

Interval: today's judge-only interval (`WeightedStats.mean_ci`: Wilson on pass/fail scores,
else Student t with ESS − 1 degrees of freedom, ESS − 1 the judged records' Kish ESS − 1)
centred on θ̂(λ̂), with the effective sample size ESS⁺ = s²_w / (k·L(λ̂)) in place of n, s²_w
the judged scores' weighted variance and k = ESS/(ESS − 1) (the t interval's small-sample
factor): ESS⁺ is the number of equally weighted judged records that would give the same
variance. With equal weights and λ = 0 it is n exactly, so a useless or anti-correlated cheap
score (λ̂ clipped to 0) gives today's interval; since λ = 0 is a candidate, L(λ̂) ≤ L(0): a cheap
score can only narrow it, up to the noise of λ̂ and of the centre. With unequal weights L(0) is
the linearised variance of the Hájek mean, not the Kish one today's interval uses: under
uncertainty-driven sampling (weights larger where y is far from its mean) the Kish interval is
too narrow — 92.5–93.3 % coverage at 95 % for continuous scores at judged n 120–200 in the
calibration suite — and PPI++ is then wider than it where the Kish one is wrong.

Guarantee (`ppi_mean`): an asymptotic (CLT) two-sided interval at `confidence`, clipped to
[0, 1]. Assumptions: records are independent draws of the stream given their weights (as for
the Hájek trend, whose Kish variance it inherits), the π are the realised probabilities and the
judged draw is independent of y given f. It is not anytime-valid (one look per bucket) and a
trend shows it only when the bucket's judged n is ≥ `MIN_JUDGED` (≥ `MIN_JUDGED_UNEQUAL` when
the judged weights differ: `shows_ppi`); below, the judge-only interval.
`tests/statistics/test_ppi_calibration` checks coverage ≥ 93 % at 95 % where a trend shows it
(equal weights at judged n 30, 50, 200; uncertainty-driven weights at 120, 200), and that a
useless or anti-correlated cheap score widens the interval by at most 3 % on average.

For the anytime-valid checks (`pseudo_outcomes`): per-trace pseudo-outcomes
φ_i = λ_i·f_i + ξ_i·(y_i − λ_i·f_i)/π_i with λ_i fitted on earlier records only (predictable),
so E[φ_i | past] is the stream's mean; they lie in [−(1/π_min − 1), 1/π_min] (`pseudo_range`)
and can be rescaled to [0, 1] for the betting sequences of `evalcore.sequences`.

    >>> f = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.3])
    >>> judged = np.array([True, False, True, False, True, True])
    >>> y = np.where(judged, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], np.nan)
    >>> r = ppi_mean(y, judged, f, np.full(6, 4 / 6))
    >>> r.judge_only.estimator, round(r.judge_only.mean, 3), r.ppi.estimator, r.ppi.lam
    ('hajek', 0.5, 'ppi++', 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.intervals import t_quantile, wilson_ci
from evalcore.weights import WeightedStats

Array = npt.NDArray[np.float64]
MIN_JUDGED = 30  # below it a bucket shows the judge-only interval (issue 30)
# With unequal judged weights (uncertainty-driven sampling) PPI++ covered 91.0–92.9 % in 5 of
# 16 cells at judged n 30–50 of the calibration suite, ≥ 93.8 % at 120 and 200: below 100 the
# judge-only interval stands.
MIN_JUDGED_UNEQUAL = 100


def shows_ppi(n_judged: Any, ess: Any) -> Any:
    """Where a trend shows PPI++ rather than the judge-only interval (vectorised): judged n
    ≥ MIN_JUDGED with equal weights (Kish ESS = n), ≥ MIN_JUDGED_UNEQUAL otherwise."""
    n, e = np.asarray(n_judged, float), np.asarray(ess, float)
    equal = e >= n * (1 - 1e-9)
    return (n >= MIN_JUDGED) & (equal | (n >= MIN_JUDGED_UNEQUAL))


@dataclass(frozen=True)
class Estimate:
    """One estimate of a bucket's mean: which estimator, its interval and ESS (equally
    weighted judged records with the same variance)."""

    estimator: str  # "ppi++" or "hajek"
    mean: float
    ci_low: float
    ci_high: float
    se: float
    ess: float
    n_judged: int
    lam: float | None = None  # the power-tuning λ (PPI++ only)

    def to_json(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "ess": self.ess,
            "n_judged": self.n_judged,
            **({"lambda": self.lam} if self.lam is not None else {}),
        }


@dataclass(frozen=True)
class PPIResult:
    ppi: Estimate | None  # None without a cheap stage
    judge_only: Estimate
    n_cheap: int

    def shown(self) -> Estimate:
        """What a trend shows: PPI++ where a cheap stage exists and `shows_ppi`."""
        only = self.judge_only
        if self.ppi is None or not shows_ppi(only.n_judged, only.ess):
            return only
        return self.ppi


def hajek(y: Array, p: Array, confidence: float = 0.95) -> Estimate:
    """Today's judge-only estimate, exactly `WeightedStats` (Hájek mean, Kish ESS, Wilson for
    pass/fail scores, else t with ESS − 1 degrees of freedom)."""
    s = WeightedStats.from_scores(zip(y.tolist(), p.tolist(), strict=True))
    lo, hi = s.mean_ci(confidence)
    se = s.std / math.sqrt(s.ess) if s.ess > 0 else math.nan
    return Estimate("hajek", s.mean, lo, hi, se, s.ess, s.n)


def ppi_mean(
    y: Array,
    judged: Any,
    f: Array | None,
    p2: Array,
    p1: Array | None = None,
    *,
    confidence: float = 0.95,
    lam: float | None = None,
) -> PPIResult:
    """One bucket: arrays over its first stage (y is read where `judged`). `f` None: no cheap
    stage, the judge-only (Hájek) estimate alone. `lam` fixes λ instead of tuning it."""
    judged = np.asarray(judged, bool)
    p1a = np.ones(judged.shape) if p1 is None else np.asarray(p1, float)
    yj = np.asarray(y, float)[judged]
    p = (p1a * np.asarray(p2, float))[judged]
    only = hajek(yj, p, confidence)
    if f is None:
        return PPIResult(None, only, 0)
    core = ppi_core(y, judged, f, p2, p1, lam=lam)
    mean, lam_hat, ess = float(core["mean"]), float(core["lam"]), float(core["ess"])
    s = WeightedStats.from_scores(zip(yj.tolist(), p.tolist(), strict=True))
    if s.ess < 2:
        lo, hi = 0.0, 1.0
    elif s.binary:  # Wilson, as today's, on the PPI++ centre and ESS
        centre = min(1.0, max(0.0, mean))
        lo, hi = wilson_ci(centre * ess, ess, confidence) if math.isfinite(ess) else (mean, mean)
    else:
        half = _t(0.5 + confidence / 2, s.ess - 1) * s.std / math.sqrt(ess)
        lo, hi = max(0.0, mean - half), min(1.0, mean + half)
    se = s.std / math.sqrt(ess) if s.ess > 0 else math.nan
    ppi = Estimate("ppi++", mean, lo, hi, se, ess, s.n, lam_hat)
    return PPIResult(ppi, only, int(judged.size))


@lru_cache(maxsize=4096)
def _t_cached(q: float, df: float) -> float:
    return t_quantile(q, df)


def _t(q: float, df: float) -> float:
    return _t_cached(q, df)


def t_ppf(q: float, df: Any) -> Array:
    """Student quantiles for an array of degrees of freedom (simulations). df ≥ 8: the
    Cornish–Fisher expansion in 1/df to the fourth order (Abramowitz & Stegun 26.7.5; within
    2.5e-5 of the exact quantile at df 8 at the 97.5 % point, 3e-8 at df 30); below, each distinct
    df (rounded to 0.01) once by `evalcore.intervals.t_quantile`; inf gives the normal."""
    d = np.asarray(df, float)
    z = NormalDist().inv_cdf(q)
    inv = 1.0 / np.maximum(np.where(np.isfinite(d), d, np.inf), 8.0)  # 0 for inf
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    out = z + inv * (g1 + inv * (g2 + inv * (g3 + inv * g4)))
    low = d < 8
    if low.any():
        values, where = np.unique(np.round(d[low], 2), return_inverse=True)
        out = np.array(out, float)
        out[low] = np.array([_t_cached(q, float(x)) for x in values])[where]
    return np.asarray(out, float)


def ppi_core(
    y: Any, judged: Any, f: Any, p2: Any, p1: Any = None, *, lam: float | None = None
) -> dict[str, Array]:
    """PPI++ for many buckets at once along the last axis: the point estimate, the λ used,
    ESS⁺ (the effective sample size of its interval), and the judged count. A bucket with
    fewer than two judged records gets NaN or inf (no estimate), without a warning."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return _ppi_core(y, judged, f, p2, p1, lam)


def _ppi_core(y: Any, judged: Any, f: Any, p2: Any, p1: Any, lam: float | None) -> dict[str, Array]:
    xi = np.asarray(judged, bool)
    f = np.asarray(f, float)
    pi = np.asarray(p2, float)
    v = np.ones(f.shape) if p1 is None else 1.0 / np.asarray(p1, float)
    y = np.where(xi, np.nan_to_num(np.asarray(y, float)), 0.0)
    w = np.where(xi, v / np.where(xi, pi, 1.0), 0.0)  # judged weights, 0 elsewhere
    V, W = v.sum(-1), w.sum(-1)
    Wsafe = np.where(W > 0, W, 1.0)
    F = (v * f).sum(-1) / V
    Fs, Ys = (w * f).sum(-1) / Wsafe, (w * y).sum(-1) / Wsafe
    dfn = f - F[..., None]  # cheap score about the first-stage mean
    dfs, dy = (f - Fs[..., None]) * xi, (y - Ys[..., None]) * xi  # about the judged means
    u = w * v  # = v²/π on judged records
    a1 = (v * v * dfn * dfn).sum(-1) / (V * V)
    a2 = (u * dfn * dfs).sum(-1) / (V * Wsafe)
    a3 = (w * w * dfs * dfs).sum(-1) / (Wsafe * Wsafe)
    b1 = (u * dfn * dy).sum(-1) / (V * Wsafe)
    b2 = (w * w * dfs * dy).sum(-1) / (Wsafe * Wsafe)
    c = (w * w * dy * dy).sum(-1) / (Wsafe * Wsafe)
    a = a1 - 2 * a2 + a3  # L(λ) = a λ² + 2 (b1 − b2) λ + c
    if lam is None:
        ok = a > 1e-15
        lam_arr = np.clip(np.where(ok, (b2 - b1) / np.where(ok, a, 1.0), 0.0), 0.0, 1.0)
    else:
        lam_arr = np.full(F.shape, float(lam))
    var = np.maximum(a * lam_arr**2 + 2 * (b1 - b2) * lam_arr + c, 0.0)
    mean = lam_arr * F + Ys - lam_arr * Fs
    kish = (w * w).sum(-1)
    ess = np.where(kish > 0, W * W / np.where(kish > 0, kish, 1.0), 0.0)
    k = np.where(ess > 1, ess / np.maximum(ess - 1, 1e-12), np.inf)
    s2 = np.maximum((w * y * y).sum(-1) / Wsafe - Ys * Ys, 0.0) * k  # WeightedStats.var
    with np.errstate(divide="ignore", invalid="ignore"):
        plus = np.where(c > 0, s2 / (k * var), ess)  # all judged scores equal: no variance
    return {"mean": mean, "lam": lam_arr, "ess": plus, "n_judged": xi.sum(-1)}


def hajek_core(y: Any, judged: Any, p: Any) -> dict[str, Array]:
    """Today's judge-only statistics for many buckets at once, as `WeightedStats` computes
    them: Hájek mean, Kish ESS, weighted variance (ESS − 1 correction), pass/fail flag."""
    xi = np.asarray(judged, bool)
    w = np.where(xi, 1.0 / np.where(xi, np.asarray(p, float), 1.0), 0.0)
    y = np.where(xi, np.nan_to_num(np.asarray(y, float)), 0.0)
    W, W2 = w.sum(-1), (w * w).sum(-1)
    Wsafe = np.where(W > 0, W, 1.0)
    mean = (w * y).sum(-1) / Wsafe
    ess = np.where(W2 > 0, W * W / np.where(W2 > 0, W2, 1.0), 0.0)
    second = (w * y * y).sum(-1) / Wsafe
    corr = np.where(ess > 1, ess / np.maximum(ess - 1, 1e-12), 0.0)
    var = np.maximum(second - mean * mean, 0.0) * corr
    binary = np.abs(second * Wsafe - mean * Wsafe) <= 1e-9 * np.maximum(W, 1)
    return {"mean": mean, "ess": ess, "var": var, "binary": binary}


def intervals(
    mean: Any,
    stats: dict[str, Array],
    ess: Any,
    *,
    t_ppf: Callable[[Any, Any], Any],
    confidence: float = 0.95,
) -> tuple[Array, Array]:
    """`WeightedStats.mean_ci` vectorised, centred on `mean` with `ess` for the width (the
    judge-only ESS for today's interval, `ppi_core`'s ESS⁺ for PPI++); degrees of freedom
    stay the judge's ESS − 1. `t_ppf(q, df)`: a vectorised Student quantile."""
    mean, ess = np.asarray(mean, float), np.maximum(np.asarray(ess, float), 1e-12)
    z = float(t_ppf(0.5 + confidence / 2, np.inf))
    p = np.clip(mean, 0.0, 1.0)
    centre = (p + z * z / (2 * ess)) / (1 + z * z / ess)
    whalf = z * np.sqrt(p * (1 - p) / ess + z * z / (4 * ess * ess)) / (1 + z * z / ess)
    wlo = np.where(p <= 0, 0.0, np.maximum(0.0, centre - whalf))
    whi = np.where(p >= 1, 1.0, np.minimum(1.0, centre + whalf))
    df = np.maximum(stats["ess"] - 1, 1e-9)
    thalf = t_ppf(0.5 + confidence / 2, df) * np.sqrt(stats["var"] / ess)
    tlo, thi = np.maximum(0.0, mean - thalf), np.minimum(1.0, mean + thalf)
    small = stats["ess"] < 2
    lo = np.where(small, 0.0, np.where(stats["binary"], wlo, tlo))
    hi = np.where(small, 1.0, np.where(stats["binary"], whi, thi))
    return lo, hi


def pseudo_outcomes(
    y: Any, judged: Any, f: Any, p2: Any, *, warmup: int = MIN_JUDGED
) -> tuple[Array, Array]:
    """Per-trace pseudo-outcomes in arrival order (last axis) with a predictable λ: λ_i is the
    weighted regression slope of y on f over the judged records *before* i, clipped to
    [0, 1], and 0 until `warmup` of them. E[φ_i | past] = the stream's mean whatever λ_i is,
    because λ_i is fixed before trace i's draw and π_i is known. Returns (φ, λ)."""
    xi = np.asarray(judged, bool)
    f = np.asarray(f, float)
    pi = np.asarray(p2, float)
    y = np.where(xi, np.nan_to_num(np.asarray(y, float)), 0.0)
    w = np.where(xi, 1.0 / np.where(xi, pi, 1.0), 0.0)

    def before(x: Array) -> Array:  # sums over earlier records only
        c = np.cumsum(x, -1)
        return c - x

    n, sw = before(xi.astype(float)), before(w)
    swf, swy = before(w * f), before(w * y)
    swff, swfy = before(w * f * f), before(w * f * y)
    safe = np.where(sw > 0, sw, 1.0)
    mf, my = swf / safe, swy / safe
    var, cov = swff / safe - mf * mf, swfy / safe - mf * my
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where((n >= warmup) & (var > 1e-12), cov / np.where(var > 1e-12, var, 1), 0.0)
    lam = np.clip(lam, 0.0, 1.0)
    phi = lam * f + w * (y - lam * f)
    return phi, lam


def pseudo_range(p_floor: float) -> tuple[float, float]:
    """Where pseudo-outcomes lie when f, y ∈ [0, 1], λ ∈ [0, 1] and every π ≥ p_floor."""
    return (-(1.0 / p_floor - 1.0), 1.0 / p_floor)


def uncertainty_rates(
    uncertainty: Any, mean_rate: float, floor: float, *, iterations: int = 60
) -> Array:
    """Judge probabilities π = clip(c·u, floor, 1) with c chosen so their mean is `mean_rate`
    (last axis): more judge calls where the cheap score is uncertain (active inference,
    Zrnic & Candès 2024: π ∝ the conditional sd of the correction), a floor everywhere.
    The issue's floor is max(0.1 × mean rate, r)."""
    u = np.asarray(uncertainty, float)
    if not 0 < floor <= mean_rate <= 1:
        raise ValueError("need 0 < floor <= mean_rate <= 1")
    lo = np.zeros(u.shape[:-1])
    hi = np.full(u.shape[:-1], 1.0 / max(float(u[u > 0].min(initial=1e-6)), 1e-6))
    for _ in range(iterations):  # bisection on c: the mean rate grows with c
        mid = (lo + hi) / 2
        m = np.clip(mid[..., None] * u, floor, 1.0).mean(-1)
        lo, hi = np.where(m < mean_rate, mid, lo), np.where(m < mean_rate, hi, mid)
    probs: Array = np.clip(hi[..., None] * u, floor, 1.0)
    return probs


_SUMS = (
    "v",
    "vf",
    "v2",
    "v2f",
    "v2f2",  # first stage: v = 1/p1
    "w",
    "wf",
    "wy",
    "wy2",
    "u",
    "uf",
    "uf2",
    "uy",
    "ufy",  # judged: w = v/π, u = w·v
    "w2",
    "w2f",
    "w2f2",
    "w2y",
    "w2fy",
    "w2y2",
)


@dataclass(frozen=True)
class PPISums:
    """The additive statistics PPI++ needs (power sums), so a rollup can store a bucket's
    cell and merge cells: `estimate()` equals `ppi_core` on the records they came from, up to
    rounding. Not stored by the rollups yet (that needs a migration)."""

    n_judged: int
    sums: tuple[float, ...]

    @classmethod
    def from_records(cls, y: Any, judged: Any, f: Any, p2: Any, p1: Any = None) -> PPISums:
        xi = np.asarray(judged, bool)
        f = np.asarray(f, float)
        v = np.ones(f.shape) if p1 is None else 1.0 / np.asarray(p1, float)
        y = np.where(xi, np.nan_to_num(np.asarray(y, float)), 0.0)
        w = np.where(xi, v / np.where(xi, np.asarray(p2, float), 1.0), 0.0)
        u = w * v
        parts = (
            v,
            v * f,
            v * v,
            v * v * f,
            v * v * f * f,
            w,
            w * f,
            w * y,
            w * y * y,
            u,
            u * f,
            u * f * f,
            u * y,
            u * f * y,
            w * w,
            w * w * f,
            w * w * f * f,
            w * w * y,
            w * w * f * y,
            w * w * y * y,
        )
        return cls(int(xi.sum()), tuple(float(p.sum()) for p in parts))

    def __add__(self, other: PPISums) -> PPISums:
        both = zip(self.sums, other.sums, strict=True)
        return PPISums(self.n_judged + other.n_judged, tuple(a + b for a, b in both))

    def estimate(self, lam: float | None = None) -> dict[str, float]:
        """`ppi_core`'s mean, λ and ESS⁺, from the sums (expanded about the means)."""
        s = dict(zip(_SUMS, self.sums, strict=True))
        V, W = s["v"], s["w"] or 1.0
        F, Fs, Ys = s["vf"] / V, s["wf"] / W, s["wy"] / W
        a1 = (s["v2f2"] - 2 * F * s["v2f"] + F * F * s["v2"]) / (V * V)
        a2 = (s["uf2"] - (F + Fs) * s["uf"] + F * Fs * s["u"]) / (V * W)
        a3 = (s["w2f2"] - 2 * Fs * s["w2f"] + Fs * Fs * s["w2"]) / (W * W)
        b1 = (s["ufy"] - Ys * s["uf"] - F * s["uy"] + F * Ys * s["u"]) / (V * W)
        b2 = (s["w2fy"] - Ys * s["w2f"] - Fs * s["w2y"] + Fs * Ys * s["w2"]) / (W * W)
        c = max(0.0, (s["w2y2"] - 2 * Ys * s["w2y"] + Ys * Ys * s["w2"]) / (W * W))
        a = a1 - 2 * a2 + a3
        if lam is None:
            lam = min(1.0, max(0.0, (b2 - b1) / a)) if a > 1e-15 else 0.0
        var = max(0.0, a * lam * lam + 2 * (b1 - b2) * lam + c)
        ess = W * W / s["w2"] if s["w2"] > 0 else 0.0
        k = ess / (ess - 1) if ess > 1 else math.inf
        s2 = max(0.0, s["wy2"] / W - Ys * Ys) * k
        plus = s2 / (k * var) if c > 0 and var > 0 else ess
        return {"mean": lam * F + Ys - lam * Fs, "lam": lam, "ess": plus}
