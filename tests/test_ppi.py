"""evalcore.ppi: the PPI++ mean reduces to today's Hájek numbers without a cheap stage, its
vectorised forms agree with the scalar ones, λ is fitted only on earlier records in the
pseudo-outcomes, and (when ppi-python is installed) its numbers match the reference library's
in the design both share (uniform, the unlabelled set much larger than the labelled one)."""

from __future__ import annotations

import numpy as np
import pytest

from evalcore.ppi import (
    PPISums,
    hajek_core,
    intervals,
    ppi_core,
    ppi_mean,
    pseudo_outcomes,
    pseudo_range,
    shows_ppi,
    t_ppf,
    uncertainty_rates,
)
from evalcore.weights import WeightedStats


def bucket(rng: np.random.Generator, n: int, *, binary: bool, unequal: bool):
    f = rng.random(n)
    y = (rng.random(n) < f).astype(float) if binary else np.clip(f + rng.normal(0, 0.2, n), 0, 1)
    p2 = np.where(f < 0.5, 0.6, 0.2) if unequal else np.full(n, 0.3)
    p1 = np.where(rng.random(n) < 0.5, 1.0, 0.5) if unequal else None
    judged = rng.random(n) < p2
    return np.where(judged, y, np.nan), judged, f, p2, p1


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("unequal", [True, False])
def test_without_a_cheap_stage_the_numbers_are_weighted_stats_exactly(binary, unequal) -> None:
    y, judged, _f, p2, p1 = bucket(np.random.default_rng(3), 400, binary=binary, unequal=unequal)
    p = (np.ones(y.size) if p1 is None else p1) * p2
    r = ppi_mean(y, judged, None, p2, p1)
    ws = WeightedStats.from_scores(zip(y[judged].tolist(), p[judged].tolist(), strict=True))
    shown = r.shown()
    assert r.ppi is None and shown.estimator == "hajek"
    assert (shown.mean, (shown.ci_low, shown.ci_high), shown.ess) == (ws.mean, ws.mean_ci(),
                                                                       ws.ess)  # fmt: skip
    assert shown.n_judged == ws.n


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("unequal", [True, False])
def test_lambda_zero_is_the_hajek_mean_and_equal_weights_todays_interval(binary, unequal):
    y, judged, f, p2, p1 = bucket(np.random.default_rng(4), 600, binary=binary, unequal=unequal)
    r = ppi_mean(y, judged, f, p2, p1, lam=0.0)
    assert r.ppi is not None
    assert r.ppi.mean == pytest.approx(r.judge_only.mean, abs=1e-12)
    if unequal:  # the linearised variance, not Kish's: close, not equal
        assert r.ppi.ess == pytest.approx(r.judge_only.ess, rel=0.25)
        return
    assert (r.ppi.ci_low, r.ppi.ci_high, r.ppi.ess) == pytest.approx(
        (r.judge_only.ci_low, r.judge_only.ci_high, r.judge_only.ess), rel=1e-9
    )


def test_a_useful_cheap_score_narrows_the_interval() -> None:
    y, judged, f, p2, p1 = bucket(np.random.default_rng(11), 2000, binary=False, unequal=False)
    r = ppi_mean(y, judged, f, p2, p1)
    assert r.ppi is not None and r.ppi.lam is not None and r.ppi.lam > 0.5
    assert r.ppi.ess > 1.5 * r.judge_only.ess
    assert r.ppi.ci_high - r.ppi.ci_low < r.judge_only.ci_high - r.judge_only.ci_low


def test_everything_judged_gives_the_judged_mean_whatever_lambda() -> None:
    rng = np.random.default_rng(5)
    f, y = rng.random(100), rng.random(100)
    for lam in (None, 0.0, 0.5, 1.0):
        r = ppi_mean(y, np.ones(100, bool), f, np.ones(100), lam=lam)
        assert r.ppi is not None and r.ppi.mean == pytest.approx(y.mean(), abs=1e-12)


def test_small_judged_n_shows_the_judge_only_estimate() -> None:
    y, judged, f, p2, _p1 = bucket(np.random.default_rng(6), 60, binary=True, unequal=False)
    r = ppi_mean(y, judged, f, p2)
    assert r.judge_only.n_judged < 30 and r.shown().estimator == "hajek"
    big = ppi_mean(*bucket(np.random.default_rng(6), 600, binary=True, unequal=False)[:4])
    assert big.shown().estimator == "ppi++"


def test_unequal_weights_show_ppi_only_from_judged_n_100() -> None:
    assert list(shows_ppi([29, 30, 60, 60, 100], [29, 30, 60, 45.0, 70.0])) == [
        False, True, True, False, True,
    ]  # fmt: skip
    y, judged, f, p2, p1 = bucket(np.random.default_rng(12), 200, binary=True, unequal=True)
    r = ppi_mean(y, judged, f, p2, p1)
    assert 30 <= r.judge_only.n_judged < 100 and r.shown().estimator == "hajek"


def test_vectorised_forms_match_the_scalar_ones() -> None:
    rng = np.random.default_rng(7)
    rows = [bucket(rng, 300, binary=b, unequal=True) for b in (True, False, True, False)]
    y, judged, f, p2, p1 = (np.stack(a) for a in zip(*rows, strict=True))
    core = ppi_core(y, judged, f, p2, p1)
    stats = hajek_core(y, judged, p1 * p2)
    lo, hi = intervals(core["mean"], stats, core["ess"], t_ppf=t_ppf)
    jlo, jhi = intervals(stats["mean"], stats, stats["ess"], t_ppf=t_ppf)
    for i in range(4):
        r = ppi_mean(y[i], judged[i], f[i], p2[i], p1[i])
        assert r.ppi is not None
        assert core["mean"][i] == pytest.approx(r.ppi.mean, abs=1e-12)
        assert (lo[i], hi[i]) == pytest.approx((r.ppi.ci_low, r.ppi.ci_high), abs=1e-5)
        assert (jlo[i], jhi[i]) == pytest.approx(
            (r.judge_only.ci_low, r.judge_only.ci_high), abs=1e-5
        )


def test_pseudo_outcomes_use_only_earlier_records() -> None:
    rng = np.random.default_rng(8)
    f = rng.random(200)
    y, judged, p2 = (rng.random(200) < f).astype(float), rng.random(200) < 0.5, np.full(200, 0.5)
    phi, lam = pseudo_outcomes(y, judged, f, p2, warmup=10)
    y2 = y.copy()
    y2[150:] = 1.0 - y2[150:]  # rewrite the future: λ up to 150 must not move
    _, lam2 = pseudo_outcomes(y2, judged, f, p2, warmup=10)
    assert np.array_equal(lam[:151], lam2[:151]) and not np.array_equal(lam, lam2)
    assert lam[:10].max() == 0.0 and lam[-1] > 0.3
    lo, hi = pseudo_range(0.5)
    assert lo <= phi.min() and phi.max() <= hi


def test_uncertainty_rates_spend_the_mean_rate_above_the_floor() -> None:
    f = np.random.default_rng(9).random((3, 1000))
    pi = uncertainty_rates(np.sqrt(f * (1 - f)), 0.1, 0.02)
    assert pi.mean(-1) == pytest.approx(np.full(3, 0.1), rel=1e-6)
    assert pi.min() >= 0.02 and pi.max() <= 1.0
    assert pi[np.abs(f - 0.5) < 0.05].mean() > pi[np.abs(f - 0.5) > 0.45].mean()


def test_matches_ppi_python_where_the_designs_agree() -> None:
    """ppi-python treats the unlabelled set as independent of the labelled one; with N ≫ n
    the overlap terms vanish and the two must agree: the point estimate at a fixed λ exactly,
    the standard error at a fixed and at the tuned λ to 1 %."""
    ppi_py = pytest.importorskip("ppi_py")
    rng = np.random.default_rng(10)
    N, n = 200_000, 500
    f = rng.random(N)
    y = (rng.random(N) < 0.2 + 0.6 * f).astype(float)
    judged = np.zeros(N, bool)
    judged[rng.choice(N, n, replace=False)] = True
    pi = np.full(N, n / N)
    r = ppi_mean(np.where(judged, y, np.nan), judged, f, pi, confidence=0.9)
    assert r.ppi is not None
    fixed = ppi_mean(np.where(judged, y, np.nan), judged, f, pi, lam=0.7, confidence=0.9)
    assert fixed.ppi is not None
    point_ref = float(ppi_py.ppi_mean_pointestimate(y[judged], f[judged], f, lam=0.7)[0])
    assert fixed.ppi.mean == pytest.approx(point_ref, abs=1e-12)
    lo, hi = ppi_py.ppi_mean_ci(y[judged], f[judged], f, alpha=0.1, lam=0.7)
    se_ref = (float(hi[0]) - float(lo[0])) / (2 * 1.6448536269514722)
    assert fixed.ppi.se == pytest.approx(se_ref, rel=0.01)
    ref_lo, ref_hi = ppi_py.ppi_mean_ci(y[judged], f[judged], f, alpha=0.1)
    ref_se = (float(ref_hi[0]) - float(ref_lo[0])) / (2 * 1.6448536269514722)
    assert r.ppi.se == pytest.approx(ref_se, rel=0.01)


def test_sums_merge_and_give_the_same_estimate() -> None:
    y, judged, f, p2, p1 = bucket(np.random.default_rng(13), 900, binary=False, unequal=True)
    halves = [slice(0, 400), slice(400, 900)]
    merged = sum(
        (PPISums.from_records(y[h], judged[h], f[h], p2[h], p1[h]) for h in halves[1:]),
        PPISums.from_records(y[halves[0]], judged[halves[0]], f[halves[0]], p2[halves[0]],
                             p1[halves[0]]),
    )  # fmt: skip
    whole = ppi_core(y, judged, f, p2, p1)
    got = merged.estimate()
    assert merged.n_judged == int(judged.sum())
    for key in ("mean", "lam", "ess"):
        assert got[key] == pytest.approx(float(whole[key]), rel=1e-8)
