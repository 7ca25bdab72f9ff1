"""The regression alert's e-process (a new prompt version against the one it replaced) on
seeded null streams: false alerts ≤ alpha over the whole stream, however often it is
re-checked, with a baseline of its own noise, with Horvitz–Thompson weights; and judge
drift against the epoch's reference run."""

from __future__ import annotations

import random

import numpy as np
import pytest

from evalcore.intervals import GroupStats
from evaluator.analytics.regression import advance, start_sequential
from evaluator.config.policy import RegressionPolicy
from judges.drift import paired_drift_exact
from tests.statistics.calibration import SEEDS, assert_within_level

SHIPPED = RegressionPolicy()  # alpha 0.01, min_samples 10
STREAM = 300  # scores of the new version, each folded in as it arrives


@pytest.mark.parametrize(("p", "baseline_n"), [(0.8, 50), (0.97, 400)])
def test_a_new_version_as_good_as_the_old_alerts_at_most_alpha(p: float, baseline_n: int) -> None:
    """The baseline is itself a sample (its mean is estimated, not known): the reference is
    its anytime lower bound at alpha/2, the e-process needs 2/alpha — alpha in all."""
    policy = RegressionPolicy(min_effect_mean=0.0, min_effect_pass_rate=0.0)
    rng = np.random.default_rng(int(p * 100) + baseline_n)
    alarms = 0
    for _ in range(SEEDS):
        base = GroupStats.from_scores((rng.random(baseline_n) < p).astype(float).tolist())
        stream = (rng.random(STREAM) < p).astype(float).tolist()
        state = advance(start_sequential(base, policy, known_start=True), stream, policy)
        alarms += state.alarm_at is not None
    assert_within_level(alarms, SEEDS, policy.alpha, f"e-process null p={p} base n={baseline_n}")


def test_weighted_stream_with_a_rate_change_alerts_at_most_alpha() -> None:
    """Under a budget the new version's easy traces are sampled at 0.2 while the tail rule
    takes every hard one: its evaluated records look worse, its traffic is not."""
    policy = RegressionPolicy(min_effect_mean=0.0, min_effect_pass_rate=0.0)
    rng = np.random.default_rng(17)
    population = 0.2 * 0.5 + 0.8 * 0.95
    alarms = 0
    for _ in range(SEEDS):
        base = GroupStats.from_scores((rng.random(400) < population).astype(float).tolist())
        hard = rng.random(STREAM) < 0.2
        p = np.where(hard, 1.0, 0.2)
        kept = rng.random(STREAM) < p
        x = (rng.random(STREAM) < np.where(hard, 0.5, 0.95)).astype(float)
        state = advance(start_sequential(base, policy, known_start=True, max_weight=5.0),
                        x[kept].tolist(), policy, p[kept].tolist())  # fmt: skip
        alarms += state.alarm_at is not None
    assert_within_level(alarms, SEEDS, policy.alpha, "weighted e-process null")


# --- judge drift --------------------------------------------------------------------------------

ITEMS = 200  # the shipped [anchors] max_items: 100 positive, 100 negative
NOISE = 0.03  # a judge at temperature 0 still changes 3 % of its verdicts between runs


def _run(latent: list[float], y: list[bool], accuracy: float, rng: random.Random) -> list[bool]:
    """One anchor run: the judge is right on item i when its difficulty is below the accuracy
    (the same items stay hard across runs), with independent run-to-run noise."""
    out = []
    for u, label in zip(latent, y, strict=True):
        right = (u < accuracy) != (rng.random() < NOISE)
        out.append(label if right else not label)
    return out


def _anchors(seed: int) -> tuple[random.Random, list[float], list[bool]]:
    rng = random.Random(seed)
    return rng, [rng.random() for _ in range(ITEMS)], [i < ITEMS // 2 for i in range(ITEMS)]


def test_an_unchanged_judge_alarms_at_most_alpha_per_run() -> None:
    alpha = 0.01
    alarms = 0
    for seed in range(SEEDS):
        rng, latent, y = _anchors(seed)
        reference = _run(latent, y, 0.85, rng)
        now = _run(latent, y, 0.85, rng)
        alarms += paired_drift_exact(y, reference, now, alpha=alpha, min_drop=0.0).p_value < alpha
    assert_within_level(alarms, SEEDS, alpha, "judge drift null, one run")


def test_a_year_of_weekly_runs_of_an_unchanged_judge_has_at_most_one_false_alarm() -> None:
    """52 weekly runs against the epoch's first: the expected count is ≤ 52·alpha = 0.52."""
    counts = []
    for seed in range(200):
        rng, latent, y = _anchors(10_000 + seed)
        reference = _run(latent, y, 0.85, rng)
        counts.append(sum(
            paired_drift_exact(y, reference, _run(latent, y, 0.85, rng)).alarm
            for _ in range(52)
        ))  # fmt: skip
    assert np.mean(counts) <= 52 * 0.01, f"mean false alarms per epoch-year {np.mean(counts):.2f}"


@pytest.mark.parametrize("path", ["gradual", "step"])
def test_a_drift_of_the_same_total_is_caught_on_either_path(path: str) -> None:
    """0.85 → 0.71: weekly steps of 0.02, or one step. Alerted within 2 runs of the drift
    reaching its total in ≥ 90 % of 30 seeds (the drift issue's target)."""
    caught = 0
    for seed in range(30):
        rng, latent, y = _anchors(20_000 + seed)
        reference = _run(latent, y, 0.85, rng)
        weeks = 7 if path == "gradual" else 1
        accuracy = [0.85 - 0.14 * min(1.0, w / weeks) for w in range(1, weeks + 3)]
        alarm_week = next(
            (w for w, acc in enumerate(accuracy, start=1)
             if paired_drift_exact(y, reference, _run(latent, y, acc, rng)).alarm),
            None,
        )  # fmt: skip
        caught += alarm_week is not None and alarm_week <= weeks + 2
    assert caught >= 27, f"{path}: caught {caught} of 30"


@pytest.mark.parametrize("mean", [0.6, 0.9])
def test_the_fixed_window_test_on_continuous_scores_keeps_its_level(mean: float) -> None:
    """`compare_stats` on continuous scores pages at p ≤ alpha (detector = "window"):
    the bounded-mean test behind it holds alpha at every n, constant groups included."""
    from evalcore.sequences import MeanSample
    from evaluator.analytics.stats import bounded_drop
    from tests.statistics.calibration import beta_scores

    rng = np.random.default_rng(int(mean * 10))
    for n in (10, 30, 100):
        xb, xc = beta_scores(rng, mean, (SEEDS, 2 * n)), beta_scores(rng, mean, (SEEDS, n))
        b = MeanSample.from_moments(2 * n, xb.sum(1), (xb * xb).sum(1))
        c = MeanSample.from_moments(n, xc.sum(1), (xc * xc).sum(1))
        false = int(bounded_drop(b, c, SHIPPED.alpha).sum())
        assert_within_level(false, SEEDS, SHIPPED.alpha, f"fixed window mean={mean} n={n}")


@pytest.mark.parametrize("traffic", [50, 200, 1000])
def test_weighted_trend_intervals_cover_the_population_mean(traffic: int) -> None:
    """A trend bucket's 95 % interval (Hájek mean, Wilson on the effective sample size) over
    records sampled at two rates, the low-scoring stratum always: it must cover the mean of
    *all* traces at least 95 % of the time (failing when the 99 % upper bound of its coverage
    is below 0.95). An approximation, not exact: this is where it is checked."""
    from evalcore.exact import clopper_pearson_upper
    from evalcore.weights import WeightedStats

    rng = np.random.default_rng(traffic)
    population = 0.2 * 0.5 + 0.8 * 0.95
    covered = 0
    for _ in range(SEEDS):
        hard = rng.random(traffic) < 0.2
        p = np.where(hard, 1.0, 0.2)
        kept = rng.random(traffic) < p
        x = (rng.random(traffic) < np.where(hard, 0.5, 0.95)).astype(float)
        lo, hi = WeightedStats.from_scores(list(zip(x[kept], p[kept], strict=True))).mean_ci(0.95)
        covered += lo <= population <= hi
    assert clopper_pearson_upper(covered, SEEDS, 0.01) >= 0.95, f"coverage {covered / SEEDS}"
