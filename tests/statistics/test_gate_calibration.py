"""The gate's wrong-decision rates on seeded null streams, cell by cell (calibration.py has
the tolerance rule). 'No worse' is tested at a true drop equal to the margin, 'worse' at no
drop; pass/fail and continuous scores, n from min_samples up, n ratios 1:1 and 1:2,
re-runs of the live canary as scores arrive, Horvitz–Thompson weights, paired replays."""

from __future__ import annotations

import numpy as np
import pytest

from evalcore.sequences import MeanSample
from evaluator.analytics.gate import EXIT, Sides, decision_codes, gate, paired_gate
from evaluator.config.policy import RegressionPolicy
from tests.statistics.calibration import SEEDS, assert_within_level, beta_scores

# Seeded simulations are CPU-bound: on a machine loaded 10x a cell can take minutes, which is
# not a hang (the suite's 300 s timeout is there to catch hangs).
pytestmark = pytest.mark.timeout(1200)
MARGIN = 0.05
SHIPPED = RegressionPolicy()  # alpha 0.01, min_samples 10: what the gate runs with by default
NO_WORSE, WORSE = EXIT["no_worse"], EXIT["worse"]
RATES = (0.5, 0.8, 0.9, 0.97, 0.99)
SIZES = (10, 20, 30, 50, 100, 200)


def _binary_codes(
    rng: np.random.Generator, pb: float, pc: float, nb: int, nc: int, policy: RegressionPolicy
) -> np.ndarray:
    kb, kc = rng.binomial(nb, pb, SEEDS), rng.binomial(nc, pc, SEEDS)
    sides = Sides(MeanSample.from_counts(kb, nb), MeanSample.from_counts(kc, nc), paired=False)
    return decision_codes(sides, nb, nc, kb / nb - kc / nc, policy, MARGIN)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
@pytest.mark.parametrize("pb", RATES)
def test_no_worse_is_wrong_at_most_alpha_at_every_n_pass_fail(pb: float, alpha: float) -> None:
    policy = RegressionPolicy(alpha=alpha)
    rng = np.random.default_rng(int(pb * 1000) + int(alpha * 1e4))
    for n in SIZES:
        for ratio in (1, 2):
            codes = _binary_codes(rng, pb, pb - MARGIN, n * ratio, n, policy)
            cell = f"no-worse null pb={pb} n={n} ratio 1:{ratio} alpha={alpha}"
            assert_within_level(int((codes == NO_WORSE).sum()), SEEDS, alpha, cell)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
@pytest.mark.parametrize("pb", RATES)
def test_worse_is_wrong_at_most_alpha_at_every_n_pass_fail(pb: float, alpha: float) -> None:
    policy = RegressionPolicy(alpha=alpha, min_effect_mean=0.0)  # the effect bound only helps
    rng = np.random.default_rng(int(pb * 1000) + 7 + int(alpha * 1e4))
    for n in SIZES:
        for ratio in (1, 2):
            codes = _binary_codes(rng, pb, pb, n * ratio, n, policy)
            cell = f"worse null pb={pb} n={n} ratio 1:{ratio} alpha={alpha}"
            assert_within_level(int((codes == WORSE).sum()), SEEDS, alpha, cell)


@pytest.mark.parametrize(("pb", "drop", "wrong"), [
    (0.97, MARGIN, "no_worse"), (0.9, MARGIN, "no_worse"), (0.8, MARGIN, "no_worse"),
    (0.97, 0.0, "worse"), (0.9, 0.0, "worse"),
])  # fmt: skip
def test_rerunning_the_canary_every_ten_scores_keeps_the_level(
    pb: float, drop: float, wrong: str
) -> None:
    """The README invites re-runs (`--since 24h`): both versions gain 10 scores between runs,
    and the user acts on the first decision. P(first decision is the wrong one) ≤ alpha."""
    policy = RegressionPolicy(min_effect_mean=0.0) if wrong == "worse" else SHIPPED
    rng = np.random.default_rng(int(pb * 100) + int(drop * 1000))
    kb = np.zeros(SEEDS)
    kc = np.zeros(SEEDS)
    first = np.full(SEEDS, EXIT["undecided"])
    for look in range(1, 61):  # up to 600 scores a side
        kb += rng.binomial(10, pb, SEEDS)
        kc += rng.binomial(10, pb - drop, SEEDS)
        n = 10 * look
        sides = Sides(MeanSample.from_counts(kb, n), MeanSample.from_counts(kc, n), False)
        codes = decision_codes(sides, n, n, (kb - kc) / n, policy, MARGIN)
        first = np.where(first == EXIT["undecided"], codes, first)
    cell = f"canary re-run every 10 scores pb={pb} drop={drop}"
    assert_within_level(int((first == EXIT[wrong]).sum()), SEEDS, policy.alpha, cell)


@pytest.mark.parametrize("mean", [0.6, 0.85])
def test_continuous_scores_keep_the_level(mean: float) -> None:
    rng = np.random.default_rng(int(mean * 100))
    # Unequal sizes at small n, where they matter most; (100, 1:2) is left out for CI time:
    # it cost as much as the other five cells together.
    for n, ratio in ((10, 1), (10, 2), (30, 1), (30, 2), (100, 1)):
        for drop, wrong in ((MARGIN, NO_WORSE), (0.0, WORSE)):
            xb = beta_scores(rng, mean, (SEEDS, n * ratio))
            xc = beta_scores(rng, mean - drop, (SEEDS, n))
            sides = Sides(MeanSample(n * ratio, exact=False, scores=xb),
                          MeanSample(n, exact=False, scores=xc), paired=False)  # fmt: skip
            policy = RegressionPolicy(min_effect_mean=0.0)
            codes = decision_codes(sides, n * ratio, n, xb.mean(1) - xc.mean(1), policy,
                                   MARGIN)  # fmt: skip
            cell = f"continuous mean={mean} n={n} ratio 1:{ratio} drop={drop}"
            assert_within_level(int((codes == wrong).sum()), SEEDS, policy.alpha, cell)


def _weighted_side(
    rng: np.random.Generator, traffic: int, easy_pass: float, easy_rate: float, max_weight: float
) -> tuple[MeanSample, np.ndarray]:
    """One version's evaluated records: 20 % hard traces (pass 0.5) taken by a tail rule at
    p = 1, easy ones (pass `easy_pass`) sampled at `easy_rate`. Returns the HT-scaled sample,
    as counts of its four kinds of record, and each stream's Hájek mean."""
    hard = rng.binomial(traffic, 0.2, SEEDS)
    easy_kept = rng.binomial(traffic - hard, easy_rate)
    hard_pass = rng.binomial(hard, 0.5)
    easy_pass_n = rng.binomial(easy_kept, easy_pass)
    a_hard, a_easy = 1.0 / max_weight, (1.0 / easy_rate) / max_weight
    kinds = [(1.0, a_hard, hard_pass), (0.0, a_hard, hard - hard_pass),
             (1.0, a_easy, easy_pass_n), (0.0, a_easy, easy_kept - easy_pass_n)]  # fmt: skip
    x = np.stack([np.full(SEEDS, k[0]) for k in kinds], axis=1)
    a = np.stack([np.full(SEEDS, k[1]) for k in kinds], axis=1)
    counts = np.stack([k[2] for k in kinds], axis=1).astype(float)
    hajek = (a * x * counts).sum(1) / (a * counts).sum(1)
    return MeanSample(hard + easy_kept, exact=False, scores=x, scales=a, counts=counts), hajek


@pytest.mark.parametrize(("base_rate", "cand_rate"), [(0.2, 0.2), (0.5, 0.2)])
def test_weighted_streams_keep_the_level_for_the_population_mean(
    base_rate: float, cand_rate: float
) -> None:
    """Under a budget the two versions are sampled at different rates, and errors (the hard
    traces) always: the gate must decide on the population means, not the sampled ones."""
    rng = np.random.default_rng(int(base_rate * 10 + cand_rate * 100))
    floor = min(base_rate, cand_rate)
    policy = RegressionPolicy(min_effect_mean=0.0)
    easy = 0.95
    for drop, wrong in ((0.0, WORSE), (MARGIN, NO_WORSE)):
        b, hb = _weighted_side(rng, 800, easy, base_rate, 1 / floor)
        c, hc = _weighted_side(rng, 800, easy - drop / 0.8, cand_rate, 1 / floor)  # pop. drop
        codes = decision_codes(Sides(b, c, False), b.n, c.n, hb - hc, policy, MARGIN)
        cell = f"weighted rates {base_rate}/{cand_rate} drop={drop}"
        assert_within_level(int((codes == wrong).sum()), SEEDS, policy.alpha, cell)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_paired_replay_keeps_the_level_for_binary_pairs(alpha: float) -> None:
    """Pairs (baseline, candidate) of pass/fail verdicts: the drop is P(1,0) − P(0,1)."""
    rng = np.random.default_rng(int(alpha * 1e4))
    policy = RegressionPolicy(alpha=alpha, min_effect_mean=0.0)
    values = np.broadcast_to(np.array([0.0, 0.5, 1.0]), (SEEDS, 3))
    for p10, p01, wrong in ((0.08, 0.03, NO_WORSE), (0.02, 0.02, WORSE), (0.15, 0.10, NO_WORSE),
                            (0.10, 0.10, WORSE)):  # fmt: skip
        probs = [1 - p10 - p01 - 0.05, p10, p01, 0.05]
        for n in SIZES:
            kinds = rng.multinomial(n, probs, size=SEEDS)  # counts of (1,1), (1,0), (0,1), (0,0)
            counts = np.stack([kinds[:, 1], kinds[:, 0] + kinds[:, 3], kinds[:, 2]], axis=1)
            paired = MeanSample(n, exact=False, scores=values, counts=counts)
            sides = Sides(MeanSample.from_counts(0, 0), paired, True)
            drop = (kinds[:, 1] - kinds[:, 2]) / n
            codes = decision_codes(sides, n, n, drop, policy, MARGIN)
            cell = f"paired binary p10={p10} p01={p01} n={n} alpha={alpha}"
            assert_within_level(int((codes == wrong).sum()), SEEDS, alpha, cell)


def test_the_public_functions_decide_as_the_vectorised_rule() -> None:
    """`gate` and `paired_gate` (what the CLI calls) agree with `decision_codes` (what the
    cells above run) on the same data."""
    rng = np.random.default_rng(5)
    for _ in range(6):
        b = (rng.random(300) < 0.9).astype(float).tolist()
        c = (rng.random(300) < 0.75).astype(float).tolist()
        one = gate(b, c, SHIPPED, margin=MARGIN)
        sides = Sides(MeanSample.from_scores(b), MeanSample.from_scores(c), False)
        code = decision_codes(sides, 300, 300, one.drop, SHIPPED, MARGIN)
        assert one.exit_code == int(code)
    pairs = list(zip((rng.random(80) < 0.95).astype(float), (rng.random(80) < 0.5).astype(float),
                     strict=True))  # fmt: skip
    assert paired_gate(pairs, SHIPPED, margin=MARGIN).decision == "worse"
