"""Certification of a cheap stage's threshold (issue 28) on seeded synthetic strata whose true
miss rate m(t) = P(score ≥ t | the top judge fails) and fail rate among passes
q(t) = P(fail | score ≥ t) are known in closed form:

- one test at a fixed n (small n included): the certified threshold has m > alpha in at most
  delta of the seeds; independent items, and clustered items (a shared document effect makes
  misses come in clusters) through one item per cluster;
- the bound q⁺ of P(fail | passed locally): m > alpha or q > q⁺ in at most delta + delta_q;
- re-certification as labels accrue: over the whole checkpoint schedule, some checkpoint
  certifies a bad threshold in at most delta of the seeds (independent and clustered labels),
  where re-running the fixed-n test at every 10 labels does not hold the level;
- the withdrawal monitor withdraws at most delta of stationary streams and withdraws after
  an injected shift (its delay printed).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from evalcore.certification import DEFAULT_GRID, certify, max_misses
from evalcore.exact import clopper_pearson_upper
from evalcore.recertification import (
    Monitor,
    certify_at_checkpoints,
    certify_checkpoints,
    first_withdrawal,
)
from tests.statistics.calibration import SEEDS, assert_within_level

ALPHA, DELTA = 0.05, 0.1
N = NormalDist()
# Scores are sigmoid(latent): failing items' latent ~ N(FAIL_MEAN, sd²), passing ones'
# ~ N(PASS_MEAN, sd²). Then m(t) = 1 − Φ((logit t − FAIL_MEAN) / sd), exactly.
FAIL_MEAN, PASS_MEAN = -1.0, 1.0


def above(t: float, mean: float, sd: float) -> float:
    """P(sigmoid(N(mean, sd²)) ≥ t)."""
    if t <= 0.0:
        return 1.0
    if t >= 1.0:
        return 0.0
    return 1.0 - N.cdf((math.log(t / (1 - t)) - mean) / sd)


def true_miss(t: float, sd: float) -> float:
    return above(t, FAIL_MEAN, sd)


def true_fail_given_passed(t: float, fail_rate: float, sd: float = 1.0) -> float:
    f, c = fail_rate * above(t, FAIL_MEAN, sd), (1 - fail_rate) * above(t, PASS_MEAN, sd)
    return f / (f + c) if f + c > 0 else 0.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def independent_stratum(rng: np.random.Generator, n: int, fail_rate: float):
    fails = rng.random(n) < fail_rate
    latent = np.where(fails, FAIL_MEAN, PASS_MEAN) + rng.standard_normal(n)
    return sigmoid(latent), fails


# n = 50 and 100: the small samples a new stratum certifies on (a high base rate, as on XSum).
@pytest.mark.parametrize(("n", "fail_rate"), [(50, 0.95), (100, 0.6), (300, 0.3), (2000, 0.1)])
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


def clustered_stratum(rng: np.random.Generator, clusters: int, size: int = CLUSTER_SIZE):
    """A document effect shared by all answers of a cluster (a hard document is missed in
    all its answers at once); failing is likelier in some documents too."""
    doc = np.repeat(np.arange(clusters), size)
    effect = rng.standard_normal(clusters)[doc] * CLUSTER_SD
    fails = rng.random(doc.size) < 1 / (1 + np.exp(-(-1.0 + rng.standard_normal(clusters)[doc])))
    latent = (
        np.where(fails, FAIL_MEAN, PASS_MEAN) + effect + rng.standard_normal(doc.size) * ITEM_SD
    )
    return sigmoid(latent), fails, doc


CLUSTERED_SD = float(np.hypot(CLUSTER_SD, ITEM_SD))


def test_clustered_certification_misses_more_than_alpha_at_most_delta() -> None:
    """Equal cluster sizes: the cluster-uniform miss rate is the item-level one."""
    rng = np.random.default_rng(28)
    bad = certified = item_level_bad = 0
    for seed in range(SEEDS):
        scores, fails, doc = clustered_stratum(rng, 400)
        cert = certify(scores, fails, doc, alpha=ALPHA, delta=DELTA, seed=seed)
        assert cert.clusters == 400 and cert.labels == 400
        if cert.threshold is not None:
            certified += 1
            bad += true_miss(cert.threshold, CLUSTERED_SD) > ALPHA
        # Ignoring the clusters (all 2,400 items as if independent) is not exact here.
        naive = certify(scores, fails, alpha=ALPHA, delta=DELTA)
        item_level_bad += naive.threshold is not None and (
            true_miss(naive.threshold, CLUSTERED_SD) > ALPHA
        )
    assert certified > SEEDS // 2, f"only {certified}/{SEEDS} strata certified: too weak a test"
    print(f"clustered: {certified} certified, {bad} bad; clusters ignored {item_level_bad} bad")
    assert_within_level(bad, SEEDS, DELTA, "certify, one item per cluster")
    # The harness can fail, and clusters matter: treating the items as independent does not
    # hold the level on this seeded stratum.
    assert item_level_bad / SEEDS > DELTA, f"clusters ignored: {item_level_bad}/{SEEDS} bad"


def test_judge_errors_on_labels_count_against_the_certification() -> None:
    """The judge errs on most fluent hallucinations (failing answers with a high cheap score)
    and rarely elsewhere: dropping the errored labels hides exactly the misses, and the level
    breaks; counting each as failing and a miss at thresholds at or below its score
    (`unknown`) holds it, whatever the errored answers' verdicts were."""
    rng = np.random.default_rng(29)
    bad = dropped_bad = certified = 0
    for _ in range(SEEDS):
        scores, fails = independent_stratum(rng, 300, 0.3)
        hidden = np.where(fails & (scores >= 0.5), 0.5, 0.02)
        errored = rng.random(scores.size) < hidden
        cert = certify(scores, fails, alpha=ALPHA, delta=DELTA, unknown=errored)
        if cert.threshold is not None:
            certified += 1
            bad += true_miss(cert.threshold, 1.0) > ALPHA
            assert cert.errored == int(errored.sum())
        kept = ~errored
        dropped = certify(scores[kept], fails[kept], alpha=ALPHA, delta=DELTA)
        dropped_bad += dropped.threshold is not None and (true_miss(dropped.threshold, 1.0) > ALPHA)
    assert certified > SEEDS // 2, f"only {certified}/{SEEDS} strata certified: too weak a test"
    print(f"judge errors: {certified} certified, {bad} bad; errored labels dropped {dropped_bad}")
    assert_within_level(bad, SEEDS, DELTA, "certify with errored labels counted against it")
    assert dropped_bad / SEEDS > 2 * DELTA, f"dropped errors: only {dropped_bad}/{SEEDS} bad"


def test_an_errored_label_is_a_miss_above_its_score_and_out_of_the_test_below() -> None:
    """Least favourable per threshold: 45 failing labels with no miss certify; one errored
    label scoring 0.9 is then a miss at every threshold <= 0.9 (none certifiable there), and
    one scoring 0.1 changes nothing above 0.1 (it is not counted as a failing label there)."""
    fail_scores, pass_scores = [0.2] * 45, [0.95] * 200
    base = certify(fail_scores + pass_scores, [True] * 45 + [False] * 200)
    assert base.threshold == 0.201 and base.failing == 45 and base.misses == 0
    high = certify([*fail_scores, *pass_scores, 0.9], [True] * 45 + [False] * 201,
                   unknown=[False] * 245 + [True])  # fmt: skip
    assert high.threshold == 0.901 and high.errored == 1
    low = certify([*fail_scores, *pass_scores, 0.1], [True] * 45 + [False] * 201,
                  unknown=[False] * 245 + [True])  # fmt: skip
    assert low.threshold == base.threshold and low.failing == 45


# --- P(fail | passed locally) --------------------------------------------------------------


# β near the median q⁺ of each cell, so that the condition keeps some strata and refuses others.
@pytest.mark.parametrize(("n", "fail_rate", "beta"), [(1000, 0.9, 0.5), (500, 0.3, 0.05)])
def test_fail_given_passed_bound_holds_jointly_at_delta_plus_its_level(
    n: int, fail_rate: float, beta: float
) -> None:
    """P(m > alpha or q > q⁺) ≤ delta + delta_q (= 2 delta by default); with the optional
    condition β, what is certified has q ≤ β but in the same share. The plain
    Clopper–Pearson bound on the passed labels at the (data-chosen) threshold is printed."""
    rng = np.random.default_rng(n + 7)
    wrong = certified = plain_wrong = gated_wrong = gated = above_bound = 0
    for _ in range(SEEDS):
        scores, fails = independent_stratum(rng, n, fail_rate)
        cert = certify(scores, fails, alpha=ALPHA, delta=DELTA)
        if cert.threshold is None:
            continue
        certified += 1
        t, bound = cert.threshold, cert.fail_given_passed_bound
        assert bound is not None and cert.fail_given_passed_delta == DELTA
        q = true_fail_given_passed(t, fail_rate)
        wrong += true_miss(t, 1.0) > ALPHA or q > bound
        above_bound += q > bound
        passed = scores >= t
        plain = clopper_pearson_upper(int((fails & passed).sum()), int(passed.sum()), DELTA)
        plain_wrong += q > plain
        kept = certify(scores, fails, alpha=ALPHA, delta=DELTA, max_fail_given_passed=beta)
        assert kept.certified == (bound <= beta)
        if kept.certified:
            gated += 1
            gated_wrong += true_miss(t, 1.0) > ALPHA or q > beta
    assert certified > SEEDS // 2, f"only {certified}/{SEEDS} certified"
    assert SEEDS // 10 < gated < certified - SEEDS // 10, f"β kept {gated}: too weak a cell"
    print(f"q bound n={n} π={fail_rate}: {certified} certified, {wrong} wrong ({above_bound} with q > "
          f"q⁺; plain CP at t: {plain_wrong} with q above it); β={beta:.2f}: {gated} kept, {gated_wrong} wrong")  # fmt: skip
    assert_within_level(wrong, SEEDS, 2 * DELTA, f"q⁺ n={n} fail rate {fail_rate}")
    assert_within_level(gated_wrong, SEEDS, 2 * DELTA, f"β-gated n={n} fail rate {fail_rate}")


# --- re-certification as labels accrue -----------------------------------------------------

STREAM_LABELS = 1600  # checkpoints at 100, 200, 400, 800, 1600 labels


def test_checkpoint_schedule_certifies_a_bad_threshold_at_most_delta_over_all_looks() -> None:
    rng = np.random.default_rng(40)
    t_bad = max(t for t in DEFAULT_GRID if true_miss(t, 1.0) > ALPHA)  # strictest bad t
    looks = np.arange(10, STREAM_LABELS + 1, 10)
    k_max = np.array([max_misses(f, ALPHA, DELTA) for f in range(STREAM_LABELS + 1)])
    bad = rerun_bad = ever = 0
    for _ in range(SEEDS):
        scores, fails = independent_stratum(rng, STREAM_LABELS, 0.3)
        runs = certify_checkpoints(scores, fails, alpha=ALPHA, delta=DELTA)
        assert [c.labels for c in runs] == [100, 200, 400, 800, 1600]
        ever += any(c.certified for c in runs)
        bad += any(c.threshold is not None and true_miss(c.threshold, 1.0) > ALPHA for c in runs)
        # The same test at delta re-run every 10 labels: a look certifies t_bad (or looser)
        # iff the misses at t_bad are within max_misses of the failing labels so far.
        f_at = np.cumsum(fails)[looks - 1]
        miss_at = np.cumsum(fails & (scores >= t_bad))[looks - 1]
        rerun_bad += bool((miss_at <= k_max[f_at]).any())
    assert ever > SEEDS // 2, f"only {ever}/{SEEDS} streams ever certified"
    print(f"schedule: {ever} certified at some checkpoint, {bad} bad; re-run every 10 labels "
          f"at delta: {rerun_bad} bad of {SEEDS}")  # fmt: skip
    assert_within_level(bad, SEEDS, DELTA, "checkpoint schedule, any checkpoint")
    assert rerun_bad / SEEDS > 1.5 * DELTA, f"re-runs at delta bad in only {rerun_bad}/{SEEDS}"


def test_checkpoint_schedule_with_clustered_labels() -> None:
    """Clusters of 3 arrive whole; checkpoints count clusters (100, 200, 400)."""
    rng = np.random.default_rng(41)
    bad = ever = 0
    for seed in range(SEEDS):
        scores, fails, doc = clustered_stratum(rng, 400, size=3)
        runs = certify_checkpoints(scores, fails, doc, alpha=ALPHA, delta=DELTA, seed=seed)
        assert [c.clusters for c in runs] == [100, 200, 400]
        ever += any(c.certified for c in runs)
        bad += any(
            c.threshold is not None and true_miss(c.threshold, CLUSTERED_SD) > ALPHA for c in runs
        )
    assert ever > SEEDS // 2, f"only {ever}/{SEEDS} streams ever certified"
    print(f"schedule, clustered: {ever} certified at some checkpoint, {bad} bad of {SEEDS}")
    assert_within_level(bad, SEEDS, DELTA, "checkpoint schedule, one label per cluster")


def test_certify_at_checkpoints_answers_the_same_between_checkpoints() -> None:
    rng = np.random.default_rng(42)
    scores, fails = independent_stratum(rng, 800, 0.3)
    at_400 = certify_at_checkpoints(scores[:400], fails[:400])
    assert at_400.checkpoint == 2 and at_400.delta == DELTA / 8 and at_400.family_delta == DELTA
    for n in (400, 450, 799):
        assert certify_at_checkpoints(scores[:n], fails[:n]) == at_400
    # Before the first checkpoint nothing is certified, and the need is a checkpoint's size.
    early = certify_at_checkpoints(scores[:60], fails[:60])
    assert early.threshold is None and early.labels_needed in (100, 200, 400, 800, 1600)


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
    """The worst stationary case: the fail rate among passed traces sits at the ceiling. The
    same cell covers `Monitor.for_misses` (ceiling = alpha = 0.05: the miss rate among drawn
    failing traces sits at alpha)."""
    assert CEILING == ALPHA
    rng = np.random.default_rng(11)
    withdrawn = sum(first_withdrawal(rng.random(STREAM) < CEILING, CEILING, DELTA) is not None
                    for _ in range(SEEDS))  # fmt: skip
    print(f"stationary: {withdrawn}/{SEEDS} withdrawn")
    assert_within_level(withdrawn, SEEDS, DELTA, "monitor, stationary at the ceiling")


@pytest.mark.parametrize("factor", [2, 4])
def test_monitor_withdraws_after_a_shift(factor: int) -> None:
    """Stationary for 300 audited passes (at half the ceiling), then `factor` times the
    ceiling: withdrawn in ≥ 95 % of the seeds (99 % upper bound of the misses), within the
    stream; the delay in audited passes is printed."""
    rng = np.random.default_rng(12 + factor)
    after, early, delays = 0, 0, []
    for _ in range(SEEDS):
        rate = np.where(np.arange(STREAM) < SHIFT_AT, CEILING / 2, factor * CEILING)
        at = first_withdrawal(rng.random(STREAM) < rate, CEILING, DELTA)
        early += at is not None and at <= SHIFT_AT
        if at is not None and at > SHIFT_AT:
            after += 1
            delays.append(at - SHIFT_AT)
    missed = SEEDS - after - early
    print(f"shift ×{factor}: {after} withdrawn after, {early} before, {missed} never of {SEEDS}; "
          f"delay median {np.median(delays):.0f}, 90th pct {np.percentile(delays, 90):.0f} "
          "audited passes")  # fmt: skip
    assert clopper_pearson_upper(missed, SEEDS, 0.01) <= 0.05, f"{missed}/{SEEDS} never withdrawn"
    assert_within_level(early, SEEDS, DELTA, "monitor before the shift")


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
    scores, fails = independent_stratum(rng, 400, 0.3)
    cert = certify(scores, fails, alpha=ALPHA, delta=DELTA)
    assert Monitor.for_misses(cert) == Monitor(ALPHA, DELTA)
    with pytest.raises(ValueError, match="only a certification"):
        Monitor.for_misses(certify(scores[:10], fails[:10]))
