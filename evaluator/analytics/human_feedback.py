"""Read side of human feedback: judge-human agreement per rubric and epoch, and the review
queue (which traces a human label would teach the most).

Agreement pairs each ok eval record with the human verdict on its trace (span-level
feedback first, then trace-level; feedback with no rubric counts for every rubric). The
positive class is "fails". Records are grouped by their evaluator epoch (the `epoch` column),
oldest first, so a fall shows as a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from evaluator.analytics.alerts import open_alerts
from evaluator.sources.feedback_tail import BAD_BELOW
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store, as_utc
from evaluator.store.trust_models import FeedbackRecord
from judges.drift import agreement_with_intervals

_FAIL_LABELS = frozenset({"hallucinated", "fail", "failed", "bad", "no", "false"})
_CHUNK = 500


def human_fails(fb: FeedbackRecord) -> bool | None:
    """The human verdict of one feedback row: True = fails; None = no verdict (a note)."""
    if fb.label is not None:
        return fb.label in _FAIL_LABELS
    if fb.value is not None:
        return fb.value < BAD_BELOW
    return None


def epoch_of(record: EvalRecord) -> str:
    """The record's evaluator epoch (judges.provenance; 'legacy' before epochs existed)."""
    return record.epoch


def human_verdicts(store: Store, rubric: str | None) -> dict[tuple[str, str], bool]:
    """(trace_id, span_id) -> fails, latest feedback winning; span '' = whole trace."""
    query = select(FeedbackRecord).order_by(col(FeedbackRecord.created_at))
    if rubric is not None:
        query = query.where(
            (col(FeedbackRecord.rubric) == rubric) | (col(FeedbackRecord.rubric).is_(None))
        )
    out: dict[tuple[str, str], bool] = {}
    with Session(store.engine) as session:
        for fb in session.exec(query):
            verdict = human_fails(fb)
            if verdict is not None:
                out[(fb.trace_id, fb.span_id)] = verdict
    return out


def _records_for(store: Store, rubric: str, trace_ids: Iterable[str]) -> list[EvalRecord]:
    ids, rows = sorted(set(trace_ids)), list[EvalRecord]()
    with Session(store.engine) as session:
        for start in range(0, len(ids), _CHUNK):
            query = select(EvalRecord).where(
                EvalRecord.rubric == rubric,
                EvalRecord.status == "ok",
                col(EvalRecord.trace_id).in_(ids[start : start + _CHUNK]),
            )
            rows.extend(session.exec(query).all())
    return rows


def agreement_by_epoch(
    store: Store, rubric: str, *, reps: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """One row per epoch: n, when it was seen, AUROC / balanced accuracy / κ with intervals."""
    verdicts = human_verdicts(store, rubric)
    groups: dict[str, dict[str, Any]] = {}
    for rec in _records_for(store, rubric, (t for t, _ in verdicts)):
        human = verdicts.get((rec.trace_id, rec.span_id), verdicts.get((rec.trace_id, "")))
        if human is None or rec.score is None:
            continue
        g = groups.setdefault(epoch_of(rec), {"y": [], "pred": [], "risk": [], "seen": []})
        judge_fails = rec.passed is False if rec.passed is not None else rec.score < 0.5
        g["y"].append(human)
        g["pred"].append(judge_fails)
        g["risk"].append(1.0 - rec.score)
        g["seen"].append(as_utc(rec.created_at))
    rows = []
    for epoch, g in groups.items():
        metrics = agreement_with_intervals(g["y"], g["pred"], g["risk"], reps=reps, seed=seed)
        rows.append(
            {
                "epoch": epoch,
                "first_seen": min(g["seen"]).isoformat(),
                "last_seen": max(g["seen"]).isoformat(),
                **metrics,
            }
        )
    return sorted(rows, key=lambda r: r["first_seen"])


# --- review queue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewItem:
    trace_id: str
    span_id: str
    rubric: str
    score: float | None
    priority: float
    reasons: tuple[str, ...] = field(default_factory=tuple)
    created_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "rubric": self.rubric,
            "score": self.score,
            "priority": round(self.priority, 4),
            "reasons": list(self.reasons),
        }


# How far from the threshold a score still counts as uncertain (scores are in [0, 1]).
UNCERTAIN_BAND = 0.25


def review_priority(
    record: EvalRecord, threshold: float, alert_traces: frozenset[str]
) -> tuple[float, tuple[str, ...]]:
    """Priority of one record for human review, with the reasons (pure)."""
    priority, reasons = 0.0, []
    if record.score is not None:
        margin = abs(record.score - threshold)
        if margin < UNCERTAIN_BAND:
            priority += 1 - margin / UNCERTAIN_BAND
            reasons.append(f"uncertain: score {record.score:.2f} vs threshold {threshold:.2f}")
    cascade = (record.details or {}).get("cascade") or {}
    local = cascade.get("local_value")
    # Only the judge's verdict can disagree with the local score (a local decision is its own).
    if local is not None and cascade.get("decided_by") == "judge" and record.passed is not None:
        local_passes = local >= cascade.get("local_threshold", threshold)
        if local_passes != record.passed:
            priority += 1.0
            verdict = "pass" if record.passed else "fail"
            reasons.append(f"local {local:.2f} and judge ({verdict}) disagree")
    if record.trace_id in alert_traces:
        priority += 0.75
        reasons.append("in an open alert's worst traces")
    return priority, tuple(reasons)


def rank_for_review(
    records: Sequence[EvalRecord],
    thresholds: Mapping[str, float],
    alert_traces: frozenset[str],
    labelled: frozenset[str],
    n: int,
) -> list[ReviewItem]:
    """The `n` unlabelled records whose label would teach the most, best first (pure)."""
    best: dict[tuple[str, str], ReviewItem] = {}
    for rec in records:
        if rec.trace_id in labelled:
            continue
        priority, reasons = review_priority(rec, thresholds.get(rec.rubric, 0.5), alert_traces)
        if priority <= 0:
            continue
        item = ReviewItem(
            rec.trace_id, rec.span_id, rec.rubric, rec.score, priority, reasons, rec.created_at
        )
        key = (rec.trace_id, rec.span_id)
        if key not in best or best[key].priority < priority:
            best[key] = item
    ordered = sorted(
        best.values(),
        key=lambda i: (-i.priority, -(i.created_at.timestamp() if i.created_at else 0), i.trace_id),
    )
    return ordered[:n]


def review_queue(
    store: Store,
    thresholds: Mapping[str, float],
    *,
    rubric: str | None = None,
    n: int = 20,
    scan: int = 5000,
) -> list[ReviewItem]:
    """Scan the latest `scan` ok records (of `rubric`) and rank them for review."""
    query = select(EvalRecord).where(EvalRecord.status == "ok")
    if rubric is not None:
        query = query.where(EvalRecord.rubric == rubric)
    query = query.order_by(col(EvalRecord.created_at).desc()).limit(scan)
    with Session(store.engine) as session:
        records = list(session.exec(query).all())
        labelled = frozenset(session.exec(select(FeedbackRecord.trace_id).distinct()).all())
    for rec in records:
        rec.created_at = as_utc(rec.created_at)
    alert_traces = frozenset(
        str(w.get("trace_id"))
        for a in open_alerts(store, rubric)
        for w in (a.worst_traces or [])
        if isinstance(w, dict)
    )
    return rank_for_review(records, thresholds, alert_traces, labelled, n)
