from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from evaluator.sampling import (
    SIGNAL_RANGES,
    Reason,
    Signals,
    TailRules,
    decide,
    hash_point,
)

RULES = TailRules(
    on_error=True, on_negative_feedback=True, cost_above_usd=0.05, latency_above_ms=10_000
)
ids = st.text(min_size=1, max_size=64)
rates = st.floats(min_value=0, max_value=1)


@given(ids)
def test_hash_point_is_stable_and_in_unit_interval(trace_id: str) -> None:
    point = hash_point(trace_id)
    assert 0 <= point < 1
    assert hash_point(trace_id) == point


@given(ids, rates, rates)
def test_lower_rate_sample_is_subset_of_higher(trace_id: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    point = hash_point(trace_id)
    if decide(point, low, Signals(), RULES) is Reason.RATE:
        assert decide(point, high, Signals(), RULES) is Reason.RATE


def test_rate_is_respected_over_many_ids() -> None:
    n = 20_000
    sampled = sum(hash_point(f"trace-{i}") < 0.1 for i in range(n))
    assert abs(sampled / n - 0.1) < 0.01


def test_tail_rules_override_a_zero_rate() -> None:
    point = hash_point("x")
    assert decide(point, 0.0, Signals(), RULES) is Reason.NOT_SAMPLED
    assert decide(point, 0.0, Signals(error=True), RULES) is Reason.ERROR
    assert decide(point, 0.0, Signals(feedback=-1), RULES) is Reason.FEEDBACK
    assert decide(point, 0.0, Signals(feedback=1), RULES) is Reason.NOT_SAMPLED
    assert decide(point, 0.0, Signals(cost_usd=0.2), RULES) is Reason.COST
    assert decide(point, 0.0, Signals(cost_usd=0.01), RULES) is Reason.NOT_SAMPLED
    assert decide(point, 0.0, Signals(latency_ms=20_000), RULES) is Reason.LATENCY


def test_disabled_tail_rules_do_not_fire() -> None:
    off = TailRules(
        on_error=False, on_negative_feedback=False, cost_above_usd=0, latency_above_ms=0
    )
    signals = Signals(error=True, feedback=-1, cost_usd=99, latency_ms=1e9)
    assert decide(hash_point("x"), 0.0, signals, off) is Reason.NOT_SAMPLED


def _in_range(name: str) -> st.SearchStrategy[float | None]:
    low, high = SIGNAL_RANGES[name]
    return st.none() | st.floats(min_value=low, max_value=high)


@given(st.booleans(), _in_range("cost_usd"), _in_range("feedback"))
def test_signals_round_trip_through_the_wire(
    error: bool, cost: float | None, fb: float | None
) -> None:
    signals = Signals(error=error, cost_usd=cost, feedback=fb)
    assert Signals.from_wire(signals.to_wire()) == signals


@given(st.floats(), st.floats(), st.floats())
def test_values_outside_their_range_never_reach_a_signal(c: float, lat: float, fb: float) -> None:
    signals = Signals.from_wire({"c": c, "l": lat, "f": fb})
    for name, value in (("cost_usd", c), ("latency_ms", lat), ("feedback", fb)):
        low, high = SIGNAL_RANGES[name]
        kept = getattr(signals, name)
        assert kept == (value if low <= value <= high else None)  # NaN fails both tests
