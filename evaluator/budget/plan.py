"""The judge budget's configuration: settings and rubrics -> the allocation's `BudgetPlan`.

`evaluator.worker.runtime` builds it for the intake's sampling configuration, the worker's
budget gate and the regression check's inclusion floors; the allocation itself is pure
arithmetic on the plan (`evaluator.budget.allocation`).
"""

from __future__ import annotations

from evaluator.budget.allocation import BudgetPlan, RubricPlan, cap_from
from evaluator.config.rubrics import RubricSet
from evaluator.config.settings import Settings
from judges.scorers.registry import escalates


def budget_plan(settings: Settings, rubrics: RubricSet) -> BudgetPlan | None:
    """The allocation's configuration; None when no cap is set anywhere (no budget)."""
    b = settings.budget
    shared = cap_from(b.calls_per_minute, b.usd_per_day, b.usd_per_evaluation)
    plans = tuple(
        RubricPlan(
            name=r.name,
            rate=settings.sampling.default_rate if r.sampling.rate is None else r.sampling.rate,
            cap=cap_from(r.budget.calls_per_minute, r.budget.usd_per_day, b.usd_per_evaluation),
            applies=tuple(
                (label, allowed)
                for label, allowed in (
                    ("feature", r.applies_to.features),
                    ("tenant", r.applies_to.tenants),
                    ("prompt_version", r.applies_to.prompt_versions),
                )
                if allowed
            ),
            escalates=escalates(r),
        )
        for r in rubrics.rubrics
    )
    if not shared.any and not any(p.cap.any for p in plans):
        return None
    return BudgetPlan(
        rubrics=plans,
        shared=shared,
        boost_rate=b.boost_rate,
        boost_first_traces=b.boost_first_traces,
        boost_hours=b.boost_hours,
        min_rate=b.min_rate,
        carry=b.carry,
        burst=b.burst,
        boost_share=b.boost_share,
        window_s=b.window_s,
    )
