"""Regression datasets from production: which traces to export, and the exported lines.

A dataset line is the labelled-JSONL format (docs/labelled-jsonl.md): `{"trace": <trace
document>, "label"?, "human_score"?, ...}` plus what selected it: `scores` (rubric →
{score, passed, status, rubric_version, epoch}), `selected_by`. Lines are deduplicated by
trace and ordered by trace id, so two exports of the same selection are byte-identical.
Trace text is redacted as for the judge unless the caller says otherwise (placeholders
change what a generator answers, so replaying raw text can be worth a policy exception).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlmodel import col

from evaluator.store.models import AlertRecord, EvalRecord, TraceRecord
from evaluator.store.store import Store
from evaluator.store.trust_models import FeedbackRecord
from judges.redact import Redactor


@dataclass(frozen=True)
class Selection:
    """What an export asks for; kept in the manifest."""

    kind: str  # "alert" | "query" | "labelled" (traces with human feedback)
    rubric: str
    alert_id: str | None = None
    failed_only: bool = False
    since: datetime | None = None
    prompt_version: str | None = None
    limit: int = 1000
    good: int = 0  # alert exports: matched passing traces from the same group
    labels: dict[str, Any] = field(default_factory=dict)


def _stable(trace_id: str) -> str:
    return hashlib.blake2b(trace_id.encode(), digest_size=8).hexdigest()


def select_trace_ids(store: Store, sel: Selection) -> list[tuple[str, str]]:
    """(trace id, why) in the export, deduplicated; `why` is "worst", "good" or "query"."""
    if sel.kind == "alert":
        return _alert_ids(store, sel)
    if sel.kind == "labelled":
        f = FeedbackRecord
        query = select(col(f.trace_id)).distinct()
        if sel.rubric:
            query = query.where(or_(col(f.rubric) == sel.rubric, col(f.rubric).is_(None)))
        if sel.since is not None:
            query = query.where(col(f.created_at) >= sel.since)
        with store.engine.connect() as conn:
            ids = sorted({t for (t,) in conn.execute(query)}, key=_stable)[: sel.limit]
        return [(t, "labelled") for t in sorted(ids)]
    r = EvalRecord
    query = select(col(r.trace_id)).where(col(r.rubric) == sel.rubric, col(r.status) == "ok")
    if sel.failed_only:
        query = query.where(col(r.passed).is_(False))
    if sel.since is not None:
        query = query.where(col(r.created_at) >= sel.since)
    if sel.prompt_version is not None:
        query = query.where(col(r.prompt_version) == sel.prompt_version)
    with store.engine.connect() as conn:
        ids = sorted({t for (t,) in conn.execute(query)}, key=_stable)[: sel.limit]
    return [(t, "query") for t in sorted(ids)]


def _alert_ids(store: Store, sel: Selection) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        row = conn.execute(
            select(AlertRecord).where(col(AlertRecord.id) == uuid.UUID(str(sel.alert_id)))
        ).first()
        if row is None:
            raise LookupError(f"no alert {sel.alert_id}")
        alert = AlertRecord.model_validate(row._mapping)
        worst = [w["trace_id"] for w in alert.worst_traces if "trace_id" in w]
        chosen = [(t, "worst") for t in dict.fromkeys(worst)]
        if sel.good:
            r = EvalRecord
            query = select(col(r.trace_id)).where(
                col(r.rubric) == alert.rubric, col(r.status) == "ok", col(r.passed).is_(True)
            )
            for key, value in alert.labels.items():
                if key in ("prompt_version", "model", "feature", "tenant"):
                    column = col(getattr(r, key))
                    query = query.where(column.is_(None) if value is None else column == value)
            candidates = {t for (t,) in conn.execute(query)} - set(worst)
            good = sorted(candidates, key=_stable)[: sel.good]  # a stable pseudo-random sample
            chosen += [(t, "good") for t in sorted(good)]
    return chosen


def _scores(store: Store, trace_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    r = EvalRecord
    query = select(
        col(r.trace_id),
        col(r.rubric),
        col(r.rubric_version),
        col(r.status),
        col(r.score),
        col(r.passed),
        col(r.epoch),
    ).where(col(r.trace_id).in_(list(trace_ids)))
    with store.engine.connect() as conn:
        for trace_id, rubric, version, status, score, passed, epoch in conn.execute(query):
            out.setdefault(trace_id, {})[rubric] = {
                "rubric_version": version,
                "status": status,
                "score": score,
                "passed": passed,
                "epoch": epoch,
            }
    return out


def _human(store: Store, trace_ids: Sequence[str], rubric: str) -> dict[str, dict[str, Any]]:
    """The newest human verdict per trace (for `rubric`, or for any rubric), as labelled-JSONL
    fields: a label when the human gave one or thumbs, a human_score when they scored."""
    f = FeedbackRecord
    query = (
        select(col(f.trace_id), col(f.kind), col(f.value), col(f.label), col(f.note))
        .where(col(f.trace_id).in_(list(trace_ids)))
        .order_by(col(f.created_at))
    )
    if rubric:
        query = query.where(or_(col(f.rubric) == rubric, col(f.rubric).is_(None)))
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for trace_id, kind, value, label, note in conn.execute(query):
            fields: dict[str, Any] = {}
            if value is not None:
                fields["human_score"] = float(value)
                if kind in ("thumbs", "label"):
                    fields["label"] = "pass" if value >= 0.5 else "fail"
            if label:
                fields["label"] = label
            if note:
                fields["note"] = note
            out[trace_id] = fields  # the newest wins: rows come oldest first
    return out


def export_lines(
    store: Store, chosen: Sequence[tuple[str, str]], sel: Selection, *, redact: bool
) -> Iterable[dict[str, Any]]:
    """One labelled-JSONL object per chosen trace that is still stored, in trace-id order."""
    ids = [t for t, _ in chosen]
    why = dict(chosen)
    scores = _scores(store, ids)
    human = _human(store, ids, sel.rubric)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(col(TraceRecord.trace_id), col(TraceRecord.payload)).where(
                col(TraceRecord.trace_id).in_(ids)
            )
        ).all()
    for trace_id, payload in sorted(rows, key=lambda row: row[0]):
        doc = Redactor().value(payload) if redact else payload
        line: dict[str, Any] = {
            "trace": doc,
            "scores": scores.get(trace_id, {}),
            "selected_by": {
                "kind": sel.kind,
                "why": why[trace_id],
                "rubric": sel.rubric,
                **({"alert_id": sel.alert_id} if sel.alert_id else {}),
            },
        }
        # Labels are human judgements only (feedback, review); the service's own verdicts
        # travel in "scores" so a replay can never mistake them for ground truth.
        line.update(human.get(trace_id, {}))
        yield line
