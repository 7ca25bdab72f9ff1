"""A cascade's two stages in one worker process (issue 30): the cheap score under a CPU budget,
then the judge on a subset drawn with a known probability that depends on the cheap score.

Design (the rule itself is pure: `evalcore.routing`):

- **Stage 1** (`CpuBudget`, one per process, shared by its cascade rubrics): a bucket of CPU
  seconds refilled at `[two_stage] cheap_cpu_per_s`, `cheap_cpu_burst_s` deep, charged with
  the cheap stage's measured thread CPU. Before a trace's cheap stage, p1 is set from what is
  known then — 1 while the bucket is over half full, else the refill plus the level spread
  over the refill horizon, over the expected demand (arrival rate × CPU a trace, both
  decayed averages) — and the trace is drawn with
  hash("stage1", rubric, trace) < p1. Out of the draw: a skipped record saying so (never a
  silent drop); in: the record's inclusion probability is the intake's × p1. p1 is lowered
  in advance, not by refusing in arrival order once the bucket is empty.
- **Stage 2** (`JudgePlan`, one per cascade rubric): 1 in the escalation region (the scorer,
  `judges.scorers.faithfulness.stage_two`); in the certified-pass region p2|1 =
  clip(c · u(f), floor, 1) with mean `options.judge_rate` (None: audit_rate, i.e. today's
  calibration draw alone), c refitted on the last `RECENT` cheap scores of the region,
  floor max(0.1 m, audit_rate). The draw is the calibration draw's point (hash of rubric and
  cluster) < p2|1: calibration clusters are always judged, the rest never see the verdict.
- **The judge budget**: calls drawn above the calibration rate are charged to this worker's
  `[two_stage] judge_calls_per_minute` (0: no cap). When it binds, the mean rate is lowered in
  advance from the minute's remaining allowance and its expected arrivals; a draw with less
  than one call left has p2|1 = audit_rate. So these calls never exceed the cap, and no drawn
  call is refused (escalations, p2|1 = 1, still go through the judge budget's gate).

Guarantee: each record's p1 and p2|1 are the probabilities its draws were made with, fixed
before the draw from earlier traffic only, and the draws read neither the cheap score's
verdict nor the judge's (`tests/test_two_stage.py` checks realised frequencies, the cap and
the PPI++ coverage through these functions).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from evalcore.routing import (
    draw_point,
    floor_of,
    judge_probability,
    planned_mean,
    scale_for_mean,
    stage_one_probability,
)
from evaluator.config.two_stage import TwoStageSettings
from judges.types import Score, StageOne, Status

RECENT = 256  # cheap scores the stage-2 scale is fitted on
REFIT_EVERY = 32  # new scores between refits of the scale
WINDOW_S = 60.0  # the judge allowance's window (judge_calls_per_minute)
DEFAULT_CPU_S = 0.005  # the cheap stage's CPU a trace before the first measurement


@dataclass
class Arrivals:
    """An arrival rate (per second) as an exponentially decayed count over `tau_s`, over the
    time seen so far while that is shorter (at least a second): right within a second of start."""

    tau_s: float
    count: float = 0.0
    at: float | None = None
    first: float | None = None

    def add(self, now: float) -> None:
        self.count = self._decayed(now) + 1.0
        self.at = now
        if self.first is None:
            self.first = now

    def per_s(self, now: float) -> float:
        seen = 0.0 if self.first is None else now - self.first
        return self._decayed(now) / min(self.tau_s, max(seen, 1.0))

    def _decayed(self, now: float) -> float:
        if self.at is None:
            return 0.0
        return self.count * math.exp(-max(0.0, now - self.at) / self.tau_s)


@dataclass
class CpuBudget:
    """Stage 1's CPU bucket (see the module docstring); `admit` is `Clients.stage_one`."""

    cpu_per_s: float
    burst_s: float
    clock: Callable[[], float] = time.monotonic
    level: float = field(init=False)
    cpu_per_trace: float = DEFAULT_CPU_S
    measured: int = 0
    arrivals: Arrivals = field(default_factory=lambda: Arrivals(10.0))
    _at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.level = self.burst_s

    def p1(self, now: float) -> float:
        """The probability a cheap stage asked at `now` runs (refills the bucket first)."""
        if self._at is not None:
            self.level = min(self.burst_s, self.level + self.cpu_per_s * (now - self._at))
        self._at = now
        return stage_one_probability(
            cpu_per_s=self.cpu_per_s,
            level_s=self.level,
            horizon_s=self.burst_s / self.cpu_per_s if self.cpu_per_s > 0 else 1.0,
            arrivals_per_s=self.arrivals.per_s(now),
            cpu_per_trace_s=self.cpu_per_trace,
            # A burst is scored whole while the bucket is over half full (a burst of 227
            # traces at once read as a sustained rate drew some out with a full bucket).
            reserve_s=self.burst_s / 2,
        )

    def admit(self, rubric: str, trace_id: str) -> StageOne:
        now = self.clock()
        p1 = self.p1(now)  # from earlier traffic only
        self.arrivals.add(now)
        if draw_point("stage1", rubric, trace_id) >= p1:
            return StageOne(p1, admitted=False)
        return StageOne(p1, admitted=True, spend=self.spend)

    def spend(self, cpu_s: float) -> None:
        self.level -= cpu_s
        self.measured += 1
        weight = max(0.05, 1.0 / self.measured)  # the mean at first, then a decayed one
        self.cpu_per_trace += weight * (cpu_s - self.cpu_per_trace)


@dataclass
class JudgePlan:
    """Stage 2 for one cascade rubric's certified-pass region (see the module docstring)."""

    target: float  # the mean p2|1 wanted (options.judge_rate, else audit_rate)
    audit_rate: float
    per_minute: float = 0.0  # judge calls above the calibration rate a window; 0 = no cap
    clock: Callable[[], float] = time.monotonic
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    arrivals: Arrivals = field(default_factory=lambda: Arrivals(WINDOW_S))
    window: int = -1
    used: int = 0  # calls charged in the current window
    _scales: dict[int, float] = field(default_factory=dict)
    _since_fit: int = 0

    def planned(self, now: float) -> float:
        """The mean p2|1 allowed now: the target, lowered to the window's allowance."""
        if self.per_minute <= 0:
            return max(self.target, self.audit_rate)
        window = int(now // WINDOW_S)
        if window != self.window:
            self.window, self.used = window, 0
        left_s = (window + 1) * WINDOW_S - now
        expected = 1.0 + self.arrivals.per_s(now) * left_s  # this trace and the rest
        remaining = self.per_minute - self.used
        return planned_mean(
            self.target, self.audit_rate, remaining=remaining, expected_arrivals=expected
        )

    def probability(self, f: float, mean: float) -> float:
        """p2|1 of a cheap score f at the planned mean (the scale cached per 1 % of mean)."""
        floor = floor_of(mean, self.audit_rate)
        if mean <= floor:
            return mean
        key = round(math.log(mean) * 100)
        scale = self._scales.get(key)
        if scale is None:
            scale = self._scales[key] = scale_for_mean(list(self.recent), mean, floor)
        return judge_probability(f, scale=scale, floor=floor)

    def sample(self, f: float, point: float) -> tuple[float, bool]:
        """(p2|1, judged) for a trace in the pass region with cheap score f and draw point
        `point` (the cluster's calibration point)."""
        now = self.clock()
        mean = self.planned(now)  # before this arrival counts: fixed from the past
        self.arrivals.add(now)
        p2 = self.probability(f, mean)
        self._observe(f)
        judged = point < p2
        if judged and point >= self.audit_rate:
            self.used += 1  # a charged call (calibration draws are not)
        return p2, judged

    def _observe(self, f: float) -> None:
        self.recent.append(f)
        self._since_fit += 1
        if self._since_fit >= REFIT_EVERY:
            self._since_fit = 0
            self._scales.clear()


@dataclass
class TwoStage:
    """A worker process's two stages: one CPU bucket, one judge plan per cascade rubric."""

    settings: TwoStageSettings = field(default_factory=TwoStageSettings)
    clock: Callable[[], float] = time.monotonic
    cpu: CpuBudget = field(init=False)
    plans: dict[str, JudgePlan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.cpu = CpuBudget(s.cheap_cpu_per_s, s.cheap_cpu_burst_s, self.clock)

    def stage_one(self, trace_id: str) -> Callable[[str], StageOne]:
        """`Clients.stage_one` for one trace."""
        return lambda rubric: self.cpu.admit(rubric, trace_id)

    def plan(self, rubric: str, judge_rate: float | None, audit_rate: float) -> JudgePlan:
        """The rubric's plan (a new one when its rates changed: the rubrics were reloaded)."""
        target = audit_rate if judge_rate is None else max(judge_rate, audit_rate)
        got = self.plans.get(rubric)
        if got is None or (got.target, got.audit_rate) != (target, audit_rate):
            per_minute = self.settings.judge_calls_per_minute
            got = self.plans[rubric] = JudgePlan(target, audit_rate, per_minute, self.clock)
        return got


def p1_of(score: Score) -> float:
    """The p1 a cascade's record states (`details.cascade.p1`): its inclusion probability is
    the intake's times this. 1 for any other score, and for the skipped record of a trace the
    cheap stage did not run on (it is in no estimate)."""
    trail = score.details.get("cascade")
    if score.status is Status.SKIPPED or not isinstance(trail, dict):
        return 1.0
    p1 = trail.get("p1")
    if isinstance(p1, bool) or not isinstance(p1, int | float) or not 0 < p1 <= 1:
        return 1.0
    return float(p1)
