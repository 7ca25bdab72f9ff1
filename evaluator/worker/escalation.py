"""What a job does when the budget refuses a cascade's escalation.

Intake draws an escalating rubric (the faithfulness cascade) without charging it; the job
charges the judge call when the cascade escalates, through its `Escalations` gate
(evaluator.budget.escalation, where the charge and its guarantee are described). When the cap
refuses the call:

- a trace a tail rule sent waits for the window to end: the refusal becomes a JudgeDeferred
  (like a judge's long Retry-After), so the job is retried when the window ends and, on its
  last try, handed to the sweeper (evaluator.store.outbox) — never dropped;
- a rate trace gets no record for that rubric: the local score alone is not a verdict the
  cascade stands by, and no score is invented. It is counted in the intake's stats hash,
  `budget_refused_evaluations` per rubric, `not_sampled_budget` when nothing of the trace is
  left to record (as intake counts them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from evaluator.budget.escalation import Escalations
from evaluator.intake.drain import escalating_of, stats_key
from evaluator.sampling import Reason
from evaluator.worker.runtime import Runtime
from judges.errors import EscalationRefused, JudgeDeferred
from judges.rubric import Rubric
from judges.types import Score

Outcome = Score | JudgeDeferred | EscalationRefused


def escalations_for(runtime: Runtime, wire_signals: dict[str, Any]) -> Escalations | None:
    """The gate for a job whose intake left escalating rubrics uncharged (None: nothing to
    charge here — no budget, or every rubric was charged at intake)."""
    uncharged = escalating_of(wire_signals)
    if runtime.budget is None or not uncharged:
        return None
    return Escalations(runtime.budget, uncharged)


async def settle(
    runtime: Runtime,
    escalations: Escalations | None,
    selected: Sequence[tuple[Rubric, Reason]],
    results: Sequence[tuple[Outcome, float]],
) -> tuple[list[tuple[Rubric, Reason]], list[tuple[Score | JudgeDeferred, float]]]:
    """The job's rubrics and results once refused escalations are settled (see the module
    docstring), after counting the runs and escalations the rate fitting reads."""
    now_s = time.time()
    kept: list[tuple[Rubric, Reason]] = []
    outcomes: list[tuple[Score | JudgeDeferred, float]] = []
    refused = 0
    for (rubric, reason), (outcome, latency) in zip(selected, results, strict=True):
        if not isinstance(outcome, EscalationRefused):
            kept.append((rubric, reason))
            outcomes.append((outcome, latency))
        elif reason is Reason.RATE:
            refused += 1
        else:
            ends = escalations.refused.get(rubric.name, now_s) if escalations else now_s
            wait = JudgeDeferred(
                f"{outcome}; the trace waits for the next budget window",
                retry_after_s=max(1.0, ends - now_s),
                budget=True,
            )
            kept.append((rubric, reason))
            outcomes.append((wait, latency))
    if escalations is None:
        return kept, outcomes  # no gate: no refusal either
    runs = [r.name for r, _ in selected if r.name in escalations.uncharged]
    await escalations.count(runs, now_s)
    if refused:
        key = stats_key(runtime.settings.redis.key_prefix)
        pipe = escalations.budget.redis.pipeline(transaction=False)
        pipe.hincrby(key, "budget_refused_evaluations", refused)
        if not kept:
            pipe.hincrby(key, Reason.NOT_SAMPLED_BUDGET.value, 1)
        await pipe.execute()
    return kept, outcomes
