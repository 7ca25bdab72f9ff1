"""Exact finite-sample tools (pure, stdlib only): the incomplete beta, Clopper–Pearson
bounds and the exact sign-flip tail of a paired balanced-accuracy change.

    >>> round(clopper_pearson_lower(97, 100, 0.01), 4)
    0.903
    >>> round(clopper_pearson_upper(0, 10, 0.05), 4)
    0.2589
"""

from __future__ import annotations

import math


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean
        return 1.0 - betainc(b, a, 1.0 - x)
    log_front = (
        a * math.log(x)
        + b * math.log1p(-x)
        - math.log(a)
        - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return math.exp(log_front) * f


def _beta_quantile(q: float, a: float, b: float) -> float:
    """x with I_x(a, b) = q: Newton steps on the beta density, kept inside the bracket that
    each evaluation shrinks (a bisection step whenever Newton leaves it); ~8 evaluations."""
    lo, hi = 0.0, 1.0
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    x = a / (a + b)
    for _ in range(200):
        f = betainc(a, b, x) - q
        lo, hi = (x, hi) if f < 0 else (lo, x)
        density = math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - log_beta)
        nxt = x - f / density if density > 0 else -1.0
        if not lo < nxt < hi:
            nxt = (lo + hi) / 2
        if abs(nxt - x) <= 1e-14 * x or hi - lo <= 1e-16:
            return nxt
        x = nxt
    return x


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided exact lower bound of a binomial proportion: P(p < bound) ≤ alpha at this n."""
    return 0.0 if k <= 0 else _beta_quantile(alpha, k, n - k + 1)


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided exact upper bound of a binomial proportion: P(p > bound) ≤ alpha at this n."""
    return 1.0 if k >= n else _beta_quantile(1 - alpha, k + 1, n - k)


def _half_binomial(m: int) -> list[float]:
    return [
        math.exp(math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) - m * math.log(2))
        for i in range(m + 1)
    ]


def sign_flip_tail(changes: list[tuple[int, int, int]], observed: float) -> float:
    """P(T ≥ observed) for T = Σ_c (right_before_c − right_now_c) / (n_c · classes) under
    "the runs are exchangeable": each item whose verdict changed is equally likely to have
    changed either way, independently (the exact McNemar null, one term per class).

    `changes` holds per class (lost, gained, n): items right before and wrong now, wrong
    before and right now, and the class size. Exact, by convolving the per-class binomials.
    """
    classes = [(b + c, n) for b, c, n in changes if n > 0]
    if not classes:
        return 1.0
    dist: dict[float, float] = {0.0: 1.0}
    for m, n in classes:
        step = 1.0 / (n * len(classes))
        pmf = _half_binomial(m)
        nxt: dict[float, float] = {}
        for value, prob in dist.items():
            for lost, p_lost in enumerate(pmf):  # lost − gained = 2·lost − m
                key = round(value + (2 * lost - m) * step, 12)
                nxt[key] = nxt.get(key, 0.0) + prob * p_lost
        dist = nxt
    return min(1.0, sum(p for v, p in dist.items() if v >= observed - 1e-12))
