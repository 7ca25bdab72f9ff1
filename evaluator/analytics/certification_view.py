"""What `evaluator certify` and the web page show of a rubric's certifications: every stored
one with its status, guarantee, share decided, P(fail | passed) bound and saved judge calls;
and, on demand, what the stored labels certify now (`compute_now`, read only: the worker's
certification job is what stores a certification, at its checkpoint).

    certifications_data(store, "faithfulness", now)  # the JSON the page and --json show
    compute_now(store, rubric)                       # per key: certified now, or labels needed

`now` says what the router uses today per rubric (`RubricNow`: cheap stage, judge epoch,
alpha, delta, whether a judge is configured; evaluator.worker.cascade_routing.rubrics_now
builds it from the settings): with it, a row of another stage or judge epoch shows
"other_epoch" and one looser than the rubric's alpha/delta "other_guarantee" (the router uses
neither), and a cascade without a judge is said to be advisory (`advisory`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evalcore.recertification import certify_at_checkpoints
from evaluator.analytics.certification_job import (
    guarantee_of,
    judge_drift_state,
    read_labels,
)
from evaluator.analytics.certification_plan import (
    FIRST_CHECKPOINT,
    in_segment,
    segment_start,
)
from evaluator.store import certifications as certs
from evaluator.store.certifications import CertificationRecord, Key
from evaluator.store.store import Store
from judges.rubric import Rubric

GUARANTEE = (
    "P(miss) <= alpha with confidence 1 - delta on traffic exchangeable at cluster level with "
    "the calibration draw (miss: an answer the top judge fails, passed by the cheap stage)"
)


JUDGE_DECIDES = "no certification in force: the judge decides every sampled trace"


@dataclass(frozen=True, slots=True)
class RubricNow:
    """What the router uses today for one cascade rubric (None in `now`: no cheap stage)."""

    stage: str
    judge_epoch: str
    alpha: float
    delta: float
    judge_configured: bool
    advisory: str | None = None  # set when no judge is configured: what is recorded then


Now = Mapping[str, RubricNow | None]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def status_of(
    row: CertificationRecord, latest: dict[Key, CertificationRecord], now: Now | None = None
) -> str:
    """withdrawn | superseded (a newer row of its key) | no_cheap_stage (the rubric is no
    cascade now) | other_epoch (another cheap stage or judge epoch than today's) |
    other_guarantee (alpha or delta looser than the rubric's) | not_certified | active. Only
    an "active" row is used by the router."""
    if row.withdrawn_at is not None:
        return "withdrawn"
    if latest.get(row.key) is not row:
        return "superseded"
    if now is not None and row.rubric in now:
        current = now[row.rubric]
        if current is None:
            return "no_cheap_stage"
        if (row.stage, row.judge_epoch) != (current.stage, current.judge_epoch):
            return "other_epoch"
        if row.threshold is not None and (row.alpha > current.alpha or row.delta > current.delta):
            return "other_guarantee"
    return "not_certified" if row.threshold is None else "active"


def joint_confidence(delta: float, checkpoint_labels: int | None) -> float | None:
    """The confidence at which the P(fail | passed) bound holds jointly with the miss bound:
    1 − 2·delta_j, delta_j = delta/2^(j+1) the share of delta spent at checkpoint j (k_j =
    FIRST_CHECKPOINT·2^j clusters; evalcore.certification: both bounds at level delta_j)."""
    if not checkpoint_labels:
        return None
    return 1 - 2 * delta * FIRST_CHECKPOINT / (2 * checkpoint_labels)


def row_json(row: CertificationRecord, status: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": status,
        "rubric": row.rubric,
        "stratum": row.stratum,
        "prompt_version": row.prompt_version or None,
        "stage": row.stage,
        "judge_epoch": row.judge_epoch,
        "threshold": row.threshold,
        "alpha": row.alpha,
        "delta": row.delta,
        "guarantee": (
            f"P(miss) <= {row.alpha} with confidence {1 - row.delta:g}"
            if row.threshold is not None
            else None
        ),
        "labels": row.labels,
        "clusters": row.clusters,
        "failing": row.failing,
        "misses": row.misses,
        "checkpoint_labels": row.look,
        "decided_share": row.decided_share,
        "fail_given_pass_upper": row.fail_given_pass_upper,
        "fail_given_pass_confidence": (
            joint_confidence(row.delta, row.look) if row.fail_given_pass_upper is not None else None
        ),
        "labels_needed": row.labels_needed,
        "saved_judge_calls": row.saved_judge_calls,
        "created_at": _iso(row.created_at),
        "withdrawn_at": _iso(row.withdrawn_at),
        "withdrawn_reason": row.withdrawn_reason,
    }


def _now_json(current: RubricNow | None) -> dict[str, Any]:
    if current is None:
        return {"cheap_stage": None, "note": "no cheap stage (not a cascade): nothing to certify"}
    return {
        "cheap_stage": current.stage,
        "judge_epoch": current.judge_epoch,
        "alpha": current.alpha,
        "delta": current.delta,
        "judge_configured": current.judge_configured,
    }


def certifications_data(
    store: Store, rubric: str | None = None, now: Now | None = None
) -> dict[str, Any]:
    """Every stored certification of `rubric` (all rubrics: None), newest first, with its
    status (against `now` when given); `summary` counts the active ones and the judge calls
    all of them saved. `advisory`: set (a sentence) when a cascade rubric shown has no judge
    configured — its verdicts are advisory and nothing can be certified; `uncertified`: who
    decides a trace no certification covers; `rubrics`: today's stage, epoch, alpha, delta."""
    rows = certs.list_certifications(store.engine, rubric)
    latest = certs.latest_per_key(rows)
    out = [row_json(r, status_of(r, latest, now)) for r in reversed(rows)]
    shown = {k: v for k, v in (now or {}).items() if rubric is None or k == rubric}
    notes = [v.advisory for v in shown.values() if v is not None and v.advisory]
    return {
        "rubric": rubric,
        "guarantee": GUARANTEE,
        "advisory": " ".join(notes) or None,
        "uncertified": " ".join(notes) or JUDGE_DECIDES,
        "rubrics": {k: _now_json(v) for k, v in shown.items()},
        "certifications": out,
        "summary": {
            "active": sum(1 for r in out if r["status"] == "active"),
            "withdrawn": sum(1 for r in out if r["status"] == "withdrawn"),
            "saved_judge_calls": sum(r["saved_judge_calls"] for r in out),
        },
    }


def compute_now(
    store: Store, rubric: Rubric, current: RubricNow | None = None
) -> list[dict[str, Any]]:
    """Per key with labels: what the labels of its current segment certify at the latest
    checkpoint reached (the same rule as the job), or the checkpoint (in clusters) at which the
    observed rates would certify — a projection, None when they never would. With `current`,
    `other_epoch` marks keys of another cheap stage or judge epoch (never used by the router)."""
    alpha, delta = guarantee_of(rubric)
    labels = read_labels(store.engine, rubric.name)
    rows: dict[Key, list[CertificationRecord]] = defaultdict(list)
    for r in certs.list_certifications(store.engine, rubric.name):
        rows[r.key].append(r)
    drift = judge_drift_state(store, rubric.name)
    drift_open, drift_resolved = drift.open, drift.resolved_at
    out = []
    for key in sorted(labels):
        seg = in_segment(labels[key], segment_start(rows.get(key, []), drift_resolved))
        clusters = len({x.cluster for x in seg})
        entry: dict[str, Any] = {
            "stratum": key[4],
            "prompt_version": key[3] or None,
            "stage": key[1],
            "judge_epoch": key[2],
            "alpha": alpha,
            "delta": delta,
            "labelled_traces": len(seg),
            "clusters": clusters,
            "judge_drift_open": drift_open,
            "other_epoch": current is not None
            and (key[1], key[2]) != (current.stage, current.judge_epoch),
        }
        if not seg:
            out.append(
                {
                    **entry,
                    "certified": False,
                    "threshold": None,
                    "checkpoint_labels": None,
                    "labels_needed": None,
                    "more_needed": None,
                }
            )
            continue
        cert = certify_at_checkpoints(
            [x.score for x in seg],
            [x.failed for x in seg],
            [x.cluster for x in seg],
            alpha=alpha,
            delta=delta,
            first=FIRST_CHECKPOINT,
            unknown=[x.errored for x in seg],
        )
        reached = None if cert.checkpoint is None else FIRST_CHECKPOINT * 2**cert.checkpoint
        need = None if cert.certified else cert.labels_needed
        out.append(
            {
                **entry,
                "certified": cert.certified and drift_open is None,
                "threshold": cert.threshold,
                "checkpoint_labels": reached,
                "failing": cert.failing,
                "misses": cert.misses,
                "decided_share": cert.decided_share,
                "fail_given_pass_upper": cert.fail_given_passed_bound,
                "fail_given_pass_confidence": (
                    joint_confidence(delta, reached) if cert.certified else None
                ),
                "labels_needed": need,
                "more_needed": None if need is None else max(need - clusters, 0),
            }
        )
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _conf(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def certifications_table(data: dict[str, Any]) -> str:
    lines = [f"guarantee: {data['guarantee']}"]
    if data.get("advisory"):
        lines.append(f"WARNING: {data['advisory']}")
    for name, cur in (data.get("rubrics") or {}).items():
        if cur["cheap_stage"] is None:
            lines.append(f"{name}: {cur['note']}")
        else:
            lines.append(
                f"{name} now: alpha {cur['alpha']:g}, delta {cur['delta']:g}, cheap stage "
                f"{cur['cheap_stage']}, judge epoch {cur['judge_epoch']}"
            )
    rows = data["certifications"]
    if not rows:
        lines.append(f"no certifications stored ({data.get('uncertified') or JUDGE_DECIDES})")
    else:
        lines.append(
            f"{'status':<16}{'stratum':<12}{'prompt':<10}{'threshold':>9} {'alpha/delta':>11}"
            f"{'labels':>7}{'fail':>6}{'miss':>5}{'decided':>9}{'P(f|p)<=':>9}{'joint':>7}"
            f"{'saved':>7}  created (UTC)     id"
        )
    for r in rows:
        t = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        lines.append(
            f"{r['status']:<16}{r['stratum'][:11]:<12}{(r['prompt_version'] or '-')[:9]:<10}"
            f"{t:>9} {r['alpha']:>5g}/{r['delta']:<5g}{r['labels']:>7}{r['failing']:>6}"
            f"{r['misses']:>5}{_pct(r['decided_share']):>9}"
            f"{_pct(r['fail_given_pass_upper']):>9}{_conf(r['fail_given_pass_confidence']):>7}"
            f"{r['saved_judge_calls']:>7}  {r['created_at'][:16].replace('T', ' ')}  {r['id']}"
        )
        if r["withdrawn_reason"]:
            lines.append(f"{'':<16}withdrawn {r['withdrawn_at'][:16]}: {r['withdrawn_reason']}")
        elif r["status"] == "not_certified" and r["labels_needed"]:
            lines.append(f"{'':<16}needs {r['labels_needed']} labelled clusters at these rates")
    if rows:
        lines.append(
            "P(f|p)<=: upper bound of P(fail | passed locally); it holds jointly with the miss "
            "bound at confidence 'joint' = 1 - 2*delta_j (delta_j = delta/2^(j+1), the share "
            "of delta spent at the row's checkpoint j); only 'active' rows are used"
        )
    return "\n".join(lines)


def computed_table(rows: list[dict[str, Any]], uncertified: str = JUDGE_DECIDES) -> str:
    if not rows:
        return f"computed now: no calibration labels yet ({uncertified})"
    lines = ["computed now from the stored labels:"]
    for r in rows:
        where = f"{r['stratum']} (prompt {r['prompt_version'] or '-'}, stage {r['stage']})"
        if r.get("other_epoch"):
            where += f" of another judge epoch {r['judge_epoch']} (not used)"
        head = f"  {where}: {r['clusters']} labelled clusters"
        if not r["clusters"]:
            lines.append(f"  {where}: no labels since the key's last withdrawal")
        elif r["judge_drift_open"]:
            lines.append(f"{head}; a judge-drift alert is open: nothing is certified")
        elif r["certified"]:
            lines.append(
                f"{head}; certified at checkpoint {r['checkpoint_labels']}: threshold "
                f"{r['threshold']:.3f}, decides {_pct(r['decided_share'])}, "
                f"P(fail | passed) <= {_pct(r['fail_given_pass_upper'])} (jointly with the "
                f"miss bound at confidence {_conf(r['fail_given_pass_confidence'])})"
            )
        elif r["labels_needed"] is not None:
            lines.append(
                f"{head}; not certifiable yet: needs {r['labels_needed']} "
                f"({r['more_needed']} more) at the observed rates"
            )
        else:
            lines.append(f"{head}; not certifiable at the observed rates (too many misses)")
    return "\n".join(lines)


def certifiable_now(rows: list[dict[str, Any]]) -> bool:
    """Whether `compute_now` certifies any key of today's stage and judge epoch."""
    return any(r["certified"] and not r.get("other_epoch") for r in rows)
