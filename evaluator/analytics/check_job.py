"""The regression cron job: read group statistics from SQL, decide, open/resolve alerts.

Per rubric and group (rubric × `group_by` labels), two kinds of check:

* `drop` — the recent window against the rolling baseline before it. What pages is the
  sequential e-detector folded over the window's scores (recomputed each run, so no state
  to keep: a detector restarted later never holds more evidence than one that ran all
  along, so recomputing cannot add false alerts); the fixed-window test, corrected across
  the run's groups with `adjust_verdicts`, is reported next to it (`detector = "window"`
  or `"both"` lets it page too).
* `version` — a group first seen within the baseline period (a new prompt version or
  model) against the (prompt version, model) that served the same scope just before it,
  with an e-process from the new group's first score (valid however often it is re-run).

Every group is also split by evaluator epoch (judges.provenance): scores of two evaluators
are never pooled or compared, so an epoch change is never reported as a drop. A new epoch's
group has no baseline of its own at first (nothing to page on), then builds it from its own
first scores; a new prompt version is compared with its predecessor within the same epoch.

Statistics come from SQL aggregates (COUNT, SUM, SUM of squares, SUM(passed), and the same
sums weighted by 1/inclusion probability); raw scores are read only for the window of groups
that have enough samples, in the order their traces happened. Records are weighted by 1/p
(evalcore.weights): the tests see the Hájek mean and pass rate with ⌊ESS⌋ in
place of n, the e-detector bets Horvitz–Thompson style (`regression.advance`); with every
p = 1 all of it is the unweighted check.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from evalcore.intervals import GroupStats
from evalcore.weights import WeightedStats
from evaluator.analytics.alerts import (
    alert_to_json,
    describe,
    group_key,
    in_cool_down,
    open_alerts,
    policy_for,
    save,
    try_open,
)
from evaluator.analytics.attribution_data import attribution_for
from evaluator.analytics.ppi_regression import describe_estimator, ppi_sequential, ppi_verdict
from evaluator.analytics.ppi_trends import cascade_stream
from evaluator.analytics.queries import (
    DEFAULT_MAX_LAG,
    VERSION_LABELS,
    Clock,
    Key,
    aggregates,
    first_seen,
    match_labels,
    predecessor,
    scores_in_order,
    what_changed,
    worst_traces,
)
from evaluator.analytics.regression import (
    Verdict,
    adjust_verdicts,
    advance,
    compare_stats,
    sequential_verdict,
    start_sequential,
    window_bounds,
)
from evaluator.config.policy import CheckConfig
from evaluator.config.rubrics import RubricSet
from evaluator.config.settings import AlertsSettings
from evaluator.outputs.otel import EvaluationExporter
from evaluator.outputs.webhooks import AlertSinks, build_sinks
from evaluator.store.models import AlertRecord, utcnow
from evaluator.store.store import Store
from judges.rubric import Rubric
from judges.scorers.registry import calls_judge

log = logging.getLogger("evaluator.analytics.alerts")


@dataclass(frozen=True)
class Finding:
    """One group's outcome for one kind of check in one run."""

    kind: str
    labels: dict[str, str | None]
    verdict: Verdict
    alarm: bool
    window_stats: GroupStats  # the group's scores in the recent window (for recovery)
    changed: dict[str, Any] = field(default_factory=dict)
    window_start: datetime | None = None
    fixed: Verdict | None = None
    estimator: dict[str, Any] | None = None  # cascade rubrics: which estimator (`_named`)


@dataclass
class CheckReport:
    opened: list[AlertRecord] = field(default_factory=list)
    resolved: list[AlertRecord] = field(default_factory=list)
    suppressed: int = 0  # alarms inside a cool-down
    groups: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "opened": len(self.opened),
            "resolved": len(self.resolved),
            "suppressed": self.suppressed,
            "groups": self.groups,
            "errors": self.errors,
        }


# --- SQL ------------------------------------------------------------------------------------


def grouping(cfg: CheckConfig) -> tuple[str, ...]:
    """The labels a group is keyed by: the configured ones, then the evaluator epoch."""
    return cfg.group_by if "epoch" in cfg.group_by else (*cfg.group_by, "epoch")


def check_rubric(
    session: Session,
    rubric: str,
    cfg: CheckConfig,
    pass_threshold: float | None,
    now: datetime,
    max_lag: timedelta = DEFAULT_MAX_LAG,
    pi_floor: float | None = None,
) -> tuple[list[Finding], dict[Key, GroupStats]]:
    """Findings of both kinds, and every group's window statistics (for recovery).

    Every window is read on one clock (`queries.Clock`: trace time clamped into [written −
    max_lag, written]); a new group starts at its earliest record on that clock, so its
    stream holds every record it has, the first burst included. `pi_floor` (a cascade
    rubric's audit rate): the sequential checks bet on PPI pseudo-outcomes (`_ppi`)."""
    p, labels = cfg.policy, grouping(cfg)
    clock = Clock.of(session, max_lag)
    base_lo, win_lo = window_bounds(now, p)
    base, cur = (
        aggregates(session, clock, rubric, labels, base_lo, win_lo),
        aggregates(session, clock, rubric, labels, win_lo, now),
    )
    fixed = adjust_verdicts(
        {k: compare_stats(base.get(k, GroupStats()), s, p) for k, s in cur.items()}, p
    )
    findings: list[Finding] = []
    for key, stats in cur.items():
        names = dict(zip(labels, key, strict=True))
        b = base.get(key, GroupStats())
        if b.n >= p.min_samples and stats.n >= p.min_samples:
            spans = ((base_lo, win_lo), (win_lo, now))
            got = _ppi(session, clock, rubric, labels, (key, key), spans, cfg, False, pi_floor)
            if got is None:
                state = start_sequential(
                    b,
                    p,
                    known_start=False,
                    pass_threshold=pass_threshold,
                    max_weight=cfg.max_weight,
                )
                window = scores_in_order(session, clock, rubric, labels, key, win_lo, now)
                state = advance(state, [x for x, _ in window], p, [q for _, q in window])
                got = (state.alarm_at is not None, sequential_verdict(state, p), None)
            seq_alarm, seq, estimator = got
            alarm = _pages(cfg.detector, seq_alarm, fixed[key].regression)
            use_seq = seq_alarm or cfg.detector == "sequential"
            findings.append(
                Finding(
                    "drop",
                    names,
                    seq if use_seq else fixed[key],
                    alarm,
                    stats,
                    {},
                    win_lo,
                    fixed[key],
                    _named(estimator, use_seq, pi_floor),
                )
            )
        new_at = first_seen(session, clock, rubric, labels, key, now - p.baseline)
        if new_at is None or not set(VERSION_LABELS) & set(labels):
            continue
        pred = predecessor(session, clock, rubric, labels, key, new_at)
        if pred is None:
            continue
        ref = aggregates(
            session, clock, rubric, labels, new_at - p.baseline, new_at, match_labels(labels, pred)
        )
        ref_stats = ref.get(pred, GroupStats())
        if ref_stats.n < p.min_samples:
            continue
        stream = scores_in_order(session, clock, rubric, labels, key, new_at, now)
        xs, probabilities = [x for x, _ in stream], [q for _, q in stream]
        spans = ((new_at - p.baseline, new_at), (new_at, now))
        got = _ppi(session, clock, rubric, labels, (pred, key), spans, cfg, True, pi_floor)
        if got is None:
            state = advance(
                start_sequential(
                    ref_stats,
                    p,
                    known_start=True,
                    pass_threshold=pass_threshold,
                    max_weight=cfg.max_weight,
                ),
                xs,
                p,
                probabilities,
            )
            got = (state.alarm_at is not None, sequential_verdict(state, p), None)
        seq_alarm, seq, estimator = got
        everything = WeightedStats.from_scores(stream, pass_threshold).effective(
            GroupStats.from_scores(xs, pass_threshold)
        )
        fixed_v = compare_stats(ref_stats, everything, p)
        alarm = _pages(cfg.detector, seq_alarm, fixed_v.regression)
        changes = {
            n: {"from": [str(a)], "to": [str(b)]}
            for n, a, b in zip(labels, pred, key, strict=True)
            if a != b
        }
        text = "; ".join(f"{n} {d['from'][0]} -> {d['to'][0]}" for n, d in changes.items())
        findings.append(
            Finding(
                "version",
                names,
                seq if cfg.detector != "window" else fixed_v,
                alarm,
                stats,
                {"labels": changes, "text": text, "first_seen": new_at.isoformat()},
                new_at,
                fixed_v,
                _named(estimator, cfg.detector != "window", pi_floor),
            )
        )
    return findings, cur


def _ppi(
    session: Session,
    clock: Clock,
    rubric: str,
    labels: tuple[str, ...],
    keys: tuple[Key, Key],
    spans: tuple[tuple[datetime, datetime], tuple[datetime, datetime]],
    cfg: CheckConfig,
    known_start: bool,
    pi_floor: float | None,
) -> tuple[bool, Verdict, dict[str, Any] | None] | None:
    """A cascade rubric's sequential check on PPI pseudo-outcomes (`ppi_regression`): the
    reference group's records in the first span, the checked group's in the second. None
    (today's check stands) without a floor or with too few cascade records."""
    if pi_floor is None:
        return None
    conn = session.connection()
    ref = cascade_stream(conn, clock, rubric, labels, keys[0], *spans[0])
    cur = cascade_stream(conn, clock, rubric, labels, keys[1], *spans[1])
    if ref is None or cur is None or min(len(ref), len(cur)) < cfg.policy.min_samples:
        return None
    state, unit, scale = ppi_sequential(
        ref, cur, cfg.policy, known_start=known_start, pi_floor=pi_floor, max_weight=cfg.max_weight
    )
    named = describe_estimator(scale, pi_floor, state.clamped)
    return state.alarm_at is not None, ppi_verdict(state, unit, scale), named


def _named(ppi: dict[str, Any] | None, sequential: bool, pi_floor: float | None) -> Any:
    """The estimator an alert names: PPI++'s when its verdict came from the pseudo-outcomes;
    for a cascade rubric otherwise today's Horvitz–Thompson/Hájek one; other rubrics none."""
    if pi_floor is None:
        return None
    return ppi if ppi is not None and sequential else {"estimator": "hajek"}


def ppi_floor(rubric: Rubric) -> float | None:
    """A cascade rubric's judge-probability floor (its audit rate; the escalation region is
    judged at 1) when it opts in to the check on PPI++ pseudo-outcomes (`options.ppi_regression`),
    or None: today's check on judged scores — no cheap stage, no opt-in, or an audit rate of 0
    (certified passes never judged, so the top judge's mean is not estimable there). Opt-in
    because the pseudo-outcomes' range, 1/audit_rate fixed in advance, costs power at small n
    (a new version's first burst did not alert)."""
    if rubric.resolved_method != "cascade" or not rubric.typed_options.ppi_regression:
        return None
    rate = float(getattr(rubric.typed_options, "audit_rate", 0.0) or 0.0)
    return min(rate, 1.0) if rate > 0 else None


def _pages(detector: str, sequential: bool, window: bool) -> bool:
    return {"sequential": sequential, "window": window, "both": sequential or window}[detector]


def recovered(alert: AlertRecord, current: GroupStats | None, cfg: CheckConfig) -> str | None:
    """Why `alert` can close, or None: the window's mean is back within the effect bound of
    the baseline the alert was raised against (not today's baseline, which by now may hold
    the bad scores themselves), or the group stopped scoring."""
    if current is None or current.n == 0:
        return "no scores in the recent window (group inactive or rolled back)"
    if current.n < cfg.policy.min_samples:
        return None
    if alert.baseline_mean - current.mean < cfg.policy.min_effect_mean:
        return (
            f"recovered: window mean {current.mean:.3f} (n={current.n}) "
            f"vs baseline {alert.baseline_mean:.3f}"
        )
    return None


def decide(
    store: Store,
    rubrics: RubricSet,
    alerts: AlertsSettings,
    now: datetime,
    floors: Mapping[str, float] | None = None,
) -> tuple[CheckReport, list[tuple[str, AlertRecord]]]:
    """Run every rubric's checks and write alert transitions; return what to deliver.
    `floors`: each rubric's smallest possible inclusion probability (config.inclusion_floor);
    absent, records are taken as sampled with p = 1."""
    report, events = CheckReport(), []
    cool = timedelta(minutes=alerts.cool_down_minutes)
    for rubric in rubrics.rubrics:
        try:
            cfg = policy_for(rubric, alerts)
            cfg = replace(cfg, max_weight=1.0 / (floors or {}).get(rubric.name, 1.0))
        except ValueError as exc:
            report.errors.append(str(exc))
            log.error("%s", exc)
            continue
        with Session(store.engine) as session:
            findings, cur = check_rubric(
                session,
                rubric.name,
                cfg,
                rubric.pass_threshold,
                now,
                alerts.max_lag_delta,
                ppi_floor(rubric),
            )
            report.groups += len(cur)
            by_key = {group_key(f.kind, rubric.name, f.labels): f for f in findings}
            current = {tuple(zip(grouping(cfg), k, strict=True)): s for k, s in cur.items()}
            opened = {
                a.group_key: a
                for a in open_alerts(store, rubric.name)
                if a.kind in ("drop", "version")  # judge_drift alerts are the anchors' own
            }
            for key, f in by_key.items():
                if not f.alarm or key in opened:
                    continue
                if in_cool_down(store, key, now, cool):
                    report.suppressed += 1
                    continue
                alert = _new_alert(session, rubric.name, key, f, cfg, now, alerts.max_lag_delta)
                if not calls_judge(rubric):
                    mark_advisory(alert)
                # A version's e-process stays latched after its alarm; do not reopen a
                # version that has since recovered. (A drop's whole-window mean can still
                # look fine while the detector sees the drop at the window's end.)
                latched_but_fine = f.kind == "version" and recovered(alert, f.window_stats, cfg)
                if not latched_but_fine and try_open(store, alert):
                    report.opened.append(alert)
                    events.append(("alert.opened", alert))
            for alert in opened.values():
                why = recovered(alert, current.get(tuple(alert.labels.items())), cfg)
                if why is not None:
                    alert = replace_status(alert, why, now)
                    save(store, alert)
                    report.resolved.append(alert)
                    events.append(("alert.resolved", alert))
    return report, events


ADVISORY = (
    "advisory: a local (no-judge) score moved; on summaries and across generators it follows "
    "writing style as well as hallucination (BENCHMARKS.md §8), so confirm with a judge on "
    "the worst traces before acting: "
)


def mark_advisory(alert: AlertRecord) -> None:
    """A local-only rubric's alert is a weaker class: say so instead of paging as if a judge
    had found it (bench/regression_local.py measured style swaps alerting every time)."""
    alert.summary = {**alert.summary, "alert_class": "advisory"}
    alert.message = ADVISORY + alert.message


def replace_status(alert: AlertRecord, why: str, now: datetime) -> AlertRecord:
    alert.status, alert.resolution, alert.resolved_at, alert.updated_at = "resolved", why, now, now
    return alert


def _new_alert(
    session: Session,
    rubric: str,
    key: str,
    f: Finding,
    cfg: CheckConfig,
    now: datetime,
    max_lag: timedelta = DEFAULT_MAX_LAG,
) -> AlertRecord:
    labels = list(f.labels)
    k = tuple(f.labels.values())
    clock = Clock.of(session, max_lag)
    lo = f.window_start or now - cfg.policy.window
    worst = worst_traces(session, clock, rubric, labels, k, lo, now)
    changed = f.changed
    if f.kind == "drop":
        base_lo, win_lo = window_bounds(now, cfg.policy)
        changed = what_changed(session, clock, rubric, labels, k, (base_lo, win_lo), (win_lo, now))
    summary = f.verdict.summary(cfg.policy.confidence)
    summary["window_n"] = f.window_stats.n  # every score in the window, beside the test's n
    if f.estimator is not None:
        summary["estimator"] = f.estimator
    if f.fixed is not None:
        summary["window_test"] = f.fixed.summary(cfg.policy.confidence)
    cause = attribution_for(
        session,
        clock,
        rubric,
        labels,
        k,
        f.kind,
        (window_bounds(now, cfg.policy)[0], lo, now),
        cfg.policy,
    )
    summary["attribution"] = cause.to_json()  # system | judge | traffic, with its numbers
    message = describe(f.kind, rubric, f.labels, summary, changed.get("text", ""), worst)
    message += f"; {cause.sentence}"
    v = f.verdict
    return AlertRecord(
        group_key=key,
        kind=f.kind,
        rubric=rubric,
        labels=f.labels,
        test=v.test,
        p_value=v.p_value,
        e_value=v.e_value,
        baseline_mean=v.baseline.mean,
        current_mean=v.current.mean,
        baseline_n=v.baseline.n,
        current_n=v.current.n,
        summary=summary,
        changed=changed,
        worst_traces=worst,
        message=message,
        opened_at=now,
        updated_at=now,
    )


async def run_check(
    store: Store,
    rubrics: RubricSet,
    alerts: AlertsSettings,
    sinks: AlertSinks,
    now: datetime | None = None,
    otel: EvaluationExporter | None = None,
    floors: Mapping[str, float] | None = None,
) -> CheckReport:
    """Decide in a thread (SQL is synchronous), then deliver and record the deliveries.
    With `otel`, the alerts also go out as OpenTelemetry events (with their intervals)."""
    now = now or utcnow()
    report, events = await asyncio.to_thread(decide, store, rubrics, alerts, now, floors)
    if otel is not None and events:
        await otel.export_alerts([(e, alert_to_json(a)) for e, a in events])  # never raises
    for event, alert in events:
        results = await sinks.deliver(event, alert_to_json(alert))
        alert.deliveries = [
            *alert.deliveries,
            *({"event": event, "at": utcnow().isoformat(), **r.to_dict()} for r in results),
        ]
        await asyncio.to_thread(save, store, alert)
    return report


async def regression_check_job(ctx: dict[str, Any]) -> dict[str, Any]:
    """arq cron body. arq's unique job id already runs it once per period; the Redis claim
    also covers workers whose clocks disagree by more than the job takes."""
    runtime = ctx["runtime"]
    settings = runtime.settings
    if not settings.alerts.enabled:
        return {"skipped": "alerts.enabled is false"}
    now = utcnow()
    minutes = settings.alerts.interval_minutes
    period = now.replace(minute=now.minute - now.minute % minutes, second=0, microsecond=0)
    claim = f"{settings.redis.key_prefix}:regression:{period.astimezone(UTC):%Y%m%dT%H%M}"
    if not await ctx["redis"].set(claim, "1", nx=True, ex=minutes * 120):
        return {"skipped": "already run for this period"}
    from evaluator.analytics.rollups import refresh_rollups

    await asyncio.to_thread(refresh_rollups, runtime.store, now)
    sinks = build_sinks(settings.alerts, os.environ)
    try:
        report = await run_check(
            runtime.store,
            runtime.rubrics,
            settings.alerts,
            sinks,
            now,
            otel=runtime.otel,
            floors=runtime.inclusion_floors(),
        )
    finally:
        await sinks.aclose()
    return report.to_dict()
