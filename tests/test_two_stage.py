"""The worker's two stages (evaluator.worker.two_stage, evalcore.routing), seeded: the p2|1 a
record states is the frequency it is judged with; calibration clusters are always judged;
under a judge cap the calls stay within it and p2|1 is lowered before the allowance runs out;
the cheap stage's p1 keeps its CPU within the budget and is the frequency it runs with."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from evalcore.routing import (
    draw_point,
    judge_probability,
    planned_mean,
    scale_for_mean,
    uncertainty,
)
from evaluator.config.two_stage import TwoStageSettings
from evaluator.worker.two_stage import CpuBudget, JudgePlan, TwoStage


def calibration_point(cluster: str, rubric: str) -> float:
    """The router's draw point (evaluator.worker.cascade_routing.calibration_point)."""
    return draw_point(rubric, cluster)


Z = 4.0  # |z| bound of a realised count against its stated expectation (seeded, not flaky)


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_without_a_judge_rate_stage_two_is_the_calibration_draw() -> None:
    """judge_rate None: p2|1 = audit_rate and judged exactly when the cluster is drawn —
    today's cascade, so today's records and estimates are unchanged."""
    plan = TwoStage().plan("faithfulness", None, 0.1)
    for i in range(500):
        point = calibration_point(f"session:{i}", "faithfulness")
        p2, judged = plan.sample(0.5 + (i % 50) / 100, point)
        assert p2 == 0.1 and judged == (point < 0.1)


def test_realised_p2_matches_the_stated_one_and_calibration_clusters_are_judged() -> None:
    rng = np.random.default_rng(30)
    plan = JudgePlan(target=0.3, audit_rate=0.05)
    stated, judged, points, fs = [], [], [], []
    for i in range(20_000):
        f = float(rng.uniform(0.5, 1.0))  # the certified-pass region
        fs.append(f)
        point = calibration_point(f"session:{i}", "faithfulness")
        p2, took = plan.sample(f, point)
        stated.append(p2)
        judged.append(took)
        points.append(point)
    p2s, took_a, pts = np.array(stated), np.array(judged), np.array(points)
    assert (p2s >= 0.05 - 1e-12).all() and (p2s <= 1).all()
    assert took_a[pts < 0.05].all()  # the calibration draw is a subset of the judged
    assert abs(p2s.mean() - 0.3) < 0.02  # the planned mean, fitted on recent scores
    # Higher where the cheap score is uncertain (near the threshold): p2 falls with f.
    assert np.corrcoef(p2s, np.array(fs))[0, 1] < -0.5
    edges = np.quantile(p2s, np.linspace(0, 1, 6))
    for lo, hi in itertools.pairwise(edges):
        cell = (p2s >= lo) & (p2s <= hi)
        expected, var = p2s[cell].sum(), (p2s[cell] * (1 - p2s[cell])).sum()
        z = (took_a[cell].sum() - expected) / math.sqrt(max(var, 1e-9))
        assert abs(z) < Z, f"p2 in [{lo:.3f}, {hi:.3f}]: {took_a[cell].sum()} vs {expected:.1f}"


def test_p2_is_higher_where_the_cheap_score_is_uncertain_with_a_floor() -> None:
    recent = list(np.linspace(0.5, 1.0, 200))
    floor = max(0.1 * 0.3, 0.05)
    scale = scale_for_mean(recent, 0.3, floor)
    got = [judge_probability(f, scale=scale, floor=floor) for f in (0.55, 0.7, 0.85, 0.99, 1.0)]
    assert got == sorted(got, reverse=True) and min(got) >= floor
    mean = np.mean([judge_probability(f, scale=scale, floor=floor) for f in recent])
    assert abs(mean - 0.3) < 1e-6
    assert uncertainty(0.5) > uncertainty(0.9) > uncertainty(1.0) > 0


def test_planned_mean_lowers_the_rate_to_the_allowance_never_below_the_audit_rate() -> None:
    assert planned_mean(0.3, 0.1, remaining=1000, expected_arrivals=100) == 0.3
    assert planned_mean(0.3, 0.1, remaining=10, expected_arrivals=100) == pytest.approx(0.2)
    assert planned_mean(0.3, 0.1, remaining=0.5, expected_arrivals=100) == 0.1
    assert planned_mean(0.05, 0.1, remaining=10, expected_arrivals=1) == 0.1


@pytest.mark.parametrize("arrivals_per_min", [120, 600])
def test_under_a_judge_cap_calls_stay_within_it_and_p2_is_lowered_in_advance(
    arrivals_per_min: int,
) -> None:
    """A cap of 20 charged calls a minute against a wanted 0.5 of 120 or 600 pass-region
    arrivals a minute: every window's charged calls ≤ 20 (calibration draws uncharged), and
    the allowance is spread over the window by a lower p2, not spent on its first arrivals
    and then refused (a draw at p2 = audit_rate, the hard stop, is rare)."""
    clock = Clock(0.0)
    rng = np.random.default_rng(arrivals_per_min)
    plan = JudgePlan(target=0.5, audit_rate=0.05, per_minute=20, clock=clock)
    charged: dict[int, int] = {}
    stopped: dict[int, int] = {}
    late: dict[int, int] = {}  # charged calls in the window's last third
    seen: dict[int, int] = {}
    gap = 60.0 / arrivals_per_min
    for i in range(arrivals_per_min * 12):
        clock.t = i * gap
        w = int(clock.t // 60)
        point = calibration_point(f"s{i}", "faithfulness")
        p2, took = plan.sample(float(rng.uniform(0.5, 1.0)), point)
        seen[w] = seen.get(w, 0) + 1
        if took and point >= 0.05:
            charged[w] = charged.get(w, 0) + 1
            if clock.t % 60 >= 40:
                late[w] = late.get(w, 0) + 1
        if p2 == 0.05:
            stopped[w] = stopped.get(w, 0) + 1
    assert max(charged.values()) <= 20
    for w in range(2, 12):  # after the arrival rate is learnt
        assert charged.get(w, 0) >= 12, (w, charged)  # the allowance is used
        assert late.get(w, 0) >= 2, (w, late)  # ... over the whole window
        assert stopped.get(w, 0) <= 0.35 * seen[w], (w, stopped)


def test_cpu_budget_keeps_the_cheap_stage_within_it_at_the_stated_p1() -> None:
    """Demand 4× the budget (400 traces/s × 5 ms against 0.5 CPU-s/s): p1 settles near 1/4,
    the CPU spent stays within budget × time + twice the bucket's depth (its debt bound),
    and the traces run with the stated frequency."""
    clock = Clock(0.0)
    bucket = CpuBudget(cpu_per_s=0.5, burst_s=2.0, clock=clock)
    spent, p1s, ran = 0.0, [], []
    for i in range(40_000):  # 100 s
        clock.t = i / 400
        one = bucket.admit("faithfulness", f"trace-{i}")
        p1s.append(one.p1)
        ran.append(one.admitted)
        if one.admitted:
            assert one.spend is not None
            one.spend(0.005)
            spent += 0.005
        assert spent <= 0.5 * clock.t + 2 * 2.0, (i, spent)
    p1a, ran_a = np.array(p1s), np.array(ran)
    assert 0.2 < p1a[20_000:].mean() < 0.3
    var = (p1a * (1 - p1a)).sum()
    assert abs(ran_a.sum() - p1a.sum()) / math.sqrt(var) < Z
    assert (p1a >= 0.01).all()


def test_no_cpu_bound_runs_every_cheap_stage() -> None:
    stage = TwoStage(TwoStageSettings(cheap_cpu_per_s=0))
    one = stage.stage_one("t1")("faithfulness")
    assert one.p1 == 1.0 and one.admitted


def test_a_burst_within_the_bucket_is_scored_whole() -> None:
    clock = Clock(0.0)
    bucket = CpuBudget(cpu_per_s=0.5, burst_s=5.0, clock=clock)
    for i in range(227):  # 1.1 s of CPU at one instant (a queue's worth of jobs at once):
        one = bucket.admit("faithfulness", f"b{i}")  # the bucket's 5 s cover it
        assert one.admitted and one.p1 == 1.0
        assert one.spend is not None
        one.spend(0.005)


def test_the_trend_reads_the_stated_p2_and_old_records_keep_todays_weights() -> None:
    """`ppi_trends.stages`: records without a stated p2|1 (written before the two stages) get
    today's inferred one; stated values that equal it change nothing; a stage-2 draw above
    the audit rate (judged, not calibration, in the pass region) is weighted by its own p2|1
    instead of being read as an escalation (p2|1 = 1)."""
    from evaluator.analytics.ppi_trends import stages

    nan = float("nan")
    score = np.array([0.9, 1.0, 0.2, 1.0])
    cheap = np.array([0.95, 0.9, 0.3, 0.97])
    decided = ["local_certified", "judge", "judge", "judge"]  # pass, audit, escalation, stage 2
    calibration = np.array([False, True, False, False])
    audit, cut = np.full(4, 0.1), np.full(4, 0.5)
    args = (score, cheap, cheap, decided, calibration, audit, cut)
    old = stages(*args)
    assert old["p2"].tolist() == [0.1, 0.1, 1.0, 1.0]  # the last one misread as escalated
    same = stages(*args, np.array([0.1, 0.1, 1.0, nan]))
    assert same["p2"][:3].tolist() == old["p2"][:3].tolist()
    stated = stages(*args, np.array([0.35, 0.1, 1.0, 0.42]))
    assert stated["p2"].tolist() == [0.35, 0.1, 1.0, 0.42]
    assert stated["keep"].all() and stated["judged"].tolist() == [False, True, True, True]


async def test_a_stage_two_draw_is_judged_without_asking_the_budget_gate() -> None:
    """In the certified-pass region the scorer takes the route's (p2|1, judged): drawn, it is
    judged and the escalation gate is not asked (the draw was planned within its allowance:
    a refusal in arrival order would make p2|1 a lie); not drawn, a local pass that states
    its p2|1. The stage-1 admission's p1 and the cheap stage's CPU are on the trail."""
    from judges.llm.client import JudgeClient
    from judges.rubric import Rubric
    from judges.scorers.registry import run_scorer
    from judges.types import CascadeRoute, CertifiedThreshold, Clients, StageOne
    from tests.cascade_support import grounded_case, mock_judge
    from tests.conftest import JUDGE_URL

    rubric = Rubric.model_validate(
        {"name": "faithfulness", "version": "1", "scorer": "faithfulness", "method": "cascade"}
    )
    cert = CertifiedThreshold("cert-qa", 0.5, 0.05, 0.1)
    asked: list[str] = []
    spent: list[float] = []

    async def refusing_gate(trace_id: str, rubric_name: str) -> bool:
        asked.append(trace_id)
        return False

    def route(sampled: tuple[float, bool]) -> Any:
        async def ask(rubric_name: str, stratum: str) -> CascadeRoute:
            return CascadeRoute(cert, False, 0.1, "c1", lambda f: sampled)

        return ask

    def admit(rubric_name: str) -> StageOne:
        return StageOne(0.8, True, spent.append)

    judge = JudgeClient(base_url=JUDGE_URL, model="judge-model", max_retries=0)
    try:
        for api in mock_judge():
            clients = Clients(
                judge=judge,
                escalation_gate=refusing_gate,
                cascade_route=route((0.4, True)),
                stage_one=admit,
            )
            drawn = await run_scorer(grounded_case("t1"), rubric, clients)
            trail = drawn.details["cascade"]
            assert api.call_count == 1 and asked == []
            assert trail["decided_by"] == "judge" and trail["p2"] == 0.4
            assert trail["p1"] == 0.8 and trail["calibration"] is False
            assert len(spent) == 1 and spent[0] > 0 and trail["cpu_ms"] > 0
            clients = Clients(
                judge=judge, escalation_gate=refusing_gate, cascade_route=route((0.4, False))
            )
            passed = await run_scorer(grounded_case("t2"), rubric, clients)
            assert passed.details["cascade"]["decided_by"] == "local_certified"
            assert passed.details["cascade"]["p2"] == 0.4 and api.call_count == 1
    finally:
        await judge.aclose()
