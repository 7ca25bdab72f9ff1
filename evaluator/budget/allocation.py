"""Budgeted allocation (pure): each rubric's inclusion probability for one trace.

With a judge budget, sampling is an allocation of evaluations:

- tail rules first: a trace that trips one is in with probability 1 (if the window's hard cap
  is spent it waits for the next window, see evaluator.budget.admission);
- a *new* stratum (rubric × feature × tenant × prompt version) is boosted to `boost_rate`
  for its first `boost_first_traces` traces or its first `boost_hours` hours, whichever lasts
  longer: a new prompt version or model is where a regression is most likely. With
  `boost_share` the boost is lowered so that the new strata's expected evaluations take at
  most that share of a minute's room (a boost the cap then refuses would store a p that
  overstates the real inclusion, and starve the other strata);
- every other trace gets the rubric's base rate, lowered so that the expected spend of a
  minute fits the room the caps leave (the previous minute's arrivals estimate this
  minute's), never below `min_rate`.

A rubric whose method may end without the judge (`escalates`: the faithfulness cascade, whose
local step decides a confident pass alone) is drawn here but charged only when its judge is
asked (evaluator.worker.escalation): a drawn trace then costs ε judge calls on average, ε the
rubric's recent escalation share, so the room it is fitted to is the caps' room / ε (ε with
some headroom, see ESCALATION_HEADROOM).

With `carry` the per-minute cap is cumulative within the UTC day: the evaluations so far
today may reach the cap × the minutes elapsed today, so a quiet minute's budget is spent
later (the room adds a tenth of what earlier minutes left, to spread it, not burst it).

The decision compares the trace's hash point with the probability, so it is the same for a
given trace and allocation state. The probability is stored with every record; trends weight
records by its inverse (evalcore.weights).

    >>> base_probability(0.5, room=100, arrivals=1020, reserved=20, floor=0.01)
    0.08
    >>> base_probability(0.5, room=None, arrivals=1000, reserved=20, floor=0.01)
    0.5
    >>> boost_probability(1.0, share=0.5, room=10, new_arrivals=100)
    0.05
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from evaluator.sampling import Labels

DAY_S = 86_400.0
MINUTE_S = 60.0
# With carry, a minute's room adds this fraction of what earlier minutes left unspent: the
# surplus is spread over about ten minutes rather than spent in one burst.
CARRY_SPREAD = 0.1
# An escalation share is measured once this many runs are counted; until then it is 1 (every
# drawn trace assumed to call the judge, as when charged at intake).
ESCALATION_MIN_RUNS = 50
# The smallest share the rate fitting divides by (a cascade that never escalated must not
# make the room unbounded; the rubric's rate bounds the probability anyway).
ESCALATION_FLOOR = 0.01
# The rate is fitted to the measured share / this (at most 1): escalations are the doubtful
# traces, so one the cap refuses is a drawn trace missing for a reason tied to its score
# (trends biased upwards). A minute's escalations are Poisson around the fitted room; fitting
# to 80 % of it made such refusals rare (bench/budget_sim.py --cascade-share 0.5, 60 seeds:
# 48 a day instead of 662, at 2 % fewer verdicts).
ESCALATION_HEADROOM = 0.8


@dataclass(frozen=True, slots=True)
class Cap:
    """A hard cap on admitted evaluations; 0 = none. USD per day becomes evaluations per day
    through the stated cost of one evaluation (`usd_per_evaluation`)."""

    per_minute: int = 0
    per_day: int = 0

    @property
    def any(self) -> bool:
        return self.per_minute > 0 or self.per_day > 0


def cap_from(calls_per_minute: int, usd_per_day: float, usd_per_evaluation: float) -> Cap:
    per_day = int(usd_per_day / usd_per_evaluation) if usd_per_day > 0 else 0
    return Cap(per_minute=calls_per_minute, per_day=max(per_day, 1) if usd_per_day > 0 else 0)


@dataclass(frozen=True, slots=True)
class RubricPlan:
    name: str
    rate: float  # the rubric's sampling rate: the most it is sampled at, budget or not
    cap: Cap = Cap()
    # applies_to as label → allowed values; only labels the entry carries are checked here
    # (the job checks the rest against the stored trace).
    applies: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The method may end without the judge (cascade): drawn at intake, charged at escalation.
    escalates: bool = False


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    rubrics: tuple[RubricPlan, ...]
    shared: Cap = Cap()  # the [budget] of settings: all rubrics' evaluations together
    boost_rate: float = 1.0
    boost_first_traces: int = 200
    boost_hours: float = 1.0
    min_rate: float = 0.01
    # The per-minute caps are cumulative within the UTC day (unspent budget carries forward).
    carry: bool = True
    # With carry, a minute spends at most burst x its per-minute cap; 0 = unbounded.
    burst: float = 2.0
    # New strata's expected evaluations take at most this share of a minute's room; 0 = none.
    boost_share: float = 0.5
    # The cap window (s): rate draws wait for its end and are admitted by random key
    # (window_quotas below); their jobs start then, so records lag by at most one window.
    window_s: float = 60.0


def stratum_key(rubric: str, labels: Labels | None) -> str:
    """One Redis hash field per stratum; an entry without labels is the rubric alone."""
    if not labels:
        return rubric
    parts = (labels.feature or "", labels.tenant or "", labels.prompt_version or "")
    return "\x1f".join((rubric, *parts))


def applies(plan: RubricPlan, labels: Labels | None) -> bool:
    if labels is None:
        return True
    known = {
        "feature": labels.feature,
        "tenant": labels.tenant,
        "prompt_version": labels.prompt_version,
    }
    return all(known.get(k) is None or known[k] in allowed for k, allowed in plan.applies)


def is_new(seen_before: int, first_seen_s: float | None, now_s: float, plan: BudgetPlan) -> bool:
    """A stratum is new for its first N traces or its first H hours."""
    if seen_before < plan.boost_first_traces:
        return True
    return first_seen_s is not None and now_s - first_seen_s < plan.boost_hours * 3600


def minute_of_day(now_s: float) -> int:
    return int(now_s % DAY_S // MINUTE_S)


def cumulative_cap(per_minute: int, now_s: float) -> int:
    """With carry, what today's evaluations may total by the end of this minute."""
    return per_minute * (minute_of_day(now_s) + 1)


def minute_room(
    cap: Cap, used_today: int, now_s: float, *, carry: bool = False, used_this_minute: int = 0
) -> float | None:
    """Evaluations one minute may spend under `cap` (None: no cap): the per-minute cap (with
    `carry`, plus a share of what earlier minutes of the day left unspent), and a day's
    remainder spread evenly over the minutes left in the UTC day.

        >>> minute_room(Cap(per_minute=10), 0, 300.0, carry=True)
        15.0
    """
    rooms: list[float] = []
    if cap.per_minute:
        carried = 0.0
        if carry:
            before = used_today - used_this_minute  # spent in earlier minutes of the day
            carried = max(0, cap.per_minute * minute_of_day(now_s) - before) * CARRY_SPREAD
        rooms.append(cap.per_minute + carried)
    if cap.per_day:
        minutes_left = max(1.0, (DAY_S - now_s % DAY_S) / MINUTE_S)
        rooms.append(max(0.0, cap.per_day - used_today) / minutes_left)
    return min(rooms) if rooms else None


def escalation_share(runs: int, escalated: int, min_runs: int = ESCALATION_MIN_RUNS) -> float:
    """ε: the judge calls one drawn evaluation costs on average, from the recent runs of an
    escalating rubric; 1 (the prior: as if charged at intake) until `min_runs` are seen.

        >>> escalation_share(40, 10), escalation_share(200, 50)
        (1.0, 0.25)
    """
    if runs < min_runs:
        return 1.0
    return min(1.0, escalated / runs)


def base_probability(
    rate: float, *, room: float | None, arrivals: int, reserved: float, floor: float
) -> float:
    """The rate for traces that are neither tail nor new: what the room leaves after the
    tail and boosted evaluations expected (`reserved`), spread over the other `arrivals`."""
    if room is None or arrivals <= 0:
        return rate  # no cap, or nothing known yet (the first minute): the cap still holds
    others = max(1.0, arrivals - reserved)
    return max(min(floor, rate), min(rate, (room - reserved) / others))


def boost_probability(
    boost: float, *, share: float, room: float | None, new_arrivals: int
) -> float:
    """The new strata's probability: the boost, lowered so that their expected evaluations
    (last minute's new-stratum arrivals estimate this minute's) fit `share` of the room."""
    if share <= 0 or room is None or new_arrivals <= 0:
        return boost
    return min(boost, share * room / new_arrivals)


@dataclass(frozen=True, slots=True)
class RubricState:
    """What the allocation reads per rubric, once per batch: last minute's arrivals, the
    tail/boosted evaluations it reserved (`reserved`, of which `new` from new strata and not
    tail), the evaluations used today and this minute (rubric and shared), and for an
    escalating rubric its escalation share (`escalation_share`)."""

    arrivals: int = 0
    reserved: int = 0
    new: int = 0
    used_today: int = 0
    shared_used_today: int = 0
    used_this_minute: int = 0
    shared_used_this_minute: int = 0
    escalation: float = 1.0


@dataclass(frozen=True, slots=True)
class RubricRate:
    base: float  # for traces neither tail nor new
    boost: float  # for a new stratum's traces (at least `base`, see inclusion_probability)


def rubric_rates(
    plan: BudgetPlan, states: Mapping[str, RubricState], now_s: float
) -> dict[str, RubricRate]:
    """Each rubric's probabilities this batch. The shared cap's room is split evenly
    among the rubrics (each gets its share of the global minute)."""
    share = len(plan.rubrics) or 1
    rates = {}
    for rubric in plan.rubrics:
        state = states.get(rubric.name, RubricState())
        rooms = [
            minute_room(
                rubric.cap,
                state.used_today,
                now_s,
                carry=plan.carry,
                used_this_minute=state.used_this_minute,
            ),
            _divided(
                minute_room(
                    plan.shared,
                    state.shared_used_today,
                    now_s,
                    carry=plan.carry,
                    used_this_minute=state.shared_used_this_minute,
                ),
                share,
            ),
        ]
        known = [r for r in rooms if r is not None]
        room = min(known) if known else None
        if room is not None and rubric.escalates:
            # Judge calls → drawn traces: each drawn one costs ε calls on average.
            room /= max(ESCALATION_FLOOR, min(1.0, state.escalation / ESCALATION_HEADROOM))
        boost = boost_probability(
            plan.boost_rate, share=plan.boost_share, room=room, new_arrivals=state.new
        )
        # Tail traces take p = 1, new strata the boost: what is left is the others'. (A new
        # trace the boost does not draw counts among the others: its p is at least the base.)
        base = base_probability(
            rubric.rate,
            room=room,
            arrivals=state.arrivals,
            reserved=state.reserved - state.new + boost * state.new,
            floor=plan.min_rate,
        )
        rates[rubric.name] = RubricRate(base=base, boost=boost)
    return rates


def _divided(room: float | None, parts: int) -> float | None:
    return None if room is None else room / parts


def inclusion_probability(rate: RubricRate, *, tail: bool, new_stratum: bool) -> float:
    """The probability this rubric evaluates the trace: 1 for a tail trace, at least the
    boost for a new stratum (above the rubric's rate: that is what the boost is for), else
    the base."""
    if tail:
        return 1.0
    if new_stratum:
        return max(rate.base, rate.boost)
    return rate.base


# --- The cap's refusals: a random key per stratum and cap window --------------------------
#
# A rate-drawn evaluation is not admitted when it arrives: it is offered to its cap window
# (`window_s`, a minute by default) and the window's evaluations are admitted together when
# it closes. The room the caps leave then (`room`) is split over the window's strata,
# max-min fair (`water_fill`: a small stratum is taken whole before a large one gets more),
# into real shares q_s; systematic rounding with one uniform U turns them into whole counts
# k_s with E[k_s] = q_s (`systematic_counts`); each stratum admits its k_s evaluations of
# lowest random key (bottom-k: a simple random sample of its n_s offers). So, given the
# window's offers, a drawn evaluation of stratum s is admitted with probability exactly
# q_s / n_s, whatever its arrival order, its score or the other strata — and > 0 whenever
# the window has room. Its realised inclusion probability is p_draw × q_s / n_s, known
# when the window closes, which is when its job is created.
#
# Guarantee (Horvitz-Thompson): with π_i = p_draw,i × q_s/n_s stored on every record,
# E[Σ_admitted y_i / π_i] = Σ_all y_i over the traces of windows whose room was > 0, because
# (1) the draw is Bernoulli(p_draw) given the allocation state, (2) q_s is a function of the
# window's draws only (not of keys or scores), and (3) given the draws, admission is a simple
# random sample of k_s with E[k_s] = q_s. The Hájek mean (Σ y/π / Σ 1/π) is then consistent,
# with O(1/n) bias. Assumptions: keys and U independent of the scores (hashes of the trace
# ID and window; a caller choosing trace IDs could choose keys); a window whose room is 0
# (the day's cap spent, or the minute's taken by tail traces, escalations or backfill)
# admits nothing, and its traces are not represented (counted `not_sampled_budget`).


def water_fill(demand: Mapping[str, float], room: float) -> dict[str, float]:
    """Max-min fair shares of `room` over `demand` (each share ≤ its demand, Σ = min(room,
    Σ demand)): the level τ with Σ min(d, τ) = room.

        >>> water_fill({"a": 300, "b": 40}, 100)
        {'a': 60.0, 'b': 40.0}
    """
    shares = {k: 0.0 for k in demand}
    left = max(0.0, room)
    open_ = sorted((d, k) for k, d in demand.items() if d > 0)
    while open_ and left > 1e-12:
        level = left / len(open_)
        smallest, key = open_[0]
        if smallest - shares[key] <= level:
            # The smallest demand is met in full; the rest share what is left.
            take = smallest - shares[key]
            for _, k in open_:
                shares[k] += take
            left -= take * len(open_)
            while open_ and demand[open_[0][1]] - shares[open_[0][1]] <= 1e-12:
                open_.pop(0)
        else:
            for _, k in open_:
                shares[k] += level
            left = 0.0
    return {k: float(v) for k, v in shares.items()}


def systematic_counts(shares: Sequence[tuple[str, float]], u: float) -> dict[str, int]:
    """Whole counts with E[count] = share, each within 1 of its share and any consecutive
    run's total within 1 of the run's (systematic rounding: the points u, u+1, u+2, … over
    the shares laid end to end; u uniform in [0, 1)).

        >>> systematic_counts([("a", 0.5), ("b", 1.5), ("c", 1.0)], 0.25)
        {'a': 1, 'b': 1, 'c': 1}
    """
    counts: dict[str, int] = {}
    total = 0.0
    for key, share in shares:
        start, total = total, total + share
        # points j + u in [start, total)
        counts[key] = max(0, math.ceil(total - u - 1e-12) - math.ceil(start - u - 1e-12))
    return counts


@dataclass(frozen=True, slots=True)
class WindowQuota:
    offered: int  # n_s: the stratum's drawn evaluations in the window
    share: float  # q_s: its expected admissions
    admit: int  # k_s: how many of lowest key it admits

    @property
    def probability(self) -> float:
        """q_s / n_s: a drawn evaluation's chance of admission, given the window's draws."""
        return self.share / self.offered if self.offered else 0.0


def window_quotas(
    offered: Mapping[str, Mapping[str, int]],
    rooms: Mapping[str, int | None],
    shared_room: int | None,
    u: float,
) -> dict[str, dict[str, WindowQuota]]:
    """Per rubric and stratum, how many of a window's offers to admit. `offered`: rubric →
    stratum → n_s; `rooms`: each rubric's own cap room (None: no cap); `shared_room`: all
    rubrics' room together (None: no cap). The shared room is water-filled over the rubrics
    (each asking min(its offers, its room)), each rubric's share over its strata; counts by
    one systematic rounding over every stratum, so no cap's room is exceeded (rooms are
    whole numbers and every run's total is within 1 of its real share).

        >>> q = window_quotas({"r": {"a": 300, "b": 40}}, {"r": None}, 100, 0.5)
        >>> q["r"]["a"].admit, q["r"]["b"].admit, q["r"]["a"].probability
        (60, 40, 0.2)
    """
    asked = {r: float(_at_most(sum(by.values()), rooms.get(r))) for r, by in offered.items()}
    given = asked if shared_room is None else water_fill(asked, shared_room)
    shares: list[tuple[str, float]] = []
    out: dict[str, dict[str, WindowQuota]] = {}
    for rubric in sorted(offered):
        by = offered[rubric]
        fill = water_fill({s: float(n) for s, n in by.items()}, given[rubric])
        for stratum in sorted(by):
            shares.append((f"{rubric}\x1e{stratum}", fill[stratum]))
        out[rubric] = {s: WindowQuota(by[s], fill[s], 0) for s in by}
    counts = systematic_counts(shares, u)
    return {
        r: {
            s: WindowQuota(q.offered, q.share, min(q.offered, counts[f"{r}\x1e{s}"]))
            for s, q in by.items()
        }
        for r, by in out.items()
    }


def _at_most(n: int, room: int | None) -> int:
    return n if room is None else min(n, room)
