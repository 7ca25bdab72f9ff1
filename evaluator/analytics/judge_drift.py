"""Anchor runs in the store, the JUDGE-DRIFT alert they raise, and the comparison with the
epoch's reference run.

Each run is compared with a fixed reference — the first run of the same evaluator epoch
(for an epoch's own first run, the last run before it) — item by item with an exact test
(judges.drift.paired_drift_exact), not with the run before it: a judge that slides 0.02 a
week is then caught as surely as one that drops 0.14 at once. Guarantee: with the judge
unchanged, each run alarms with probability ≤ alpha, so an epoch of T runs expects ≤ alpha·T
false alarms (alpha 0.01 at weekly runs: ≤ 0.52 a year). When the items differ between the
runs (a rotating anchor sample) the comparison falls back to an unpaired two-proportion test
per class (normal approximation: approximate at small n).

An alert is an `alerts` row of kind "judge_drift", one open per rubric (the partial unique
index on open alerts dedupes racing workers), not reopened within the cool-down after it
opened or resolved. It resolves when a later run's balanced accuracy is back within
`min_drop` of the accuracy the alert was raised against.

A rubric with `[anchors] min_agreement` also gets a "judge_floor" alert (`floor_alert`):
opened by any run — the first one included — whose balanced accuracy's exact lower bound is
below the floor (judges.anchors.check_floor states the guarantee), resolved by a run whose
bound clears it. Comparison with earlier runs cannot catch a judge that was bad from day one;
the floor does.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from evaluator.analytics.alerts import group_key, open_or_resolve
from evaluator.store.models import AlertRecord
from evaluator.store.store import Store, as_utc
from evaluator.store.trust_models import AnchorRun
from judges.anchors import FloorCheck
from judges.drift import DriftResult, drift_test, paired_drift_exact

KIND = "judge_drift"
FLOOR_KIND = "judge_floor"
# Paired when most of the items were in both runs (the same anchor sample, re-scored).
PAIRED_MIN_OVERLAP = 0.8


def latest_run(store: Store, rubric: str) -> AnchorRun | None:
    query = (
        select(AnchorRun)
        .where(AnchorRun.rubric == rubric)
        .order_by(col(AnchorRun.started_at).desc(), col(AnchorRun.id).desc())
    )
    with Session(store.engine) as session:
        run = session.exec(query.limit(1)).first()
        if run is not None:
            run.started_at = as_utc(run.started_at)
        return run


def reference_run(store: Store, rubric: str, epoch: str) -> AnchorRun | None:
    """What a new run of `epoch` is compared with: the epoch's first run, or, when the epoch
    has none yet, the latest run before it (so a worse judge swapped in is still seen)."""
    query = select(AnchorRun).where(AnchorRun.rubric == rubric)
    with Session(store.engine) as session:
        first = session.exec(
            query.where(AnchorRun.epoch == epoch)
            .order_by(col(AnchorRun.started_at), col(AnchorRun.id))
            .limit(1)
        ).first()
    return first if first is not None else latest_run(store, rubric)


def list_runs(store: Store, rubric: str | None = None, limit: int = 50) -> list[AnchorRun]:
    query = select(AnchorRun).order_by(col(AnchorRun.started_at).desc(), col(AnchorRun.id).desc())
    if rubric is not None:
        query = query.where(AnchorRun.rubric == rubric)
    with Session(store.engine) as session:
        return list(session.exec(query.limit(limit)).all())


def count_runs(store: Store, rubric: str) -> int:
    with Session(store.engine) as session:
        return len(session.exec(select(AnchorRun.id).where(AnchorRun.rubric == rubric)).all())


def save_run(store: Store, run: AnchorRun) -> AnchorRun:
    with Session(store.engine) as session:
        session.add(run)
        session.commit()
        session.refresh(run)
    return run


def compare_runs(
    previous: dict[str, Any], current: dict[str, Any], *, alpha: float, min_drop: float
) -> DriftResult | None:
    """Drift from a reference run's outcomes ({key: [positive, predicted, risk]}) to the
    current run's; None if either is empty. Paired and exact when most items are shared."""
    if not previous or not current:
        return None
    common = sorted(set(previous) & set(current))
    if len(common) >= PAIRED_MIN_OVERLAP * min(len(previous), len(current)) and all(
        bool(previous[k][0]) == bool(current[k][0]) for k in common
    ):
        y = [bool(current[k][0]) for k in common]
        before = [bool(previous[k][1]) for k in common]
        after = [bool(current[k][1]) for k in common]
        return paired_drift_exact(y, before, after, alpha=alpha, min_drop=min_drop)
    prev_keys, cur_keys = sorted(previous), sorted(current)
    return drift_test(
        [bool(previous[k][0]) for k in prev_keys],
        [bool(previous[k][1]) for k in prev_keys],
        [bool(current[k][0]) for k in cur_keys],
        [bool(current[k][1]) for k in cur_keys],
        paired=False,
        alpha=alpha,
        min_drop=min_drop,
    )


def _message(rubric: str, drift: DriftResult, epoch: str) -> str:
    return (
        f"{rubric}: JUDGE DRIFT: anchor-set balanced accuracy {drift.before:.3f} (reference "
        f"run) -> "
        f"{drift.after:.3f} (drop {drift.drop:.3f}, n={drift.n_after}, epoch {epoch}); "
        f"p={drift.p_value:.2g} ({drift.test}, one-sided, alpha {drift.alpha}). The judge "
        "agrees less with the human labels than it did: check the judge model/endpoint and "
        "recalibrate before trusting new verdicts."
    )


def raise_or_resolve(
    store: Store,
    rubric: str,
    drift: DriftResult | None,
    run: AnchorRun,
    now: datetime,
    cool_down: timedelta,
) -> tuple[str, AlertRecord | None]:
    """Open a judge-drift alert on an alarm, resolve an open one that recovered.

    Returns ("opened" | "resolved" | "suppressed" | "already_open" | "none", alert).
    """
    ba = ((run.metrics or {}).get("balanced_accuracy") or {}).get("value")

    def recovered(current: AlertRecord) -> str | None:
        if ba is not None and current.baseline_mean - ba < drift_min_drop(current):
            return (
                f"recovered: anchor run {run.id} balanced accuracy {ba:.3f} "
                f"vs {current.baseline_mean:.3f} before the drift"
            )
        return None

    def build(drift: DriftResult) -> AlertRecord:
        return AlertRecord(
            group_key=key,
            kind=KIND,
            rubric=rubric,
            labels={},
            test=drift.test,
            p_value=drift.p_value,
            baseline_mean=drift.before,
            current_mean=drift.after,
            baseline_n=drift.n_before,
            current_n=drift.n_after,
            summary={"drift": drift.to_json(), "anchor_run": run.id, "epoch": run.epoch},
            changed={"epoch": run.epoch},
            message=_message(rubric, drift, run.epoch),
            opened_at=now,
            updated_at=now,
        )

    key = group_key(KIND, rubric, {})
    alarm = drift if drift is not None and drift.alarm else None
    return open_or_resolve(
        store,
        rubric,
        key,
        now,
        cool_down,
        resolution=recovered,
        build=None if alarm is None else lambda: build(alarm),
    )


def drift_min_drop(alert: AlertRecord) -> float:
    return float(((alert.summary or {}).get("drift") or {}).get("min_drop", 0.05))


def _floor_message(rubric: str, floor: FloorCheck, run: AnchorRun) -> str:
    scored = floor.n_pos + floor.n_neg - floor.unscored
    return (
        f"{rubric}: JUDGE BELOW FLOOR: anchor-set balanced accuracy {floor.balanced_accuracy:.3f}"
        f", lower bound {floor.lower:.3f} < min_agreement {floor.floor} (exact, level "
        f"{floor.alpha}; {scored}/{floor.n_pos + floor.n_neg} items scored, unscored ones "
        f"count as disagreements; epoch {run.epoch}). The judge is not shown to agree with "
        "the human labels well enough: do not trust its verdicts until a run clears the floor."
        + (
            ""
            if floor.clearable
            else f" Even a perfect judge could not clear it on {floor.n_pos}+{floor.n_neg} items: "
            "add anchor items or lower min_agreement."
        )
    )


def floor_alert(
    store: Store,
    rubric: str,
    floor: FloorCheck,
    run: AnchorRun,
    now: datetime,
    cool_down: timedelta,
) -> tuple[str, AlertRecord | None]:
    """Open a judge-floor alert for a run below the floor; resolve an open one when a run
    clears it. Returns ("opened" | "resolved" | "suppressed" | "already_open" | "none",
    alert)."""

    def cleared(_: AlertRecord) -> str | None:
        if floor.below:
            return None
        return (
            f"cleared: anchor run {run.id} lower bound {floor.lower:.3f} >= "
            f"min_agreement {floor.floor}"
        )

    def build() -> AlertRecord:
        return AlertRecord(
            group_key=key,
            kind=FLOOR_KIND,
            rubric=rubric,
            labels={},
            test="clopper-pearson-floor",
            baseline_mean=floor.floor,
            current_mean=floor.balanced_accuracy,
            baseline_n=0,
            current_n=floor.n_pos + floor.n_neg,
            summary={"floor": floor.to_json(), "anchor_run": run.id, "epoch": run.epoch},
            changed={"epoch": run.epoch},
            message=_floor_message(rubric, floor, run),
            opened_at=now,
            updated_at=now,
        )

    key = group_key(FLOOR_KIND, rubric, {})
    return open_or_resolve(
        store,
        rubric,
        key,
        now,
        cool_down,
        resolution=cleared,
        build=build if floor.below else None,
    )
