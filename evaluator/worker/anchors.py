"""Re-score a rubric's labelled anchor set to catch a judge whose agreement drifts.

`run_anchors(runtime, rubric)` samples the set (stratified, judges.anchors), prices the run
before it starts, scores every item with the reply cache bypassed (a cached verdict would
hide the very drift we look for), stores the agreement with bootstrap intervals in
`anchor_runs` and compares it with the rubric's previous run (judges.drift), opening a
JUDGE-DRIFT alert on a significant drop. With `[anchors] min_agreement` set, every run —
the first one too — is also held against that absolute floor (judges.anchors.check_floor:
the exact lower bound of the balanced accuracy, errors counted as disagreements), opening a
JUDGE-FLOOR alert while the bound is below it. Both alerts, opened or resolved, go to the
alert sinks like every other kind (evaluator.analytics.alert_delivery). `anchors_job(ctx)` is
the cron body: it runs every rubric whose epoch changed or whose `every` elapsed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from evaluator.analytics import judge_drift
from evaluator.analytics.alert_delivery import AlertEvent, deliver_alerts, transition
from evaluator.analytics.attribution_data import revise_open
from evaluator.config.policy import parse_duration
from evaluator.outputs.webhooks import AlertSinks, build_sinks
from evaluator.sources.labelled import read_labelled
from evaluator.store.trust_models import AnchorRun
from evaluator.traces.cases import build_case
from evaluator.worker.runtime import Runtime
from judges.anchors import (
    AnchorSpec,
    FloorCheck,
    PriceEstimate,
    calls_per_item,
    check_floor,
    estimate_price,
    rotating_seed,
    stratified_sample,
)
from judges.drift import agreement_with_intervals
from judges.llm.client import JudgeClient
from judges.redact import redact_case
from judges.rubric import Rubric
from judges.scorers.registry import identity_for, run_scorer
from judges.types import EvalCase, Score, Status, Usage

log = logging.getLogger("evaluator.worker.anchors")
# Until a run has measured them: prompt overhead (instructions, schema) and reply size.
PROMPT_OVERHEAD_TOKENS = 400
DEFAULT_OUTPUT_TOKENS = 150
ALERT_COOL_DOWN = timedelta(hours=12)


class _Uncached:
    """The judge with the reply cache bypassed on every call, whichever scorer calls it."""

    def __init__(self, inner: JudgeClient) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete(self, messages: Any, schema: Any, **kwargs: Any) -> Any:
        return await self._inner.complete(messages, schema, **{**kwargs, "use_cache": False})


@dataclass(frozen=True, slots=True)
class AnchorItem:
    key: str
    case: EvalCase
    positive: bool  # fails (hallucinated)


@dataclass
class AnchorOutcome:
    rubric: str
    epoch: str
    estimate: PriceEstimate
    run: AnchorRun | None = None
    skipped: str = ""
    alert: str = "none"
    floor_alert: str = "none"  # the min_agreement alert: opened / resolved / ... / none

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rubric": self.rubric,
            "epoch": self.epoch,
            "estimate": self.estimate.to_json(),
            "alert": self.alert,
            "floor_alert": self.floor_alert,
        }
        if self.skipped:
            out["skipped"] = self.skipped
        if self.run is not None:
            out |= {"run_id": self.run.id, "n": self.run.n, "scored": self.run.scored}
            out |= {"metrics": self.run.metrics, "drift": self.run.drift}
            out |= {"judge_calls": self.run.judge_calls, "cost_usd": self.run.cost_usd}
        return out


def anchor_epoch(runtime: Runtime, rubric: Rubric) -> str:
    """The rubric's evaluator epoch: the same definition eval records and the reply cache use
    (judges.provenance.VerdictIdentity), so anchor runs and records line up by epoch."""
    return identity_for(rubric, runtime.clients).epoch()


def anchor_path(runtime: Runtime, spec: AnchorSpec) -> Path:
    path = Path(spec.file)
    return path if path.is_absolute() else runtime.rubrics.directory / path


def load_anchor_items(path: Path) -> list[AnchorItem]:
    items = []
    for item in read_labelled(path):
        if item.passed is None:
            raise ValueError(f"{path}: anchor {item.trace.trace_id} has no label")
        try:
            case = build_case(item.trace)
        except ValueError as exc:
            raise ValueError(f"{path}: anchor {item.trace.trace_id}: {exc}") from None
        items.append(AnchorItem(f"{case.trace_id}/{case.span_id}", case, not item.passed))
    return items


def due_reason(last: AnchorRun | None, epoch: str, every: timedelta, now: datetime) -> str | None:
    """Why a run is due now, or None (pure)."""
    if last is None or last.epoch != epoch:
        return "new_epoch"
    if now - last.started_at >= every:
        return "schedule"
    return None


def price_before(
    runtime: Runtime, rubric: Rubric, items: Sequence[AnchorItem], last: AnchorRun | None
) -> PriceEstimate:
    """Measured tokens per call from the last run when there is one, else a text-size guess."""
    model = rubric.judge.model or runtime.settings.judge.model
    per_item = calls_per_item(
        rubric.scorer, rubric.resolved_method, int(rubric.options.get("samples", 1) or 1)
    )
    if last is not None and last.judge_calls:
        per_item = last.judge_calls / max(last.scored, 1)
        tin, tout = last.input_tokens / last.judge_calls, last.output_tokens / last.judge_calls
    else:
        chars = sum(
            len(i.case.question) + len(i.case.answer) + sum(len(c.text) for c in i.case.contexts)
            for i in items
        )
        tin = chars / 4 / max(len(items), 1) + PROMPT_OVERHEAD_TOKENS
        tout = DEFAULT_OUTPUT_TOKENS
    return estimate_price(len(items), per_item, tin, tout, runtime.settings.cost_usd, model)


async def _score_all(
    runtime: Runtime, rubric: Rubric, items: Sequence[AnchorItem], concurrency: int
) -> list[Score]:
    clients = runtime.clients
    if clients.judge is not None:
        clients = dataclasses.replace(clients, judge=cast(JudgeClient, _Uncached(clients.judge)))
    limit = asyncio.Semaphore(concurrency)

    async def one(item: AnchorItem) -> Score:
        case = item.case
        if runtime.settings.redaction.enabled:
            case = redact_case(case, runtime.settings.redaction.kinds)
        async with limit:
            return await run_scorer(case, rubric, clients)

    return list(await asyncio.gather(*(one(i) for i in items)))


def outcomes_of(
    items: Sequence[AnchorItem], scores: Sequence[Score], threshold: float
) -> dict[str, list[Any]]:
    """{key: [positive, predicted_fail, risk]} over the items that were scored."""
    out: dict[str, list[Any]] = {}
    for item, score in zip(items, scores, strict=True):
        if score.status is Status.OK and score.value is not None:
            value = float(score.value)
            out[item.key] = [item.positive, value < threshold, round(1.0 - value, 6)]
    return out


def floor_of(
    spec: AnchorSpec, items: Sequence[AnchorItem], scores: Sequence[Score], threshold: float
) -> FloorCheck | None:
    """The run against `min_agreement` (None without one); an item without a verdict counts
    as a disagreement."""
    if spec.min_agreement is None:
        return None
    agreed: list[bool | None] = []
    for item, score in zip(items, scores, strict=True):
        if score.status is not Status.OK or score.value is None:
            agreed.append(None)
            continue
        fails = (not score.passed) if score.passed is not None else float(score.value) < threshold
        agreed.append(fails == item.positive)
    return check_floor(
        [i.positive for i in items], agreed, floor=spec.min_agreement, alpha=spec.floor_alpha
    )


async def run_anchors(
    runtime: Runtime,
    rubric: Rubric,
    *,
    trigger: str = "manual",
    now: datetime | None = None,
    concurrency: int = 16,
    bootstrap_reps: int = 1000,
    sinks: AlertSinks | None = None,
) -> AnchorOutcome:
    """Re-score the rubric's anchor set once; store the run; raise or resolve drift alerts
    and deliver them to `sinks` (None: the ones `[alerts]` configures)."""
    spec = rubric.anchors
    if spec is None:
        raise ValueError(f"rubric {rubric.name!r} has no [anchors] table")
    now = now or datetime.now(UTC)
    store = runtime.store
    epoch = anchor_epoch(runtime, rubric)
    every_item = await asyncio.to_thread(load_anchor_items, anchor_path(runtime, spec))
    last = await asyncio.to_thread(judge_drift.latest_run, store, rubric.name)
    seed = str(spec.seed)
    if spec.resample:
        seed = rotating_seed(
            spec.seed, await asyncio.to_thread(judge_drift.count_runs, store, rubric.name)
        )
    chosen = stratified_sample(
        [i.key for i in every_item], [i.positive for i in every_item], spec.max_items, seed=seed
    )
    items = [every_item[i] for i in chosen]
    estimate = price_before(runtime, rubric, items, last)
    outcome = AnchorOutcome(rubric=rubric.name, epoch=epoch, estimate=estimate)
    if spec.max_usd is not None and estimate.usd > spec.max_usd:
        outcome.skipped = f"estimated ${estimate.usd:.4f} exceeds anchors.max_usd ${spec.max_usd}"
        log.warning("anchors %s: %s", rubric.name, outcome.skipped)
        return outcome
    log.info(
        "anchors %s: %d items, estimated %d calls, $%.4f",
        rubric.name,
        len(items),
        estimate.calls,
        estimate.usd,
    )
    scores = await _score_all(runtime, rubric, items, concurrency)
    usage = sum((s.usage for s in scores), Usage())
    outcomes = outcomes_of(items, scores, rubric.pass_threshold)
    values = list(outcomes.values())
    metrics = agreement_with_intervals(
        [v[0] for v in values],
        [v[1] for v in values],
        [v[2] for v in values],
        reps=bootstrap_reps,
        seed=spec.seed,
    )
    metrics["statuses"] = {st.value: sum(s.status is st for s in scores) for st in Status}
    floor = floor_of(spec, items, scores, rubric.pass_threshold)
    if floor is not None:
        metrics["floor"] = floor.to_json()
    reference = await asyncio.to_thread(judge_drift.reference_run, store, rubric.name, epoch)
    drift = judge_drift.compare_runs(
        reference.outcomes if reference is not None else {},
        outcomes,
        alpha=spec.alpha,
        min_drop=spec.min_drop,
    )
    run = AnchorRun(
        rubric=rubric.name,
        rubric_version=rubric.version,
        epoch=epoch,
        started_at=now,
        finished_at=datetime.now(UTC),
        trigger=trigger,
        n=len(items),
        scored=len(outcomes),
        metrics=metrics,
        drift=drift.to_json() if drift is not None else {},
        outcomes=outcomes,
        estimate=estimate.to_json(),
        judge_calls=usage.calls,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
    )
    run = await asyncio.to_thread(judge_drift.save_run, store, run)
    outcome.run = run
    outcome.alert, alert = await asyncio.to_thread(
        judge_drift.raise_or_resolve, store, rubric.name, drift, run, now, ALERT_COOL_DOWN
    )
    events: list[AlertEvent] = transition(outcome.alert, alert)
    if floor is not None:
        outcome.floor_alert, alert = await asyncio.to_thread(
            judge_drift.floor_alert, store, rubric.name, floor, run, now, ALERT_COOL_DOWN
        )
        events += transition(outcome.floor_alert, alert)
    if events:
        await _deliver(runtime, events, sinks)
    # Open regression alerts that could not check the judge when they opened can now.
    await asyncio.to_thread(revise_open, store, rubric, runtime.settings.alerts, now)
    return outcome


async def _deliver(runtime: Runtime, events: list[AlertEvent], sinks: AlertSinks | None) -> None:
    if sinks is not None:
        await deliver_alerts(runtime.store, sinks, events, runtime.otel)
        return
    own = build_sinks(runtime.settings.alerts, os.environ)
    try:
        await deliver_alerts(runtime.store, own, events, runtime.otel)
    finally:
        await own.aclose()


async def anchors_job(ctx: dict[str, Any]) -> dict[str, Any]:
    """Cron body: run each rubric's anchors when its epoch is new or `every` has elapsed."""
    runtime: Runtime = ctx["runtime"]
    now = datetime.now(UTC)
    report: dict[str, Any] = {"ran": [], "errors": []}
    for rubric in runtime.rubrics.rubrics:
        if rubric.anchors is None:
            continue
        try:
            last = await asyncio.to_thread(judge_drift.latest_run, runtime.store, rubric.name)
            reason = due_reason(
                last, anchor_epoch(runtime, rubric), parse_duration(rubric.anchors.every), now
            )
            if reason is None:
                continue
            outcome = await run_anchors(runtime, rubric, trigger=reason, now=now)
            report["ran"].append(outcome.to_json() | {"trigger": reason})
        except Exception as exc:  # one rubric's bad anchor file must not stop the others
            log.exception("anchors %s failed", rubric.name)
            report["errors"].append(f"{rubric.name}: {type(exc).__name__}: {exc}")
    return report
