"""Evaluator epochs as stored: which evaluator (judges.provenance) scored each rubric, when.

An epoch is a hash of what produced a verdict (scorer, method, rubric content and version,
scorer implementation, judge endpoint and requested model, prompt and schema hashes). This
lists them per rubric with first/last seen and counts, plus the identity behind each and the
models the provider reported back (a change there, under one epoch, is a drift signal).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func
from sqlalchemy import select as sa_select
from sqlmodel import col

from evaluator.store.models import EvalRecord
from evaluator.store.store import Store, as_utc

RECENT = 200  # records read per epoch for its identity and the reported models
_SHOWN = ("scorer", "method", "rubric_version", "implementation", "endpoint", "model")


def list_epochs(store: Store, rubric: str | None = None) -> list[dict[str, Any]]:
    """One entry per (rubric, epoch), oldest first within a rubric."""
    r = EvalRecord
    query = sa_select(
        col(r.rubric),
        col(r.epoch),
        func.min(col(r.created_at)),
        func.max(col(r.created_at)),
        func.count(),
        func.sum(case((col(r.status) == "ok", 1), else_=0)),
    ).group_by(col(r.rubric), col(r.epoch))
    if rubric is not None:
        query = query.where(col(r.rubric) == rubric)
    out: list[dict[str, Any]] = []
    with store.engine.connect() as conn:
        for name, epoch, first, last, n, ok in conn.execute(query).all():
            recent = conn.execute(
                sa_select(col(r.provenance))
                .where(col(r.rubric) == name, col(r.epoch) == epoch)
                .order_by(col(r.created_at).desc())
                .limit(RECENT)
            ).scalars()
            provenances = [p for p in recent if p]
            identity = provenances[0] if provenances else {}
            reported = sorted(
                {
                    str(p["judge_model_reported"])
                    for p in provenances
                    if p.get("judge_model_reported")
                }
            )
            out.append(
                {
                    "rubric": name,
                    "epoch": epoch,
                    "first_seen": as_utc(first).isoformat(),
                    "last_seen": as_utc(last).isoformat(),
                    "records": int(n),
                    "ok": int(ok or 0),
                    "identity": {k: identity.get(k) for k in _SHOWN} if identity else None,
                    "judge_models_reported": reported,
                }
            )
    return sorted(out, key=lambda e: (e["rubric"], e["first_seen"], e["epoch"]))


def epochs_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no eval records"
    lines = [
        f"{'rubric':<20} {'epoch':<17} {'first seen (UTC)':<17} {'last seen (UTC)':<17} "
        f"{'records':>8} {'ok':>8}  evaluator"
    ]
    for e in rows:
        ident = e["identity"]
        what = "records from before epochs (no provenance)"
        if ident:
            judge = f" {ident['model']} @ {ident['endpoint']}" if ident.get("endpoint") else ""
            what = f"{ident['scorer']}/{ident['method']} v{ident['rubric_version']} "
            what += f"[{ident['implementation']}]{judge}"
        if e["judge_models_reported"]:
            what += f"; reported: {', '.join(e['judge_models_reported'])}"
        lines.append(
            f"{e['rubric']:<20} {e['epoch']:<17} {e['first_seen'][:16].replace('T', ' '):<17} "
            f"{e['last_seen'][:16].replace('T', ' '):<17} {e['records']:>8} {e['ok']:>8}  {what}"
        )
    return "\n".join(lines)
