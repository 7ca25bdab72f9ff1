"""Certify a cheap stage's pass threshold on labelled data, or say it cannot be certified
(re-certifying as labels accrue and withdrawing on drift: `evalcore.recertification`).

The question. A cascade lets a cheap stage (the local scorer, or a cheaper judge) pass an
answer without asking the top judge when its score s is at least a threshold t. The harm is a
*miss*: an answer the top judge (or a human) would fail, passed by the cheap stage. Its rate
on a stratum of traffic is m(t) = P(s ≥ t | the top judge fails), nonincreasing in t.

The guarantee of `certify`. Given labelled calibration items of one stratum (score s_i,
verdict fail_i), it returns the loosest threshold t of a grid fixed in advance such that

    P(m(t) ≤ alpha) ≥ 1 − delta      over the calibration draw,

for traffic exchangeable with the draw (at cluster level when clusters are given); or None
when no grid threshold can be certified (then the cascade must ask the judge on everything).

How. Fixed-sequence testing (as in Jung et al. 2024, "Trust or Escalate"): the grid is tested
from the strictest threshold to the loosest, each at level delta, and testing stops at the
first threshold whose null "m(t) > alpha" is not rejected. No multiplicity correction is due:
the nulls are nested (m grows as t loosens), so certifying a bad threshold requires rejecting
the first true null of the sequence, which happens with probability ≤ delta. Each test is
exact: given the number F of failing labelled items, the misses among them are
Binomial(F, m(t)) when the items are independent draws, so "m(t) > alpha" is rejected iff
P(Binomial(F, alpha) ≤ misses) ≤ delta (the one-sided Clopper–Pearson upper bound at delta is
≤ alpha). As misses(t) only grows as t loosens, the sequence stops exactly at the first grid
threshold with more than `max_misses(F)` misses; `certify` finds it directly.

Clusters. Answers of one document or session are not independent (one hard document makes
several misses at once), so a binomial bound over all their items is not exact. With
`clusters`, one item per cluster is kept, chosen uniformly at random (the `seed`, independent
of scores and verdicts), and only those enter the test. Why this over a cluster-level betting
bound on Σ misses / Σ failures: the kept items are independent draws from "a uniformly drawn
cluster, a uniformly drawn item in it", so the test stays exactly binomial and needs ~45
failing clusters at alpha 0.05 / delta 0.1, where a betting bound on cluster sums, scaled by
the largest cluster size, needs several times more clusters. The price: the guarantee is for
that cluster-uniform traffic (each item weighted 1/its cluster's size), which equals the
item-level miss rate when clusters have equal sizes or their miss rates do not depend on size;
and the labels of the other items in a cluster are not used. Draw calibration labels one per
cluster to pay for no unused labels.

Labels the judge could not give. A calibration item whose judge call failed (an error record)
has no verdict, and dropping it biases the miss rate low whenever the judge errs more on the
answers it would fail. `unknown` marks such items; each is counted, at every threshold t, in
the way that makes certifying t hardest: as a failing item and a miss when its cheap score is
≥ t, as passing (out of the test) when below — imputing "fail" below t would add a failing
label with no miss, making t easier to certify. The test at t is then the least favourable over
every verdict the errored items could have had, so the guarantee holds whatever their true
verdicts (fixed-sequence testing needs only that each test is valid; misses and the failing
count now grow together as t loosens, so each threshold is checked against its own bound).
For P(fail | passed) the errored items count as failing in P(fail)'s bound and, below t, as
clean answers not passed in c's: both directions raise q⁺. The price: each errored item with a
high cheap score costs a miss.

P(fail | passed locally). m ≤ alpha bounds the share of failing answers passed, not the
share of passed answers that fail, q(t) = P(fail | s ≥ t) = π·m / (π·m + (1 − π)·c), with
π = P(fail) and c = P(s ≥ t | pass). When almost everything fails (FRANK XSum: π ≈ 0.93) a
certified threshold can pass a little traffic of which most is hallucinated. `certify`
reports an upper bound q⁺ of q(t) at the certified t: q is increasing in m and π and
decreasing in c, so q⁺ plugs in m ≤ alpha (the certificate itself), a Clopper–Pearson upper
bound of π and a lower bound of c, each at level delta_q / 2 (delta_q defaults to delta). The
lower bound of c is exact although t was chosen from the data: t depends only on which labels
fail and on the failing labels' scores, and given those the passing labels' scores are
independent draws from P(s | pass). Hence P(m(t) ≤ alpha and q(t) ≤ q⁺) ≥ 1 − delta − delta_q.
(The plain Clopper–Pearson bound on the passed labels' fail share at t is not exact: t is
the loosest threshold whose observed misses stayed small, so the misses at t are optimistic;
on the calibration suite's strata its coverage stayed near its level all the same.)
`max_fail_given_passed` = β (off by default) turns the bound into a second condition: the
certification stands only when q⁺ ≤ β, else nothing is certified (the judge decides all);
jointly P(m ≤ alpha and q ≤ β for what is certified) ≥ 1 − delta − delta_q. What it costs:
the joint confidence drops from 1 − delta to 1 − delta − delta_q; it never searches for a
stricter threshold meeting β (that needs a bound uniform over thresholds), so a stratum whose
loosest certified t fails β is not decided at all; and q⁺ ≥ alpha·π⁺/(alpha·π⁺ + 1 − π⁺) even
at c = 1, so a β below that cannot be met (β = 0.2 at alpha 0.05 needs π⁺ ≤ 0.83).

Re-certification at checkpoints as labels accrue, and withdrawal of a certification by
monitors on audited traffic: `evalcore.recertification`.

    >>> cert = certify([0.95] * 60 + [0.2] * 40 + [0.9] * 100, [False] * 60 + [True] * 40
    ...                + [False] * 100, alpha=0.1, delta=0.1)
    >>> cert.threshold, cert.failing, cert.misses, round(cert.decided_share, 2)
    (0.201, 40, 0, 0.8)
    >>> certify([0.9] * 10, [True] * 10).threshold is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.exact import betainc, clopper_pearson_lower, clopper_pearson_upper

# A fixed grid (never chosen from the data): 1.000, 0.999, …, 0.000, strictest first.
DEFAULT_GRID: tuple[float, ...] = tuple(round(1.0 - i / 1000, 3) for i in range(1001))
LABELS_CAP = 10_000_000  # `labels_needed` reports None beyond this


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) ≤ k), exactly, through the incomplete beta."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return betainc(n - k, k + 1, 1.0 - p)


# Pure and asked again and again with the same counts as labels accrue (and in simulations).
_cp_upper = lru_cache(maxsize=65536)(clopper_pearson_upper)
_cp_lower = lru_cache(maxsize=65536)(clopper_pearson_lower)


@lru_cache(maxsize=65536)  # pure; re-certifying as labels accrue asks the same F again
def max_misses(failing: int, alpha: float, delta: float) -> int:
    """The most misses among `failing` independent failing items with which "m > alpha" is
    still rejected at level delta (−1: none, the sample is too small to certify anything).

    >>> max_misses(44, 0.05, 0.1), max_misses(45, 0.05, 0.1), max_misses(200, 0.05, 0.1)
    (-1, 0, 5)
    """
    lo, hi = -1, failing  # invariant: cdf(lo) ≤ delta (cdf(−1) = 0), cdf(hi) > delta or hi = n
    if binomial_cdf(failing, failing, alpha) <= delta:
        return failing
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if binomial_cdf(mid, failing, alpha) <= delta else (lo, mid)
    return lo


@dataclass(frozen=True)
class Certification:
    """The outcome of `certify` for one stratum (see the module docstring for the guarantee).

    threshold: the certified pass threshold (score ≥ threshold passes without the judge), or
    None: none can be certified, the judge decides everything.
    labels / failing / clusters: the labelled items the test used (one per cluster when
    clusters were given), the failing ones among them, the clusters they came from.
    misses: failing items at or above the threshold. miss_bound: the Clopper–Pearson upper
    bound of m at the threshold, level delta (≤ alpha when certified).
    decided_share: the share of the stratum's items with score ≥ threshold (what the cheap
    stage decides). fail_given_passed: the labels' share failing among those (a point estimate
    of P(fail | passed locally)). labels_needed: when not certified, the labels (at this
    draw's design) needed at the observed rates, see `labels_needed`; needed_for is the
    threshold that estimate is for.
    """

    threshold: float | None
    alpha: float
    delta: float
    labels: int
    failing: int
    clusters: int | None
    misses: int
    miss_bound: float
    decided_share: float
    fail_given_passed: float | None
    labels_needed: int | None = None
    needed_for: float | None = None
    fail_given_passed_bound: float | None = None
    fail_given_passed_delta: float | None = None
    max_fail_given_passed: float | None = None
    checkpoint: int | None = None
    family_delta: float | None = None
    errored: int = 0  # labels with no verdict (`unknown`), counted least favourably

    @property
    def certified(self) -> bool:
        return self.threshold is not None


def plain_ids(clusters: Sequence[object] | npt.NDArray[np.generic]) -> Sequence[object]:
    """Python values (numpy scalars hash ~10x slower)."""
    return clusters.tolist() if isinstance(clusters, np.ndarray) else clusters


def one_per_cluster(
    clusters: Sequence[object] | npt.NDArray[np.generic], seed: int = 0
) -> np.ndarray:
    """Indices of one item per cluster, drawn uniformly within each (independent of the data)."""
    groups: dict[object, list[int]] = {}
    for i, c in enumerate(plain_ids(clusters)):
        groups.setdefault(c, []).append(i)
    u = np.random.default_rng(seed).random(len(groups))
    return np.array(
        sorted(g[int(x * len(g))] for g, x in zip(groups.values(), u, strict=True)), dtype=int
    )


def labels_needed(
    failing_share: float, miss_rate: float, alpha: float, delta: float, now: int = 0
) -> int | None:
    """Labels needed to certify a threshold whose observed miss rate among failing items is
    `miss_rate`, when a share `failing_share` of labels fail — assuming both rates stay as
    observed (a projection, not a promise). None when it cannot be reached (miss rate ≥ alpha,
    no failing labels) or exceeds LABELS_CAP.

    >>> labels_needed(0.5, 0.0, 0.05, 0.1)
    90
    """
    if failing_share <= 0 or miss_rate >= alpha:
        return None

    def ok(f: int) -> bool:
        return max_misses(f, alpha, delta) >= math.floor(miss_rate * f)

    f = 1
    while not ok(f):  # doubling, then bisection (ok is monotone up to floor() steps)
        f *= 2
        if f / failing_share > LABELS_CAP:
            return None
    lo, hi = f // 2, f
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return max(math.ceil(hi / failing_share), now)


def fail_given_passed_bound(
    labels: int,
    failing: int,
    clean_passed: int,
    alpha: float,
    level: float,
    clean: int | None = None,
) -> float:
    """q⁺: the upper bound of P(fail | s ≥ t) given m(t) ≤ alpha (module docstring), from
    `labels` labelled items of which `failing` fail and `clean_passed` pass with s ≥ t (out of
    `clean` passing items, default labels − failing); the bounds of P(fail) and
    P(s ≥ t | pass) each at level/2.

    >>> round(fail_given_passed_bound(1000, 100, 400, 0.05, 0.1), 3)
    0.016
    """
    p_fail = _cp_upper(failing, labels, level / 2) if labels else 1.0
    clean = labels - failing if clean is None else clean
    c_low = _cp_lower(clean_passed, clean, level / 2) if clean else 0.0
    worst = alpha * p_fail
    return 1.0 if worst + (1 - p_fail) * c_low <= 0 else worst / (worst + (1 - p_fail) * c_low)


def certify(
    scores: npt.ArrayLike,
    fails: npt.ArrayLike,
    clusters: Sequence[object] | npt.NDArray[np.generic] | None = None,
    *,
    alpha: float = 0.05,
    delta: float = 0.1,
    grid: Sequence[float] = DEFAULT_GRID,
    stratum_scores: npt.ArrayLike | None = None,
    seed: int = 0,
    max_fail_given_passed: float | None = None,
    fail_given_passed_delta: float | None = None,
    unknown: npt.ArrayLike | None = None,
) -> Certification:
    """Certify the loosest threshold of `grid` (ordered strictest first, fixed in advance)
    with P(m ≤ alpha) ≥ 1 − delta over the calibration draw (module docstring: assumptions).

    `scores`/`fails`: the cheap stage's score and the top judge's (or a human's) verdict per
    labelled item, drawn uniformly from the stratum. `clusters`: a cluster id per item (one
    item per cluster is then used). `stratum_scores`: scores of all the stratum's traffic for
    the decided share (default: the labelled items' scores). `max_fail_given_passed` (β, off
    by default): certify only when the bound q⁺ of P(fail | passed) is ≤ β, at level
    `fail_given_passed_delta` (default delta); jointly valid at 1 − delta − that level.
    `unknown`: items with no verdict (the judge erred; their `fails` is ignored), counted at
    each threshold as failing and a miss when their score is ≥ it, else as passing (module
    docstring: the least favourable imputation, so the guarantee holds whatever they were).
    """
    if not (0 < alpha < 1 and 0 < delta < 1):
        raise ValueError("alpha and delta must lie strictly between 0 and 1")
    s, y = np.asarray(scores, float), np.asarray(fails, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("one verdict per score")
    u = np.zeros(s.shape, bool) if unknown is None else np.asarray(unknown, bool)
    if u.shape != s.shape:
        raise ValueError("one unknown flag per score")
    y = y & ~u  # known fails only
    if list(grid) != sorted(grid, reverse=True):
        raise ValueError("the grid must be ordered strictest (largest) first")
    q_delta = delta if fail_given_passed_delta is None else fail_given_passed_delta
    n_clusters = None
    if clusters is not None:
        if len(clusters) != s.size:
            raise ValueError("one cluster id per score")
        keep = one_per_cluster(clusters, seed)
        s, y, u, n_clusters = s[keep], y[keep], u[keep], len(keep)
    failing = np.sort(s[y])[::-1]  # failing items' scores, highest first
    errored = np.sort(s[u])[::-1]
    g = np.asarray(grid, float)
    above = np.searchsorted(-errored, -g, side="right")  # errored items ≥ each threshold
    # Per threshold: failing items (known fails + errored above it) and misses among them.
    fail_at = failing.size + above
    misses = np.searchsorted(-failing, -g, side="right") + above
    sizes, where = np.unique(fail_at, return_inverse=True)
    k_max = np.array([max_misses(int(n), alpha, delta) for n in sizes])[where]
    ok = misses <= k_max
    first_bad = int(np.argmin(ok)) if not ok.all() else len(g)
    threshold = float(g[first_bad - 1]) if first_bad > 0 else None
    traffic = s if stratum_scores is None else np.asarray(stratum_scores, float)
    common: dict[str, Any] = {
        "fail_given_passed_delta": q_delta,
        "max_fail_given_passed": max_fail_given_passed,
    }
    common["errored"] = int(u.sum())
    if threshold is not None:
        m, f = int(misses[first_bad - 1]), int(fail_at[first_bad - 1])
        passed = s >= threshold
        decided = float((traffic >= threshold).mean()) if traffic.size else 0.0
        fgp = float((y | u)[passed].mean()) if passed.any() else None
        bound = _cp_upper(m, f, delta) if f else 1.0
        # Errored items raise both bounds: failing in P(fail)'s, clean and not passed in c's.
        q_up = fail_given_passed_bound(
            int(s.size),
            failing.size + int(u.sum()),
            int((passed & ~y & ~u).sum()),
            alpha,
            q_delta,
            clean=int(s.size) - f,
        )
        if max_fail_given_passed is None or q_up <= max_fail_given_passed:
            return Certification(
                threshold,
                alpha,
                delta,
                int(s.size),
                f,
                n_clusters,
                m,
                bound,
                decided,
                fgp,
                fail_given_passed_bound=q_up,
                **common,
            )
        return Certification(
            None,
            alpha,
            delta,
            int(s.size),
            f,
            n_clusters,
            m,
            bound,
            0.0,
            fgp,
            None,
            threshold,
            q_up,
            **common,
        )
    # None certifiable: project the labels needed at the fewest observed misses (the need
    # grows with the miss rate), for the loosest threshold with that many that passes any item.
    best: tuple[int, float] | None = None
    eligible = np.flatnonzero(g <= s.max()) if s.size else np.array([], int)
    if eligible.size and fail_at[eligible].max():
        fewest = int(misses[eligible].min())
        loosest = int(eligible[misses[eligible] == fewest].max())
        f = int(fail_at[loosest])
        need = labels_needed(f / s.size, fewest / f, alpha, delta, int(s.size)) if f else None
        best = (need, float(g[loosest])) if need is not None else None
    m0 = int(misses[0]) if g.size else 0
    f0 = int(fail_at[0]) if g.size else failing.size
    return Certification(
        None,
        alpha,
        delta,
        int(s.size),
        f0,
        n_clusters,
        m0,
        _cp_upper(m0, f0, delta) if f0 else 1.0,
        0.0,
        None,
        best[0] if best else None,
        best[1] if best else None,
        **common,
    )
