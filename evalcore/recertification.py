"""A certification's life after the first one: re-certification at checkpoints fixed in
advance as labels accrue, and withdrawal by monitors on audited traffic. One certification
at one n, its guarantee and its assumptions: `evalcore.certification`.

Re-certification as labels accrue. `certify` is exact at one n fixed in advance; re-run at
many n on a growing label set, its chance of certifying a bad threshold at some look grows
with the looks. `certify_at_checkpoints` makes the looks a schedule fixed in advance: the j-th
checkpoint (j = 0, 1, …) uses the first k_j = first·2^j labels (clusters, with `clusters`) in
arrival order, at level delta_j = delta / 2^(j+1). Σ delta_j ≤ delta, so by the union bound
P(any checkpoint ever certifies a threshold with m > alpha) ≤ delta over the whole schedule,
however often it is called between checkpoints (a call returns the latest checkpoint reached,
so re-running it changes nothing until the next one; any one checkpoint's certification may be
used). The price: checkpoint j needs more failing labels than a single test at delta (with no
misses at alpha 0.05 / delta 0.1: 59 at k_0, 86 at k_2, 113 at k_4, against 45). An anytime
betting bound (`evalcore.sequences`) on each threshold's misses would allow a look at every
label but needs 94 failing labels with no miss before its first certification.

Withdrawal (`Monitor`). Audited traces — ones the cheap stage passed, judged anyway — arrive
one by one. Under a certification, the fail rate among passed traces is
r = m · P(fail) / P(s ≥ t) ≤ alpha · P(fail) / P(s ≥ t) =: ceiling. The monitor runs a betting
e-process (`evalcore.sequences`, mixture of betting martingales) against "r ≤ ceiling" and
withdraws once its wealth reaches 1/delta: on a stationary stream with r ≤ ceiling,
P(ever withdrawn) ≤ delta, however often it is checked (Ville's inequality). Its limits: the
ceiling is computed from estimates of P(fail) and P(s ≥ t), so the level is approximate; and
where almost everything fails the ceiling is near 1 (XSum: ≈ 1) and nothing is withdrawn.
`Monitor.for_misses` watches the guarantee itself instead: fed, for each calibration-draw
trace the top judge fails (drawn whatever its score), whether the cheap stage would have
passed it, it tests "m ≤ alpha" with the same e-process — exact, no estimated ceiling; on a
stationary stream with m ≤ alpha, P(ever withdrawn) ≤ delta. Per sampled trace it sees
audit_rate·P(fail) traces where the pass monitor sees audit_rate·P(s ≥ t): faster on
high-fail strata, slower on clean ones (bench/cascade_cost.py measures both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from evalcore.certification import LABELS_CAP, Certification, certify, plain_ids
from evalcore.sequences import MeanSample, log_wealth


def checkpoint_schedule(labels: int, delta: float, first: int = 100) -> list[tuple[int, float]]:
    """(k_j, delta_j) of the checkpoints reached with `labels` labels: k_j = first·2^j labels,
    delta_j = delta / 2^(j+1) (Σ ≤ delta: the module docstring's re-certification rule).

    >>> checkpoint_schedule(450, 0.1)
    [(100, 0.05), (200, 0.025), (400, 0.0125)]
    """
    out, j = [], 0
    while first * 2**j <= labels:
        out.append((first * 2**j, delta / 2 ** (j + 1)))
        j += 1
    return out


def _arrival_rank(clusters: Sequence[object]) -> np.ndarray:
    """Per item, its cluster's rank by first appearance (0 for the first cluster to arrive)."""
    order: dict[object, int] = {}
    return np.array([order.setdefault(c, len(order)) for c in clusters], dtype=int)


def certify_checkpoints(
    scores: npt.ArrayLike,
    fails: npt.ArrayLike,
    clusters: Sequence[object] | npt.NDArray[np.generic] | None = None,
    *,
    alpha: float = 0.05,
    delta: float = 0.1,
    first: int = 100,
    **kwargs: Any,
) -> list[Certification]:
    """The certification of every checkpoint reached (module docstring: re-certification),
    oldest first; labels in arrival order; with `clusters`, k_j counts clusters (each enters
    with all its labelled items, one of which is then used). Other arguments as `certify`.
    P(any of them certifies a threshold with m > alpha) ≤ delta."""
    s, y = np.asarray(scores, float), np.asarray(fails, bool)
    unknown = kwargs.pop("unknown", None)
    u = np.zeros(s.shape, bool) if unknown is None else np.asarray(unknown, bool)
    rank = np.arange(s.size) if clusters is None else _arrival_rank(plain_ids(clusters))
    n = int(rank.max()) + 1 if rank.size else 0
    out = []
    for j, (k, d) in enumerate(checkpoint_schedule(n, delta, first)):
        idx = np.flatnonzero(rank < k)
        sub = None if clusters is None else rank[idx]  # the rank identifies the cluster
        c = certify(s[idx], y[idx], sub, alpha=alpha, delta=d, unknown=u[idx], **kwargs)
        out.append(replace(c, checkpoint=j, family_delta=delta))
    return out


def certify_at_checkpoints(
    scores: npt.ArrayLike,
    fails: npt.ArrayLike,
    clusters: Sequence[object] | npt.NDArray[np.generic] | None = None,
    *,
    alpha: float = 0.05,
    delta: float = 0.1,
    first: int = 100,
    **kwargs: Any,
) -> Certification:
    """The certification in force after the labels so far: the latest checkpoint's (the same
    answer however often it is called between checkpoints). Valid at level delta over the
    whole schedule. When it certifies nothing, labels_needed is the first checkpoint k_J at
    which the observed rates, if they hold, would certify (None: not at these rates)."""
    s, y = np.asarray(scores, float), np.asarray(fails, bool)
    runs = certify_checkpoints(s, y, clusters, alpha=alpha, delta=delta, first=first, **kwargs)
    if runs and runs[-1].certified:
        return runs[-1]
    n = s.size if clusters is None else len(set(plain_ids(clusters)))
    j = len(runs)
    last = runs[-1] if runs else certify(s, y, clusters, alpha=alpha, delta=delta / 2, **kwargs)
    need = None
    while first * 2**j <= LABELS_CAP:
        k, d = first * 2**j, delta / 2 ** (j + 1)
        trial = certify(s, y, clusters, alpha=alpha, delta=d, **kwargs)
        est = trial.labels if trial.certified else trial.labels_needed
        if est is None:
            break
        if est <= k and k > n:
            need = k
            break
        j += 1
    return replace(
        last,
        threshold=None,
        decided_share=0.0,
        labels_needed=need,
        checkpoint=(len(runs) - 1) if runs else None,
        family_delta=delta,
    )


def first_withdrawal(failed: npt.ArrayLike, ceiling: float, delta: float = 0.1) -> int | None:
    """The audited-trace count at which `Monitor` withdraws on this stream, or None: the same
    e-process, evaluated along the whole stream at once (for simulations and backfills).

    >>> first_withdrawal([False] * 40 + [True] * 10, 0.05), first_withdrawal([False] * 50, 0.05)
    (48, None)
    """
    x = np.asarray(failed, bool)
    if x.size == 0:
        return None
    n = np.arange(1, x.size + 1, dtype=float)
    sample = MeanSample.from_counts(passes=n - np.cumsum(x), n=n)
    hits = np.flatnonzero(log_wealth(sample, 1.0 - ceiling) >= -math.log(delta))
    return int(hits[0]) + 1 if hits.size else None


@dataclass(frozen=True)
class Monitor:
    """Anytime-valid withdrawal of a certification from audited passes (module docstring).

    `ceiling`: the largest fail rate among passed traces the certification allows,
    alpha · P(fail) / P(score ≥ t) (`Monitor.for_certification`). Feed each audited trace's
    judge verdict with `observe`; `withdrawn` turns True (and stays) once the e-process
    against "fail rate among passed ≤ ceiling" reaches 1/delta: P(ever withdrawn) ≤ delta
    on a stationary stream within the ceiling.

    >>> mon = Monitor(ceiling=0.05, delta=0.1)
    >>> for _ in range(40):
    ...     mon = mon.observe(failed=False)
    >>> mon.withdrawn
    False
    >>> for _ in range(10):
    ...     mon = mon.observe(failed=True)
    >>> mon.withdrawn, mon.audited, mon.failed
    (True, 50, 10)
    """

    ceiling: float
    delta: float = 0.1
    audited: int = 0
    failed: int = 0
    withdrawn_at: int | None = None

    def __post_init__(self) -> None:
        if not (0 < self.ceiling < 1 and 0 < self.delta < 1):
            raise ValueError("ceiling and delta must lie strictly between 0 and 1")

    @classmethod
    def for_certification(cls, cert: Certification, fail_share: float) -> Monitor:
        """The ceiling alpha · fail_share / decided_share; `fail_share` is P(fail) on the
        stratum (e.g. the calibration labels' failing share). Capped below 1."""
        if cert.threshold is None or cert.decided_share <= 0:
            raise ValueError("only a certification that decides traffic can be monitored")
        return cls(min(cert.alpha * fail_share / cert.decided_share, 0.999), cert.delta)

    @classmethod
    def for_misses(cls, cert: Certification, delta: float | None = None) -> Monitor:
        """The exact monitor of the guarantee (module docstring): `observe(failed=...)` takes,
        for each calibration-draw trace the top judge fails, whether its cheap score was ≥ the
        threshold (a miss); withdraws once "m ≤ alpha" is rejected at `delta` (default the
        certification's)."""
        if cert.threshold is None:
            raise ValueError("only a certification can be monitored")
        return cls(cert.alpha, cert.delta if delta is None else delta)

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None

    def log_wealth(self) -> float:
        """log of the e-process against "fail rate among passed ≤ ceiling"."""
        sample = MeanSample.from_counts(passes=self.audited - self.failed, n=self.audited)
        return float(log_wealth(sample, 1.0 - self.ceiling))

    def observe(self, failed: bool) -> Monitor:
        nxt = Monitor(
            self.ceiling, self.delta, self.audited + 1, self.failed + int(failed), self.withdrawn_at
        )
        if nxt.withdrawn_at is None and nxt.log_wealth() >= -math.log(self.delta):
            nxt = Monitor(nxt.ceiling, nxt.delta, nxt.audited, nxt.failed, nxt.audited)
        return nxt
