"""The certification job's decisions over a key's life (evaluator.analytics.certification_plan),
on seeded synthetic strata whose true miss rate m(t) is known in closed form
(tests/statistics/test_certification_calibration.py): labels arrive one by one, the job runs
every RUN_EVERY labels, rows are written and withdrawn as the job says.

- stationary traffic (fail rate 0.3, and 0.9 where the pass monitor's ceiling is near 1): a
  row in force (certifying, not withdrawn, after some run) with m > alpha in at most delta
  of the seeds; withdrawals (false, all of them) held to delta;
- drift after the first certification (the cheap stage starts scoring failing answers high):
  the certification stops being in force in >= 95 % of the seeds (withdrawn, or replaced by
  a checkpoint sound under the drift), its delay in labels printed;
- the job's one-checkpoint computation equals evalcore's certify_checkpoints at that checkpoint.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from evalcore.exact import clopper_pearson_upper
from evalcore.recertification import certify_checkpoints
from evaluator.analytics.certification_plan import Label, checkpoint_row, plan_key
from evaluator.store.certifications import CertificationRecord
from tests.statistics.calibration import SEEDS, assert_within_level
from tests.statistics.test_certification_calibration import (
    ALPHA,
    DELTA,
    PASS_MEAN,
    above,
    independent_stratum,
    sigmoid,
    true_miss,
)

KEY = ("faith", "local:2.1", "e1", "v1", "qa")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LABELS, RUN_EVERY, FAIL_RATE = 800, 50, 0.3
HIGH_FAIL_RATE = 0.9  # where the pass monitor's ceiling is near 1 (XSum-like): the miss monitor


AT = [T0 + timedelta(minutes=i) for i in range(LABELS)]  # label i arrives at minute i
CLUSTERS = [f"c{i}" for i in range(LABELS)]


def labels_of(scores: np.ndarray, fails: np.ndarray) -> list[Label]:
    return [Label(*x) for x in zip(AT, CLUSTERS, scores.tolist(), fails.tolist(), strict=True)]


def live(labels: list[Label]) -> tuple[list[CertificationRecord], list[tuple[int, str]]]:
    """Run the job every RUN_EVERY labels; the rows it leaves, and (label count, monitor) of
    each withdrawal."""
    rows: list[CertificationRecord] = []
    withdrawals: list[tuple[int, str]] = []
    for n in range(RUN_EVERY, len(labels) + 1, RUN_EVERY):
        now = labels[n - 1].at + timedelta(seconds=30)
        plan = plan_key(KEY, labels[:n], rows, alpha=ALPHA, delta=DELTA, now=now)
        if plan.withdraw is not None:
            plan.withdraw.row.withdrawn_at = now
            withdrawals.append((n, plan.withdraw.test))
        if plan.write is not None:
            rows.append(plan.write)
    return rows, withdrawals


@pytest.mark.parametrize("fail_rate", [FAIL_RATE, HIGH_FAIL_RATE])
def test_rows_in_force_miss_more_than_alpha_at_most_delta_over_a_keys_life(
    fail_rate: float,
) -> None:
    rng = np.random.default_rng(70)
    bad = ever = withdrawn = 0
    for _ in range(SEEDS):
        scores, fails = independent_stratum(rng, LABELS, fail_rate)
        rows, withdrawals = live(labels_of(scores, fails))
        certified = [r for r in rows if r.threshold is not None]
        ever += bool(certified)
        bad += any(true_miss(r.threshold, 1.0) > ALPHA for r in certified)  # type: ignore[arg-type]
        withdrawn += bool(withdrawals)
    print(f"key's life, stationary, fail rate {fail_rate}: {ever} certified, {bad} with a bad row in force, "
          f"{withdrawn} withdrawn of {SEEDS}")  # fmt: skip
    assert ever > SEEDS // 2, f"only {ever}/{SEEDS} keys ever certified"
    assert_within_level(bad, SEEDS, DELTA, f"job: a row in force with m > alpha ({fail_rate})")
    assert_within_level(withdrawn, SEEDS, DELTA, f"job: a withdrawal, stationary ({fail_rate})")


def in_force(rows: list[CertificationRecord], at: datetime) -> CertificationRecord | None:
    """The row the cascade acts on at `at`: the newest created by then, if it certifies and
    was not withdrawn by then."""
    made = [r for r in rows if r.created_at <= at]
    last = made[-1] if made else None
    if last is None or last.threshold is None:
        return None
    return None if last.withdrawn_at is not None and last.withdrawn_at <= at else last


@pytest.mark.parametrize("fail_rate", [FAIL_RATE, HIGH_FAIL_RATE])
def test_a_drifted_cheap_stage_stops_passing_locally(fail_rate: float) -> None:
    """From label SHIFT on, failing answers score like passing ones (m(t) = P(s >= t | pass),
    far above alpha at any threshold that decides traffic). The certification in force at the
    shift stops being in force (withdrawn by the monitor, or replaced by a checkpoint that
    certifies nothing or only a threshold sound under the drift) before the stream ends in
    >= 95 % of the keys that had one (99 % upper bound of the misses); the delay is printed.
    What is left: strict thresholds deciding ~5-10 % of traffic give the monitor few audited
    passes, and the next checkpoint's labels straddle the shift, so it certifies a threshold
    sound for the mixture (m after the drift 0.05-0.08 where alpha is 0.05)."""
    shift = 400
    rng = np.random.default_rng(71)
    had = caught = 0
    delays: list[int] = []
    by: dict[str, int] = {}
    for _ in range(SEEDS // 4):  # a detection-power cell: 500 replicates
        scores, fails = independent_stratum(rng, LABELS, fail_rate)
        late = np.arange(LABELS) >= shift
        scores = np.where(late & fails, sigmoid(PASS_MEAN + rng.standard_normal(LABELS)), scores)
        labels = labels_of(scores, fails)
        rows, withdrawals = live(labels)
        if in_force(rows, labels[shift].at) is None:
            continue
        had += 1
        for test in [t for n, t in withdrawals if n > shift][:1]:
            by[test] = by.get(test, 0) + 1
        for n in range(shift + RUN_EVERY, LABELS + 1, RUN_EVERY):
            row = in_force(rows, labels[n - 1].at + timedelta(seconds=31))
            if row is None or above_drifted(row.threshold) <= ALPHA:  # type: ignore[arg-type]
                caught += 1
                delays.append(n - shift)
                break
    missed = had - caught
    print(f"drift at label {shift}, fail rate {fail_rate}: {caught}/{had} stopped passing "
          f"locally (withdrawn: {by}); delay median {np.median(delays):.0f}, 90th pct "
          f"{np.percentile(delays, 90):.0f} labels (job every {RUN_EVERY})")  # fmt: skip
    assert had > SEEDS // 8
    assert clopper_pearson_upper(missed, had, 0.01) <= 0.05, f"{missed}/{had} never stopped"


def above_drifted(t: float) -> float:
    """m(t) after the drift: failing answers' scores are distributed as passing ones'."""
    return above(t, PASS_MEAN, 1.0)


def test_the_jobs_checkpoint_is_evalcores() -> None:
    rng = np.random.default_rng(72)
    for n in (100, 250, 450, 900):
        scores, fails = independent_stratum(rng, n, FAIL_RATE)
        clusters = [f"c{i // 2}" for i in range(n)]  # two labels per cluster
        labels = [Label(T0 + timedelta(minutes=i), c, float(s), bool(f))
                  for i, (c, s, f) in enumerate(zip(clusters, scores, fails, strict=True))]  # fmt: skip
        runs = certify_checkpoints(scores, fails, clusters, alpha=ALPHA, delta=DELTA)
        row = checkpoint_row(KEY, labels, ALPHA, DELTA, T0)
        if not runs:
            assert row is None
            continue
        assert row is not None
        last = runs[-1]
        assert (row.threshold, row.labels, row.failing, row.misses) == (
            last.threshold, last.labels, last.failing, last.misses)  # fmt: skip
        assert row.look == 100 * 2 ** (last.checkpoint or 0) and row.delta == DELTA
