"""Certification of a cheap stage's threshold (issue 28) on seeded synthetic strata whose true
miss rate m(t) = P(score ≥ t | the top judge fails) is known in closed form: the certified
threshold has m > alpha in at most delta of the seeds — independent items, and clustered
items (a shared document effect) through one item per cluster. The withdrawal monitor
withdraws at most delta of stationary streams and withdraws after an injected shift."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from evalcore.certification import Monitor, certify, first_withdrawal
from evalcore.exact import clopper_pearson_upper
from tests.statistics.calibration import SEEDS, assert_within_level

ALPHA, DELTA = 0.05, 0.1
N = NormalDist()
# Scores are Φ(latent): failing items' latent ~ N(FAIL_MEAN, total variance), passing ones'
# ~ N(PASS_MEAN, …). Then m(t) = 1 − Φ((Φ⁻¹(t) − FAIL_MEAN) / sd), exactly.
FAIL_MEAN, PASS_MEAN = -1.0, 1.0


def true_miss(t: float, sd: float) -> float:
    if t <= 0.0:
        return 1.0
    if t >= 1.0:
        return 0.0
    return 1.0 - N.cdf((N.inv_cdf(t) - FAIL_MEAN) / sd)


def independent_stratum(rng: np.random.Generator, n: int, fail_rate: float):
    fails = rng.random(n) < fail_rate
    latent = np.where(fails, FAIL_MEAN, PASS_MEAN) + rng.standard_normal(n)
    return np.vectorize(N.cdf)(latent), fails


@pytest.mark.parametrize(("n", "fail_rate"), [(300, 0.3), (2000, 0.1)])
def test_certified_threshold_misses_more_than_alpha_at_most_delta(n: int, fail_rate: float) -> None:
    rng = np.random.default_rng(n)
    bad = naive_bad = certified = 0
    for _ in range(SEEDS):
        scores, fails = independent_stratum(rng, n, fail_rate)
        cert = certify(scores, fails, alpha=ALPHA, delta=DELTA)
        if cert.threshold is not None:
            certified += 1
            bad += true_miss(cert.threshold, 1.0) > ALPHA
            assert cert.miss_bound <= ALPHA
        # The harness can fail: the point estimate (misses / failing ≤ alpha) breaks the level.
        failing = np.sort(scores[fails])[::-1]
        naive_t = failing[int(ALPHA * failing.size)]  # loosest t with observed rate ≤ alpha
        naive_bad += true_miss(float(naive_t), 1.0) > ALPHA
    assert certified > SEEDS // 2, f"only {certified}/{SEEDS} strata certified: too weak a test"
    print(f"n={n}: {certified} certified, {bad} bad, naive {naive_bad} bad of {SEEDS}")
    assert_within_level(bad, SEEDS, DELTA, f"certify n={n} fail rate {fail_rate}")
    assert naive_bad / SEEDS > 2 * DELTA, f"naive rule bad in only {naive_bad}/{SEEDS}"


CLUSTER_SIZE, CLUSTER_SD, ITEM_SD = 6, 1.0, 0.6


def clustered_stratum(rng: np.random.Generator, clusters: int):
    """A document effect shared by all answers of a cluster (a hard document is missed in
    all its answers at once); failing is likelier in some documents too."""
    doc = np.repeat(np.arange(clusters), CLUSTER_SIZE)
    effect = rng.standard_normal(clusters)[doc] * CLUSTER_SD
    fails = rng.random(doc.size) < 1 / (1 + np.exp(-(-1.0 + rng.standard_normal(clusters)[doc])))
    latent = (
        np.where(fails, FAIL_MEAN, PASS_MEAN) + effect + rng.standard_normal(doc.size) * ITEM_SD
    )
    return np.vectorize(N.cdf)(latent), fails, doc


def test_clustered_certification_misses_more_than_alpha_at_most_delta() -> None:
    """Equal cluster sizes: the cluster-uniform miss rate is the item-level one."""
    sd = float(np.hypot(CLUSTER_SD, ITEM_SD))
    rng = np.random.default_rng(28)
    bad = certified = item_level_bad = 0
    for seed in range(SEEDS):
        scores, fails, doc = clustered_stratum(rng, 400)
        cert = certify(scores, fails, doc, alpha=ALPHA, delta=DELTA, seed=seed)
        assert cert.clusters == 400 and cert.labels == 400
        if cert.threshold is not None:
            certified += 1
            bad += true_miss(cert.threshold, sd) > ALPHA
        # Ignoring the clusters (all 2,400 items as if independent) is not exact here.
        naive = certify(scores, fails, alpha=ALPHA, delta=DELTA)
        item_level_bad += naive.threshold is not None and true_miss(naive.threshold, sd) > ALPHA
    assert certified > SEEDS // 2, f"only {certified}/{SEEDS} strata certified: too weak a test"
    print(f"clustered: {certified} certified, {bad} bad; clusters ignored {item_level_bad} bad")
    assert_within_level(bad, SEEDS, DELTA, "certify, one item per cluster")
    # The harness can fail, and clusters matter: treating the items as independent does not
    # hold the level on this seeded stratum.
    assert item_level_bad / SEEDS > DELTA, f"clusters ignored: {item_level_bad}/{SEEDS} bad"


def test_the_decided_share_and_the_projection_of_labels_needed() -> None:
    rng = np.random.default_rng(5)
    scores, fails = independent_stratum(rng, 60, 0.3)
    cert = certify(scores, fails, alpha=ALPHA, delta=DELTA)
    assert cert.threshold is None and cert.decided_share == 0.0
    assert cert.labels_needed is not None and cert.labels_needed > 60
    # The projection at the observed rates certifies when the rates hold (here: 0 misses).
    f = cert.failing
    more = certify(np.repeat(scores, 1 + cert.labels_needed // 60),
                   np.repeat(fails, 1 + cert.labels_needed // 60), alpha=ALPHA, delta=DELTA)  # fmt: skip
    assert more.threshold is not None and more.threshold <= (cert.needed_for or 1.0)
    assert f > 0


def test_errors_are_one_line() -> None:
    with pytest.raises(ValueError, match="one verdict per score"):
        certify([0.5, 0.6], [True])
    with pytest.raises(ValueError, match="strictest"):
        certify([0.5], [True], grid=[0.1, 0.9])
    with pytest.raises(ValueError, match="alpha and delta"):
        certify([0.5], [True], alpha=0.0)


# --- withdrawal --------------------------------------------------------------------------------

CEILING, STREAM, SHIFT_AT = 0.05, 2000, 300


def test_monitor_withdraws_a_stationary_stream_at_most_delta() -> None:
    """The worst stationary case: the fail rate among passed traces sits at the ceiling."""
    rng = np.random.default_rng(11)
    withdrawn = sum(first_withdrawal(rng.random(STREAM) < CEILING, CEILING, DELTA) is not None
                    for _ in range(SEEDS))  # fmt: skip
    print(f"stationary: {withdrawn}/{SEEDS} withdrawn")
    assert_within_level(withdrawn, SEEDS, DELTA, "monitor, stationary at the ceiling")


def test_monitor_withdraws_after_a_shift() -> None:
    """Stationary for 300 audited passes (at half the ceiling), then four times the ceiling:
    withdrawn in ≥ 95 % of the seeds (99 % lower bound), within the stream."""
    rng = np.random.default_rng(12)
    after, early, delays = 0, 0, []
    for _ in range(SEEDS):
        rate = np.where(np.arange(STREAM) < SHIFT_AT, CEILING / 2, 4 * CEILING)
        at = first_withdrawal(rng.random(STREAM) < rate, CEILING, DELTA)
        early += at is not None and at <= SHIFT_AT
        if at is not None and at > SHIFT_AT:
            after += 1
            delays.append(at - SHIFT_AT)
    missed = SEEDS - after - early
    print(f"shift: {after} withdrawn after, {early} before, {missed} never of {SEEDS}")
    assert clopper_pearson_upper(missed, SEEDS, 0.01) <= 0.05, f"{missed}/{SEEDS} never withdrawn"
    assert_within_level(early, SEEDS, DELTA, "monitor before the shift")
    print(f"median delay {np.median(delays):.0f} audited passes after the shift")


def test_monitor_object_agrees_with_the_stream_function() -> None:
    rng = np.random.default_rng(13)
    for _ in range(20):
        stream = rng.random(400) < 0.12
        mon = Monitor(CEILING, DELTA)
        for failed in stream:
            mon = mon.observe(bool(failed))
        assert mon.withdrawn_at == first_withdrawal(stream, CEILING, DELTA)
    with pytest.raises(ValueError, match="ceiling and delta"):
        Monitor(0.0)
