"""What the regression check finds in one rubric's groups: read group statistics from SQL and
decide, per group and kind of check, whether it pages (`check_rubric`). The job that turns
findings into alert transitions and deliveries is `check_job`.

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

A rubric with a cheap stage (a cascade with an audit rate, `ppi_floor`) runs each sequential
check as two arms at half the level — the judge-only bet and the bet on PPI pseudo-outcomes —
and pages when either crosses (`ppi_regression.combine`: a union bound keeps alpha, and arl
for the detector); its finding names the arm that fired (`Finding.estimator`).

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

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from evalcore.intervals import GroupStats
from evalcore.weights import WeightedStats
from evaluator.analytics.ppi_regression import (
    ESTIMATOR,
    JUDGE_ONLY,
    Arm,
    arm_policy,
    combine,
    combined_sequential,
)
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
from judges.rubric import Rubric

Spans = tuple[tuple[datetime, datetime], tuple[datetime, datetime]]


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
    # A rubric with a cheap stage: which estimator's test produced the verdict, and both arms
    # (`ppi_regression.combine`); {"estimator": "hajek"} when the fixed window decided.
    estimator: dict[str, Any] | None = None


def grouping(cfg: CheckConfig) -> tuple[str, ...]:
    """The labels a group is keyed by: the configured ones, then the evaluator epoch."""
    return cfg.group_by if "epoch" in cfg.group_by else (*cfg.group_by, "epoch")


@dataclass(frozen=True)
class _Reader:
    """One rubric's reads on one clock, for the sequential checks."""

    session: Session
    clock: Clock
    rubric: str
    labels: tuple[str, ...]
    cfg: CheckConfig
    pass_threshold: float | None
    pi_floor: float | None

    def sequential(
        self, ref: GroupStats, keys: tuple[Key, Key], spans: Spans, *, known_start: bool
    ) -> tuple[bool, Verdict, dict[str, Any] | None, list[tuple[float, float | None]]]:
        """(alarm, verdict, estimator, the checked group's scores) of the sequential check of
        group keys[1] over spans[1] against group keys[0] over spans[0] (`ref`: its
        statistics): without a cheap stage, today's bet on the records' scores; with one, the
        combined check on the two groups' cascade records (`ppi_regression.
        combined_sequential`). A side without cascade records (written before the rubric
        became a cascade) leaves the record-score bet as the judge-only arm at alpha/2."""
        scores = scores_in_order(
            self.session, self.clock, self.rubric, self.labels, keys[1], *spans[1]
        )
        if self.pi_floor is not None:
            conn = self.session.connection()
            ref_s, cur_s = (
                cascade_stream(conn, self.clock, self.rubric, self.labels, k, *span)
                for k, span in zip(keys, spans, strict=True)
            )
            if ref_s is not None and cur_s is not None:
                alarm, verdict, named = combined_sequential(
                    ref_s,
                    cur_s,
                    self.cfg.policy,
                    known_start=known_start,
                    pi_floor=self.pi_floor,
                    max_weight=self.cfg.max_weight,
                    pass_threshold=self.pass_threshold,
                )
                return alarm, verdict, named, scores
        p = self.cfg.policy if self.pi_floor is None else arm_policy(self.cfg.policy)
        state = start_sequential(
            ref,
            p,
            known_start=known_start,
            pass_threshold=self.pass_threshold,
            max_weight=self.cfg.max_weight,
        )
        state = advance(state, [x for x, _ in scores], p, [q for _, q in scores])
        judge = Arm(JUDGE_ONLY, state.alarm_at is not None, sequential_verdict(state, p), {})
        assert judge.verdict is not None
        if self.pi_floor is None:
            return judge.alarm, judge.verdict, None, scores
        skipped = Arm(ESTIMATOR, False, None, {"skipped": "no cascade records on a side"})
        judge.detail["records"] = "every ok record's score (no cascade records on a side)"
        alarm, verdict, named = combine(judge, skipped)
        return alarm, verdict, named, scores


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
    rubric's audit rate, `ppi_floor`): each sequential check is the combined one (the
    judge-only and the PPI arm, each at half the level)."""
    p, labels = cfg.policy, grouping(cfg)
    clock = Clock.of(session, max_lag)
    read = _Reader(session, clock, rubric, labels, cfg, pass_threshold, pi_floor)
    base_lo, win_lo = window_bounds(now, p)
    base, cur = (
        aggregates(session, clock, rubric, labels, base_lo, win_lo),
        aggregates(session, clock, rubric, labels, win_lo, now),
    )
    fixed = adjust_verdicts(
        {k: compare_stats(base.get(k, GroupStats()), s, p) for k, s in cur.items()}, p
    )
    hajek = None if pi_floor is None else {"estimator": JUDGE_ONLY}
    findings: list[Finding] = []
    for key, stats in cur.items():
        names = dict(zip(labels, key, strict=True))
        b = base.get(key, GroupStats())
        if b.n >= p.min_samples and stats.n >= p.min_samples:
            spans = ((base_lo, win_lo), (win_lo, now))
            seq_alarm, seq, named, _ = read.sequential(b, (key, key), spans, known_start=False)
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
                    named if use_seq else hajek,
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
        spans = ((new_at - p.baseline, new_at), (new_at, now))
        seq_alarm, seq, named, stream = read.sequential(
            ref_stats, (pred, key), spans, known_start=True
        )
        xs = [x for x, _ in stream]
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
                named if cfg.detector != "window" else hajek,
            )
        )
    return findings, cur


def ppi_floor(rubric: Rubric) -> float | None:
    """A cascade rubric's judge-probability floor (its audit rate; the escalation region is
    judged at 1): its sequential checks are then the combined ones (judge-only and PPI++
    arms at half the level each). None — today's judge-only check at the full level — with no
    cheap stage, with `options.ppi_regression = false` (the PPI arm turned off), or with an
    audit rate of 0 (certified passes never judged: the top judge's mean is not estimable)."""
    if rubric.resolved_method != "cascade" or not rubric.typed_options.ppi_regression:
        return None
    rate = float(getattr(rubric.typed_options, "audit_rate", 0.0) or 0.0)
    return min(rate, 1.0) if rate > 0 else None


def _pages(detector: str, sequential: bool, window: bool) -> bool:
    return {"sequential": sequential, "window": window, "both": sequential or window}[detector]
