"""The cap window's refusal by random key (evaluator.budget.allocation.window_quotas), checked
by seeded simulation: no cap's room is exceeded, every stratum of a window with room has
p > 0, and Horvitz-Thompson with the realised probability p_draw x q_s / n_s is unbiased
for the population total when the cap binds — while the drawn p alone is not."""

from __future__ import annotations

import random
import statistics

import pytest

from evaluator.budget.allocation import systematic_counts, water_fill, window_quotas


def test_water_fill_is_max_min_fair_and_spends_the_room() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        demand = {f"s{i}": rng.choice([0, 1, 3, 10, 50, 400]) for i in range(rng.randint(1, 6))}
        room = rng.uniform(0, 500)
        shares = water_fill(demand, room)
        assert sum(shares.values()) == pytest.approx(min(room, sum(demand.values())))
        assert all(-1e-9 <= shares[k] <= demand[k] + 1e-9 for k in demand)
        # Max-min fair: a stratum below its demand gets at least every other's share.
        level = max(shares.values(), default=0.0)
        for k, v in shares.items():
            if v < demand[k] - 1e-6:
                assert v == pytest.approx(level)


def test_systematic_counts_have_the_shares_as_expectation() -> None:
    shares = [("a", 0.3), ("b", 2.45), ("c", 0.0), ("d", 1.25)]
    rng = random.Random(11)
    runs = [systematic_counts(shares, rng.random()) for _ in range(20_000)]
    for key, share in shares:
        counts = [r[key] for r in runs]
        assert set(counts) <= {int(share), int(share) + 1}
        assert statistics.fmean(counts) == pytest.approx(share, abs=0.02)
    assert {sum(r.values()) for r in runs} <= {3, 4}  # the total within 1 of 4.0


def test_no_cap_is_exceeded_and_every_stratum_with_room_has_p_above_zero() -> None:
    rng = random.Random(3)
    for _ in range(2_000):
        offered = {
            r: {f"s{i}": rng.randint(1, 60) for i in range(rng.randint(1, 5))}
            for r in ("faith", "tone")[: rng.randint(1, 2)]
        }
        rooms = {r: rng.choice([None, rng.randint(0, 80)]) for r in offered}
        shared = rng.choice([None, rng.randint(0, 120)])
        quotas = window_quotas(offered, rooms, shared, rng.random())
        total = 0
        for r, by in quotas.items():
            admitted = sum(q.admit for q in by.values())
            room = rooms[r]
            assert room is None or admitted <= room
            assert all(q.admit <= q.offered for q in by.values())
            if (room is None or room > 0) and (shared is None or shared > 0):
                assert all(q.probability > 0 for q in by.values())
            total += admitted
        assert shared is None or total <= shared


def _simulate(seed: int) -> tuple[float, float, float]:
    """One day of windows: two strata with different pass rates and arrival patterns, a
    room per window that binds; returns (truth, HT with realised p, HT with drawn p) of the
    mean pass rate over the population."""
    rng = random.Random(seed)
    population = 0
    passes = 0.0
    realised = drawn = 0.0
    for window in range(20):
        # The "busy" stratum bursts in some windows; "quiet" arrives steadily.
        arrivals = {"busy": rng.choice([5, 80]), "quiet": 10}
        rate = {"busy": 0.9, "quiet": 0.3}
        p_draw = 0.8
        draws: dict[str, list[float]] = {}
        for stratum, n in arrivals.items():
            for _ in range(n):
                y = 1.0 if rng.random() < rate[stratum] else 0.0
                population += 1
                passes += y
                if rng.random() < p_draw:
                    draws.setdefault(stratum, []).append(y)
        counts = {"r": {s: len(v) for s, v in draws.items()}}
        quotas = window_quotas(counts, {"r": None}, 12 + window % 3, rng.random())["r"]
        for stratum, ys in draws.items():
            quota = quotas[stratum]
            rng.shuffle(ys)  # bottom-k by a random key: a simple random sample
            for y in ys[: quota.admit]:
                realised += y / (p_draw * quota.probability)
                drawn += y / p_draw
    return passes / population, realised / population, drawn / population


def test_horvitz_thompson_with_the_realised_p_is_unbiased_under_a_binding_cap() -> None:
    """Over 400 seeded days: the mean error of HT with the realised p is within 3 standard
    errors of 0; with the drawn p it is far off (the cap's refusals are not in it)."""
    runs = [_simulate(seed) for seed in range(400)]
    errors = [ht - truth for truth, ht, _ in runs]
    mean, se = statistics.fmean(errors), statistics.stdev(errors) / len(errors) ** 0.5
    assert abs(mean) <= 3 * se, (mean, se)
    old = statistics.fmean(d - truth for truth, _, d in runs)
    assert old < -0.3, old  # the drawn p counts refused traces as if evaluated
