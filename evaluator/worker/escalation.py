"""A judge budget's second stage: a cascade's judge call is charged when it escalates.

Intake draws an escalating rubric (the faithfulness cascade) with its probability p₁ but does
not charge it (evaluator.budget.admission); the job lists it under `"escalate"` in its wire
signals. When the cascade's local step is unsure and it would ask the judge, the gate bound
here charges that one call to the same caps, through the same Lua script intake admits with
(`BudgetGate.charge_escalation`), and writes its SQL admission row (evaluator.store.admissions,
kind "esc", checked against the day caps) before the judge is asked: an escalation is an
evaluation of its own, a repeat of it the same day (a retried job) is free. A confident
local pass costs nothing. Every run and every
escalation is counted, and the intake fits p₁ to the share that escalates.

When the cap refuses the call:

- a trace a tail rule sent waits for the window to end: the refusal becomes a JudgeDeferred
  (like a judge's long Retry-After), so the job is retried when the window ends and, on its
  last try, handed to the sweeper (evaluator.store.outbox) — never dropped;
- a rate trace gets no record for that rubric: the local score alone is not a verdict the
  cascade stands by, and no score is invented. It is counted in the intake's stats hash,
  `budget_refused_evaluations` per rubric, `not_sampled_budget` when nothing of the trace is
  left to record (as intake counts them).

A trace whose session is in the cascade's calibration draw (evaluator.worker.cascade_routing)
is judged without asking this gate: its verdict is a certification's label, and the draw is
exempt from the cap. It is counted as a run, not as an escalation, so p₁ is fitted to the
charged share only; the judge's spend beyond the cap is the draw's, audit_rate of the drawn
sessions in expectation. It is not capped per session: one session with many traces in the
draw is judged whole (all or none per cluster), uncharged.

The record's inclusion probability stays p₁ (escalating rubrics are not subject to a cap
window's room: their drawn p is their realised one). The cascade's score is a function of the trace
(the local step, and the judge when the local step is unsure): whether it escalates decides
how the score is computed, not whether the trace is in the sample, which the draw at intake
decided with probability p₁; so Horvitz-Thompson with weight 1/p₁ stays unbiased for the
cascade's metric. A refused escalation is the exception — a drawn trace with no record, and
one of the doubtful ones — which is why it is counted, and why p₁ is fitted to the measured
escalation share so that the room suffices.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evaluator.budget.admission import BudgetGate
from evaluator.intake.drain import escalating_of, stats_key
from evaluator.sampling import Reason
from evaluator.worker.runtime import Runtime
from judges.errors import EscalationRefused, JudgeDeferred
from judges.rubric import Rubric
from judges.types import Score

Outcome = Score | JudgeDeferred | EscalationRefused


@dataclass
class Escalations:
    """One job's escalation gate: `ask` is `Clients.escalation_gate` for its scorers."""

    budget: BudgetGate
    uncharged: frozenset[str]  # drawn at intake, not charged: charged here if they escalate
    asked: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=dict)  # rubric → end of the window

    async def ask(self, trace_id: str, rubric: str) -> bool:
        if rubric not in self.uncharged:
            return True  # charged at intake (or a job from before this stage existed)
        self.asked.add(rubric)
        wait = await self.budget.charge_escalation(trace_id, rubric, time.time())
        if wait:
            self.refused[rubric] = wait
        return not wait


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
    await escalations.budget.count_escalations(runs, sorted(escalations.asked), now_s)
    if refused:
        key = stats_key(runtime.settings.redis.key_prefix)
        pipe = escalations.budget.redis.pipeline(transaction=False)
        pipe.hincrby(key, "budget_refused_evaluations", refused)
        if not kept:
            pipe.hincrby(key, Reason.NOT_SAMPLED_BUDGET.value, 1)
        await pipe.execute()
    return kept, outcomes
