"""Quality x cost: what each answer that passed all of its rubrics cost, per label.

cost per pass = (judge cost of every evaluation + generator cost of every evaluated answer)
/ answers that passed every rubric that scored them. The generator's cost is the trace's own
`cost_usd` attribute when the app sends it, else its chat spans' token usage priced with
`[pricing]`. Answers with no `ok` record are left out of the passes and counted as
unscored; their judge cost still counts (it was spent).

    >>> acc = Acc(); acc.add(judge=0.01, generator=0.02, passed=True)
    >>> acc.add(judge=0.01, generator=0.02, passed=False); round(acc.cost_per_pass or 0, 2)
    0.06
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlmodel import col

from evaluator.store.models import EvalRecord, TraceRecord
from evaluator.store.store import Store
from evaluator.traces.model import Trace, parse_trace

By = Literal["prompt_version", "model", "feature", "tenant", "none"]
PriceFn = Callable[[str | None, int, int], float]
_CHUNK = 500


@dataclass
class Acc:
    answers: int = 0
    passes: int = 0
    unscored: int = 0
    judge_usd: float = 0.0
    generator_usd: float = 0.0

    def add(self, *, judge: float, generator: float, passed: bool | None) -> None:
        self.answers += 1
        self.judge_usd += judge
        self.generator_usd += generator
        if passed is None:
            self.unscored += 1
        elif passed:
            self.passes += 1

    @property
    def cost_per_pass(self) -> float | None:
        return (self.judge_usd + self.generator_usd) / self.passes if self.passes else None


def generator_cost(trace: Trace, price: PriceFn) -> float:
    """The app's own figure when it sent one, else the chat spans' tokens at list price."""
    own = trace.cost_usd
    if own is not None:
        return own
    total = 0.0
    for span in trace.spans:
        a = span.attributes
        tokens_in, tokens_out = (
            a.get("gen_ai.usage.input_tokens"),
            a.get("gen_ai.usage.output_tokens"),
        )
        if isinstance(tokens_in, int) and isinstance(tokens_out, int):
            model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model")
            total += price(model if isinstance(model, str) else None, tokens_in, tokens_out)
    return total


def cost_per_pass(
    store: Store, price: PriceFn, start: datetime, end: datetime, by: By = "prompt_version"
) -> dict[str, Any]:
    """Per group: answers, passes, judge and generator USD, cost per pass, over [start, end)."""
    r = EvalRecord
    query = select(
        col(r.trace_id), col(r.status), col(r.passed), col(r.judge_cost_usd),
        col(r.prompt_version), col(r.model), col(r.feature), col(r.tenant),
    ).where(col(r.created_at) >= start, col(r.created_at) < end)  # fmt: skip
    per_trace: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for tid, status, passed, cost, pv, model, feature, tenant in conn.execute(query):
            t = per_trace.setdefault(tid, {"judge": 0.0, "ok": [], "labels": {}})
            t["judge"] += cost or 0.0
            if status == "ok":
                t["ok"].append(bool(passed))
            t["labels"] = {"prompt_version": pv, "model": model, "feature": feature,
                           "tenant": tenant}  # fmt: skip
        generator = _generator_costs(conn, list(per_trace), price)
    groups: dict[str, Acc] = {}
    for tid, t in per_trace.items():
        key = "all" if by == "none" else str(t["labels"].get(by) or "(none)")
        passed = all(t["ok"]) if t["ok"] else None
        groups.setdefault(key, Acc()).add(
            judge=t["judge"], generator=generator.get(tid, 0.0), passed=passed
        )
    days = max((end - start).total_seconds() / 86400, 1e-9)
    return {
        "metric": "cost_per_pass",
        "by": by,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "groups": [
            {
                "key": key,
                "answers": a.answers,
                "passes": a.passes,
                "unscored": a.unscored,
                "pass_rate": a.passes / (a.answers - a.unscored)
                if a.answers > a.unscored
                else None,
                "judge_usd": a.judge_usd,
                "generator_usd": a.generator_usd,
                "cost_per_pass_usd": a.cost_per_pass,
                "usd_per_day": (a.judge_usd + a.generator_usd) / days,
            }
            for key, a in sorted(groups.items())
        ],
    }


def _generator_costs(conn: Any, trace_ids: Sequence[str], price: PriceFn) -> dict[str, float]:
    out: dict[str, float] = {}
    for i in range(0, len(trace_ids), _CHUNK):
        chunk = trace_ids[i : i + _CHUNK]
        rows = conn.execute(
            select(col(TraceRecord.trace_id), col(TraceRecord.payload)).where(
                col(TraceRecord.trace_id).in_(chunk)
            )
        )
        for tid, payload in rows:
            try:
                out[tid] = generator_cost(parse_trace(payload), price)
            except ValueError:
                continue  # a stored trace that no longer parses costs what we cannot price
    return out


def cost_table(doc: dict[str, Any]) -> str:
    header = f"{doc['by']:<20}{'answers':>8}{'passes':>8}{'judge $':>10}{'gen $':>10}{'$/pass':>10}"
    lines = [header, "-" * len(header)]
    for g in doc["groups"]:
        cpp = g["cost_per_pass_usd"]
        lines.append(
            f"{g['key'][:19]:<20}{g['answers']:>8}{g['passes']:>8}{g['judge_usd']:>10.4f}"
            f"{g['generator_usd']:>10.4f}{(f'{cpp:.4f}' if cpp is not None else '-'):>10}"
        )
    return "\n".join(lines)
