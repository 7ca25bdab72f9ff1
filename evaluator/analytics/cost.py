"""Quality x cost: what each answer that passed all of its rubrics cost, per label.

cost per pass = (judge cost of every evaluation + generator cost of every evaluated answer)
/ answers that passed every rubric that scored them. The generator's cost is the trace's own
`cost_usd` attribute when the app sends it, else its chat spans' token usage priced with
`[pricing]`. Answers with no `ok` record are left out of the passes and counted as
unscored; their judge cost still counts (it was spent).

A model without a `[pricing]` entry has an unknown price, never $0: a judge model that made
calls without one makes its group's judge cost `null` (named in `unpriced_models`), and so
its cost per pass; the same for a generator model whose answers carry tokens but no
`cost_usd`. Calls a scorer made to the generator (self-consistency re-sampling, in the
record's `details.generator_calls` / `generator_cost_usd`) are told apart from the judge's
(`split_record`).

    >>> acc = Acc(); acc.add(judge=0.01, generator=0.02, passed=True)
    >>> acc.add(judge=0.01, generator=0.02, passed=False); round(acc.cost_per_pass or 0, 2)
    0.06
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
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
    unpriced: set[str] = field(default_factory=set)  # models that made calls, no price
    judge_unknown: bool = False
    generator_unknown: bool = False

    def add(
        self,
        *,
        judge: float,
        generator: float,
        passed: bool | None,
        judge_known: bool = True,
        generator_known: bool = True,
    ) -> None:
        self.answers += 1
        self.judge_usd += judge
        self.generator_usd += generator
        self.judge_unknown |= not judge_known
        self.generator_unknown |= not generator_known
        if passed is None:
            self.unscored += 1
        elif passed:
            self.passes += 1

    @property
    def cost_per_pass(self) -> float | None:
        if self.judge_unknown or self.generator_unknown:
            return None
        return (self.judge_usd + self.generator_usd) / self.passes if self.passes else None


@dataclass(frozen=True, slots=True)
class RecordSpend:
    """One record's calls and USD, the judge's apart from the generator's."""

    judge_calls: int
    judge_usd: float
    generator_calls: int
    generator_usd: float


def split_record(judge_calls: int, judge_cost_usd: float, details: Any) -> RecordSpend:
    """A record's usage counts every call its scorer made; the generator's part is in
    `details` (self-consistency re-sampling), the rest is the judge's (pure).

    >>> split_record(5, 0.004, {"generator_calls": 3, "generator_cost_usd": 0.001})
    RecordSpend(judge_calls=2, judge_usd=0.003, generator_calls=3, generator_usd=0.001)
    """
    d = details if isinstance(details, dict) else {}
    gen_calls = int(d.get("generator_calls") or 0)
    gen_usd = float(d.get("generator_cost_usd") or 0.0)
    return RecordSpend(
        judge_calls=max(0, (judge_calls or 0) - gen_calls),
        judge_usd=round(max(0.0, (judge_cost_usd or 0.0) - gen_usd), 12),
        generator_calls=gen_calls,
        generator_usd=gen_usd,
    )


def priced(pricing: Collection[str] | None, model: str | None) -> bool:
    """Does [pricing] know this model? Without a price list (None) every model counts as
    priced (callers that pass their own price function)."""
    return pricing is None or (model or "") in pricing


def generator_cost(
    trace: Trace, price: PriceFn, pricing: Collection[str] | None = None
) -> float | None:
    """The app's own figure when it sent one, else the chat spans' tokens at list price;
    None when a span's model has no price in `pricing` (unknown, not free)."""
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
            name = model if isinstance(model, str) else None
            if not priced(pricing, name):
                return None
            total += price(name, tokens_in, tokens_out)
    return total


def cost_per_pass(
    store: Store,
    price: PriceFn,
    start: datetime,
    end: datetime,
    by: By = "prompt_version",
    *,
    pricing: Collection[str] | None = None,
) -> dict[str, Any]:
    """Per group: answers, passes, judge and generator USD, cost per pass, over [start, end).

    `pricing`: the models [pricing] knows; a judge or generator model outside it makes the
    group's cost unknown (null), never $0. None: every model counts as priced."""
    r = EvalRecord
    query = select(
        col(r.trace_id),
        col(r.status),
        col(r.passed),
        col(r.judge_cost_usd),
        col(r.prompt_version),
        col(r.model),
        col(r.feature),
        col(r.tenant),
        col(r.judge_model),
        col(r.judge_calls),
        col(r.details),
    ).where(col(r.created_at) >= start, col(r.created_at) < end)
    per_trace: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            tid, status, passed, cost, pv, model, feature, tenant, judge_model, calls, det = row
            t = per_trace.setdefault(tid, {"judge": 0.0, "ok": [], "unpriced": set()})
            spend = split_record(calls, cost, det)
            t["judge"] += spend.judge_usd + spend.generator_usd  # both spent on evaluating
            if spend.judge_calls and not priced(pricing, judge_model):
                t["unpriced"].add(judge_model or "(no model name)")
            if spend.generator_calls and not priced(pricing, model):
                t["unpriced"].add(model or "(no model name)")
            if status == "ok":
                t["ok"].append(bool(passed))
            t["labels"] = {
                "prompt_version": pv,
                "model": model,
                "feature": feature,
                "tenant": tenant,
            }
        generator = _generator_costs(conn, list(per_trace), price, pricing)
    groups: dict[str, Acc] = {}
    for tid, t in per_trace.items():
        key = "all" if by == "none" else str(t["labels"].get(by) or "(none)")
        passed = all(t["ok"]) if t["ok"] else None
        gen = generator.get(tid, 0.0)
        acc = groups.setdefault(key, Acc())
        acc.add(
            judge=t["judge"],
            generator=gen or 0.0,
            passed=passed,
            judge_known=not t["unpriced"],
            generator_known=gen is not None,
        )
        acc.unpriced |= t["unpriced"]
        if gen is None:
            acc.unpriced.add(str(t["labels"].get("model") or "(no model name)"))
    days = max((end - start).total_seconds() / 86400, 1e-9)
    return {
        "metric": "cost_per_pass",
        "by": by,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "groups": [_group(key, a, days) for key, a in sorted(groups.items())],
    }


def _group(key: str, a: Acc, days: float) -> dict[str, Any]:
    judge = None if a.judge_unknown else a.judge_usd
    gen = None if a.generator_unknown else a.generator_usd
    return {
        "key": key,
        "answers": a.answers,
        "passes": a.passes,
        "unscored": a.unscored,
        "pass_rate": a.passes / (a.answers - a.unscored) if a.answers > a.unscored else None,
        "judge_usd": judge,
        "generator_usd": gen,
        "cost_per_pass_usd": a.cost_per_pass,
        "usd_per_day": None if judge is None or gen is None else (judge + gen) / days,
        # Models that made calls without a [pricing] entry: why a cost above is null.
        "unpriced_models": sorted(a.unpriced),
    }


def _generator_costs(
    conn: Any, trace_ids: Sequence[str], price: PriceFn, pricing: Collection[str] | None
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for i in range(0, len(trace_ids), _CHUNK):
        chunk = trace_ids[i : i + _CHUNK]
        rows = conn.execute(
            select(col(TraceRecord.trace_id), col(TraceRecord.payload)).where(
                col(TraceRecord.trace_id).in_(chunk)
            )
        )
        for tid, payload in rows:
            try:
                out[tid] = generator_cost(parse_trace(payload), price, pricing)
            except ValueError:
                continue  # a stored trace that no longer parses costs what we cannot price
    return out


UNKNOWN = "unknown"  # how a cost without a price shows: never $0


def usd(value: float | None, places: int = 4) -> str:
    """A USD amount for a table; "unknown" when a model had no price.

    >>> usd(0.5), usd(None)
    ('$0.5000', 'unknown')
    """
    return UNKNOWN if value is None else f"${value:.{places}f}"


def cost_table(doc: dict[str, Any]) -> str:
    header = f"{doc['by']:<20}{'answers':>8}{'passes':>8}{'judge $':>10}{'gen $':>10}{'$/pass':>10}"
    lines = [header, "-" * len(header)]
    unpriced: set[str] = set()
    for g in doc["groups"]:
        cpp = g["cost_per_pass_usd"]
        unpriced |= set(g.get("unpriced_models") or ())
        per_pass = "-" if cpp is None and not g.get("unpriced_models") else usd(cpp)
        lines.append(
            f"{g['key'][:19]:<20}{g['answers']:>8}{g['passes']:>8}{usd(g['judge_usd']):>10}"
            f"{usd(g['generator_usd']):>10}{per_pass:>10}"
        )
    if unpriced:
        lines.append(
            f"cost unknown: no [pricing] entry for {', '.join(sorted(unpriced))}; add the "
            "model to [pricing] (input_per_mtok, output_per_mtok)"
        )
    return "\n".join(lines)
