"""`evaluator health`'s judge-agreement line: each rubric's last anchor run against its
`[anchors] min_agreement` floor (evaluator.worker.anchors, judges.anchors.check_floor).

A judge below its floor is a warning, not a failure: the worker, Redis and the database
still work, and `health` answers whether they do; the judge's verdicts are what cannot be
trusted, which the warning (and the open judge_floor alert) says.
"""

from __future__ import annotations

from typing import Any

from evaluator.config.settings import Settings


def check_anchors(settings: Settings, rubrics: Any) -> dict[str, Any]:
    """{"ok": True, "floors": {rubric: state}, "warning": ...} over the rubrics with a
    floor; a rubric without a run yet says so."""
    from evaluator.analytics.judge_drift import latest_run
    from evaluator.store.store import Store

    floored = [r for r in rubrics.rubrics if r.anchors and r.anchors.min_agreement is not None]
    if not floored:
        return {"ok": True, "with_floor": 0}
    try:
        store = Store(settings.database.url, migrate=False)
        try:
            runs = {r.name: latest_run(store, r.name) for r in floored}
        finally:
            store.close()
    except Exception as exc:  # the database check reports why
        return {"ok": True, "checked": False, "why": str(exc).splitlines()[0][:200]}
    states: dict[str, Any] = {}
    warnings: list[str] = []
    for rubric in floored:
        run = runs[rubric.name]
        floor = ((run.metrics or {}).get("floor") or {}) if run is not None else {}
        if not floor:
            states[rubric.name] = "no anchor run with a floor yet"
            continue
        assert run is not None  # a floor comes from a run
        states[rubric.name] = floor
        if floor.get("below"):
            warnings.append(
                f"{rubric.name}: judge agreement lower bound {floor['lower']:.3f} < "
                f"min_agreement {floor['min_agreement']} (balanced accuracy "
                f"{floor['balanced_accuracy']:.3f}, {floor['unscored']} of "
                f"{floor['n_pos'] + floor['n_neg']} anchor items unscored, run {run.id}): "
                "its verdicts are not shown to agree with the labels"
            )
    out: dict[str, Any] = {
        "ok": True,
        "with_floor": len(floored),
        "below_floor": len(warnings),
        "floors": states,
    }
    if warnings:
        out["warnings"] = warnings
        out["warning"] = "; ".join(warnings)
    return out
