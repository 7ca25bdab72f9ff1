"""A judge budget's second stage: a cascade's judge call is charged when it escalates.

Intake draws an escalating rubric (the faithfulness cascade) with its probability p₁ but does
not charge it (evaluator.budget.admission); the job lists it under `"escalate"` in its wire
signals. When the cascade's local step is unsure and it would ask the judge, the job's
`Escalations` gate charges that one call to the same caps, through the same Lua script intake
admits with (`charge_escalation`), and writes its SQL admission row
(evaluator.store.admissions, kind "esc", checked against the day caps) before the judge is
asked: an escalation is an evaluation of its own, a repeat of it the same day (a retried
job) is free. A confident local pass costs nothing. Every run and every escalation is
counted (`count_escalations`), and the intake fits p₁ to the share that escalates
(evaluator.budget.allocation). What the job does with a refusal is the worker's
(evaluator.worker.escalation).

A trace whose session is in the cascade's calibration draw (evaluator.worker.cascade_routing)
is judged without asking this gate: its verdict is a certification's label, and the draw is
exempt from the cap. It is counted as a run, not as an escalation, so p₁ is fitted to the
charged share only; the judge's spend beyond the cap is the draw's, audit_rate of the drawn
sessions in expectation. It is not capped per session: one session with many traces in the
draw is judged whole (all or none per cluster), uncharged.

The record's inclusion probability stays p₁ (escalating rubrics are not subject to a cap
window's room: their drawn p is their realised one). The cascade's score is a function of the
trace (the local step, and the judge when the local step is unsure): whether it escalates
decides how the score is computed, not whether the trace is in the sample, which the draw at
intake decided with probability p₁; so Horvitz-Thompson with weight 1/p₁ stays unbiased for
the cascade's metric. A refused escalation is the exception — a drawn trace with no record,
and one of the doubtful ones — which is why it is counted, and why p₁ is fitted to the
measured escalation share so that the room suffices.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from evaluator.budget.admission import BudgetGate
from evaluator.budget.allocation import DAY_S
from evaluator.budget.state import ESCALATION_BUCKET_S, ESCALATION_BUCKETS, escalation_key
from evaluator.store.admissions import Admission, OverCap, admit, day_of


async def charge_escalation(gate: BudgetGate, trace_id: str, rubric: str, now_s: float) -> int:
    """Charge the judge call of an escalating rubric's run: one evaluation against the
    rubric's and the shared caps, through the script intake admits with. Returns 0 (charged:
    ask the judge) or the end of the window that refused it (epoch seconds). Once per trace
    and rubric per UTC day (the ledger, field kind "esc"): a job retried after a judge outage
    or a 429 on another rubric asks again — mostly answered by the reply cache, or not
    answered at all — and must not drain the day's budget with charges for calls that cost
    nothing."""
    evaluation = (gate.ledger_field_for("esc", trace_id, rubric), "1", gate.scope_index[rubric])
    wait = (await gate.run_admit([[evaluation]], now_s, honour_ledger=True))[0]
    if wait or gate.engine is None:
        return wait
    # Durable before the judge is asked: the SQL row, checked against the day's caps.
    row = Admission(day_of(now_s), "esc", trace_id, rubric)
    try:
        await asyncio.to_thread(_admit_alone, gate.engine, row, gate.day_caps)
    except OverCap:
        await gate.resync()  # Redis was behind SQL: rebuilt before the next admission
        return math.ceil((int(now_s // DAY_S) + 1) * DAY_S)
    return 0


async def count_escalations(
    gate: BudgetGate, runs: Sequence[str], escalated: Sequence[str], now_s: float
) -> None:
    """Count one job's runs of escalating rubrics and which of them asked the judge."""
    if not runs:
        return
    key = escalation_key(gate.prefix, int(now_s // ESCALATION_BUCKET_S))
    pipe = gate.redis.pipeline(transaction=False)
    for name in runs:
        pipe.hincrby(key, f"r:{name}", 1)
    for name in escalated:
        pipe.hincrby(key, f"e:{name}", 1)
    pipe.expire(key, ESCALATION_BUCKET_S * (ESCALATION_BUCKETS + 1))
    await pipe.execute()


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
        wait = await charge_escalation(self.budget, trace_id, rubric, time.time())
        if wait:
            self.refused[rubric] = wait
        return not wait

    async def count(self, runs: Sequence[str], now_s: float) -> None:
        """Count the job's runs of escalating rubrics and those that asked the judge."""
        await count_escalations(self.budget, runs, sorted(self.asked), now_s)


def _admit_alone(engine: Engine, row: Admission, caps: dict[str, int]) -> None:
    with engine.begin() as conn:
        admit(conn, [row], caps)
