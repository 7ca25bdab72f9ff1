"""What the certification job does for one key, decided from its labels and stored rows alone
(no I/O: evaluator.analytics.certification_job reads and writes).

A key is (rubric, cheap-stage version, top-judge epoch, prompt version, stratum)
(evaluator.store.certifications). Its labels are the calibration draw's records: traces whose
cluster fell below `audit_rate`, judged whatever the cheap score, in arrival order.

Certifying. The labels enter `evalcore.recertification.certify_checkpoints`: checkpoint j uses
the first k_j = 100·2^j clusters at level delta_j = delta/2^(j+1). When the labels reach a
checkpoint the key has no row for, that checkpoint's outcome becomes a new row (threshold NULL
when it certifies nothing). Guarantee: P(any checkpoint of the segment certifies a threshold
whose miss rate exceeds alpha) <= delta (union bound, Σ delta_j <= delta), for traffic
exchangeable at cluster level with the draw — so the row in force at any time is sound with
that confidence, however often the job runs. Re-running the job between checkpoints writes
nothing and spends nothing. The price, against one test at delta: checkpoint j needs more
failing labels (with no misses at alpha 0.05 / delta 0.1: 59 at k_0, 86 at k_2, against 45).

Segments. A withdrawal ends a key's segment: the next certification uses only labels that
arrived after it (and, after a judge-drift alert, after the alert resolved), with a fresh
schedule and a fresh delta. Each segment's guarantee holds for its own traffic; a segment
starts only after a detected change, so the labels before it are of another population.
Changing a rubric's alpha or delta makes the next run recompute the latest checkpoint at the
new values (a new row); that is sound only if the change was not made after seeing outcomes.

Withdrawing. The calibration records that arrive after a certification's creation (one per
cluster, the cluster's first in arrival order) are audits: judged whatever the cheap score.
Two anytime-valid monitors (`evalcore.certification`, betting e-processes) watch them, each
at delta/2, and the first to fire withdraws: the miss monitor, on the audits the judge
failed, tests "m <= alpha" exactly (the guarantee itself); the pass monitor, on the audits
whose cheap score is >= the threshold, tests "P(fail | passed) <= alpha·P(fail)/P(s >= t)"
with that ceiling estimated from the certification's labels (so its level is approximate).
P(withdrawn on stationary traffic within the certificate) <= delta (union over the two,
Ville's inequality for each), however often the job re-runs them (it recomputes them over
the whole stream each time: no state to lose). Assumption: the first audit of a cluster is
like any other of it (arrival order within a session is independent of score and verdict).
A judge-drift alert on the rubric withdraws its certifications
at the job's next run (every 5 minutes; the routers see it within worker.certifications_ttl_s)
and blocks new ones while it is open; one opened and resolved between two runs still withdraws
every certification created before it opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from evalcore.certification import Certification, certify
from evalcore.recertification import checkpoint_schedule, first_withdrawal
from evaluator.store.certifications import CertificationRecord, Key, stable_id

FIRST_CHECKPOINT = 100  # clusters at checkpoint 0; checkpoint j has FIRST_CHECKPOINT·2^j
NO_SCORE = -1.0  # a label the cheap stage may not pass (no score, hard evidence): below the grid
CEILING_CAP = 0.999


@dataclass(frozen=True, slots=True)
class Label:
    """One calibration record: when it arrived, its cluster, the cheap score (NO_SCORE when
    the cheap stage could not pass it) and the top judge's verdict. `errored`: the judge call
    failed (an error record): no verdict, so counted against the cheap stage — `failed` is
    True, and at each threshold it is a miss when its score is >= it, out of the test below
    (evalcore.certification's `unknown`: the least favourable verdict, so the guarantee
    holds whatever the judge would have said; dropping such labels biases the miss rate low
    when the judge errs more on the answers it would fail)."""

    at: datetime
    cluster: str
    score: float
    failed: bool
    errored: bool = False


@dataclass(frozen=True, slots=True)
class Withdrawal:
    row: CertificationRecord
    reason: str
    audited: int = 0
    failed: int = 0
    ceiling: float | None = None
    test: str = "pass_monitor"  # pass_monitor | miss_monitor | judge_drift


@dataclass(frozen=True, slots=True)
class KeyPlan:
    withdraw: Withdrawal | None = None
    write: CertificationRecord | None = None


def _iso(at: datetime | None) -> str:
    return "-" if at is None else at.isoformat()


def segment_start(rows: Sequence[CertificationRecord], after: datetime | None) -> datetime | None:
    """Labels count from the key's last withdrawal (or `after`, e.g. a resolved judge-drift
    alert), whichever is later; None: from the start."""
    marks = [r.withdrawn_at for r in rows if r.withdrawn_at is not None]
    if after is not None:
        marks.append(after)
    return max(marks) if marks else None


def in_segment(labels: Sequence[Label], start: datetime | None) -> list[Label]:
    return list(labels) if start is None else [x for x in labels if x.at > start]


def active_row(rows: Sequence[CertificationRecord]) -> CertificationRecord | None:
    """The key's newest row when it certifies and is not withdrawn (rows oldest first)."""
    last = rows[-1] if rows else None
    return last if last and last.threshold is not None and last.withdrawn_at is None else None


def ceiling_of(row: CertificationRecord) -> float:
    """alpha · P(fail) / P(s >= t) from the certification's own labels (capped below 1)."""
    labels = max(row.labels, 1)
    decided = max(row.decided_share, 1 / labels)  # certified but passing no label: 1 in n
    return min(row.alpha * (row.failing / labels) / decided, CEILING_CAP)


def audits_after(row: CertificationRecord, labels: Sequence[Label]) -> list[Label]:
    """The calibration labels that arrived after `row` was created, the first of each cluster
    (a choice that reads neither score nor verdict), in arrival order."""
    created = row.created_at  # read once: an ORM attribute costs ~1 µs a read
    seen: set[str] = set()
    out: list[Label] = []
    for x in labels:
        if x.at > created and x.cluster not in seen:
            seen.add(x.cluster)
            out.append(x)
    return out


def _fired(
    stream: Sequence[Label], hits: Sequence[bool], ceiling: float, delta: float
) -> tuple[Label, int, int] | None:
    """(the label at which the e-process against "rate <= ceiling" fires, n, hits so far)."""
    at = first_withdrawal(hits, ceiling, delta)
    return None if at is None else (stream[at - 1], at, sum(hits[:at]))


def monitor(row: CertificationRecord, labels: Sequence[Label]) -> Withdrawal | None:
    """Withdrawal of `row` by the first of its two monitors to fire (each at delta/2, so
    P(withdrawn on stationary traffic within the certificate) <= delta), or None.

    - miss monitor (exact): the audits the top judge failed; a hit is a cheap score >= the
      threshold (a miss); tests "m <= alpha" — the guarantee itself;
    - pass monitor (approximate: its ceiling is estimated): the audits with a cheap score >=
      the threshold; a hit is a judge fail; tests "P(fail | passed) <= ceiling_of(row)".
    The miss monitor sees audit_rate·P(fail) of the traffic, the pass monitor audit_rate·P(s
    >= t): the first is faster where most answers fail, the second where few do.
    An errored audit (no verdict) counts against the certification: a miss and a fail when
    its score is >= the threshold, left out below; so with judge errors a monitor may
    withdraw more often than delta (the conservative side: the judge decides again)."""
    t = row.threshold
    assert t is not None
    audits = audits_after(row, labels)
    failing = [x for x in audits if x.failed and not (x.errored and x.score < t)]
    passing = [x for x in audits if x.score >= t]
    half, ceiling = row.delta / 2, ceiling_of(row)
    miss = _fired(failing, [x.score >= t for x in failing], row.alpha, half)
    fail = _fired(passing, [x.failed for x in passing], ceiling, half)
    if miss is not None and (fail is None or miss[0].at <= fail[0].at):
        _, n, k = miss
        reason = (
            f"miss monitor: {k} of {n} audited answers the judge failed had a cheap score >= "
            f"{t}, a miss rate above alpha {row.alpha} (anytime-valid test at {half:g})"
        )
        return Withdrawal(row, reason, n, k, row.alpha, "miss_monitor")
    if fail is not None:
        _, n, k = fail
        reason = (
            f"pass monitor: {k} of {n} audited local passes failed the judge, above the "
            f"{ceiling:.3f} the certification allows (anytime-valid test at {half:g})"
        )
        return Withdrawal(row, reason, n, k, ceiling, "pass_monitor")
    return None


def latest_checkpoint(labels: Sequence[Label], delta: float) -> tuple[int, float] | None:
    """(k_j, delta_j) of the latest checkpoint the labels' clusters reached, or None."""
    reached = checkpoint_schedule(len({x.cluster for x in labels}), delta, FIRST_CHECKPOINT)
    return reached[-1] if reached else None


def checkpoint_row(
    key: Key, labels: Sequence[Label], alpha: float, delta: float, now: datetime
) -> CertificationRecord | None:
    """The row of the latest checkpoint the labels reached, or None (fewer than the first):
    `certify` at delta_j on every label of the first k_j clusters in arrival order (one per
    cluster is then used) — what `evalcore.recertification.certify_checkpoints` does for that
    checkpoint, without recomputing the earlier ones."""
    latest = latest_checkpoint(labels, delta)
    if latest is None:
        return None
    k, d = latest
    first: dict[str, int] = {}
    for x in labels:
        first.setdefault(x.cluster, len(first))
    kept = [x for x in labels if first[x.cluster] < k]
    cert = certify(
        [x.score for x in kept],
        [x.failed for x in kept],
        [x.cluster for x in kept],
        alpha=alpha,
        delta=d,
        unknown=[x.errored for x in kept],
    )
    return to_row(key, cert, k, delta, now)


def to_row(
    key: Key, cert: Certification, look: int, delta: float, now: datetime
) -> CertificationRecord:
    rubric, stage, epoch, prompt_version, stratum = key
    return CertificationRecord(
        id="",
        rubric=rubric,
        stage=stage,
        judge_epoch=epoch,
        prompt_version=prompt_version,
        stratum=stratum,
        alpha=cert.alpha,
        delta=delta,  # the schedule's delta (the guarantee's), not this checkpoint's share
        threshold=cert.threshold,
        labels=cert.labels,
        clusters=cert.clusters,
        failing=cert.failing,
        misses=cert.misses,
        decided_share=cert.decided_share,
        fail_given_pass_upper=cert.fail_given_passed_bound,
        labels_needed=cert.labels_needed,
        look=look,
        created_at=now,
    )


def plan_key(
    key: Key,
    labels: Sequence[Label],
    rows: Sequence[CertificationRecord],
    *,
    alpha: float,
    delta: float,
    now: datetime,
    drift_open: str | None = None,
    drift_resolved_at: datetime | None = None,
    drift_opened_at: datetime | None = None,
) -> KeyPlan:
    """One run's decision for one key: withdraw its active row (judge drift, or the monitor),
    else write the latest checkpoint's row when the segment has none for it yet.

    `drift_open`: the description of an open judge-drift alert on the rubric (then nothing new
    is certified); `drift_resolved_at`: when the rubric's last judge-drift alert resolved;
    `drift_opened_at`: when the latest one opened — an active row created before it is
    withdrawn even when the alert resolved before this run (opened and resolved between two
    runs: the judge that labelled the row's data drifted since)."""
    active = active_row(rows)
    start = segment_start(rows, drift_resolved_at)
    seg = in_segment(labels, start)
    if active is not None:
        if drift_open is not None:
            return KeyPlan(Withdrawal(active, f"judge drift: {drift_open}", test="judge_drift"))
        if drift_opened_at is not None and active.created_at < drift_opened_at:
            reason = (
                f"judge drift: an alert opened at {drift_opened_at.isoformat()} after this "
                f"certification was created (resolved at {_iso(drift_resolved_at)})"
            )
            return KeyPlan(Withdrawal(active, reason, test="judge_drift"))
        withdrawal = monitor(active, seg)
        if withdrawal is not None:
            return KeyPlan(withdrawal)
    if drift_open is not None:
        return KeyPlan()
    latest = latest_checkpoint(seg, delta)
    if latest is None:
        return KeyPlan()
    seg_rows = [r for r in rows if start is None or r.created_at > start]
    last = seg_rows[-1] if seg_rows else None
    if last is not None and last.look >= latest[0] and (last.alpha, last.delta) == (alpha, delta):
        # This checkpoint is stored already (or a later one, when retention deleted labels).
        return KeyPlan()
    row = checkpoint_row(key, seg, alpha, delta, now)
    if row is not None:  # one id per checkpoint of a segment: a racing second run writes none
        since = "" if start is None else start.isoformat()
        row.id = stable_id(key, f"look={row.look}", f"a={alpha}", f"d={delta}", f"from={since}")
    return KeyPlan(write=row)
