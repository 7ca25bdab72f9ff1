"""The anchor floor (`[anchors] min_agreement`): a judge bad from its first run is alerted
on, whatever earlier runs said. The decision's error rates checked by seeded simulation
against their exact values; an anchor run end to end on real SQLite and Redis, the judge's
HTTP API mocked with respx."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import respx
from sqlmodel import Session, select

from evaluator.cli.health_anchors import check_anchors
from evaluator.store.models import AlertRecord
from evaluator.worker.anchors import run_anchors
from evaluator.worker.runtime import Runtime
from judges.anchors import alert_probability, check_floor

from .conftest import JUDGE_URL, chat_completion
from .test_anchors_drift import mock_judge, policy_for, runtime  # noqa: F401 (fixture)

RUNS = 2000


def simulate(tpr: float, tnr: float, n: int, floor: float, alpha: float, seed: int) -> float:
    """Share of RUNS anchor runs (n items per class) that alert."""
    rng = random.Random(seed)
    alerts = 0
    labels = [True] * n + [False] * n
    for _ in range(RUNS):
        agreed: list[bool | None] = [rng.random() < tpr for _ in range(n)]
        agreed += [rng.random() < tnr for _ in range(n)]
        alerts += check_floor(labels, agreed, floor=floor, alpha=alpha).below
    return alerts / RUNS


def slack(p: float) -> float:
    return 4 * (p * (1 - p) / RUNS) ** 0.5 + 1 / RUNS  # four standard errors


@pytest.mark.parametrize(
    ("tpr", "tnr", "n"),
    [(0.68, 0.68, 30), (0.9, 0.48, 50), (0.69, 0.69, 100)],  # just below the 0.7 floor
)
def test_a_judge_below_the_floor_goes_unnoticed_at_most_alpha_of_the_runs(
    tpr: float, tnr: float, n: int
) -> None:
    alpha = 0.05
    silent = 1 - alert_probability(tpr, tnr, n, n, floor=0.7, alpha=alpha)
    assert silent <= alpha  # the guarantee, exactly
    simulated = 1 - simulate(tpr, tnr, n, 0.7, alpha, seed=n)
    assert simulated <= alpha + slack(alpha)


@pytest.mark.parametrize(("rate", "n"), [(0.85, 100), (0.8, 100), (0.9, 50)])
def test_the_false_alert_rate_of_a_good_judge_is_what_alert_probability_says(
    rate: float, n: int
) -> None:
    exact = alert_probability(rate, rate, n, n, floor=0.7, alpha=0.05)
    simulated = simulate(rate, rate, n, 0.7, 0.05, seed=int(rate * 1000) + n)
    assert abs(simulated - exact) <= slack(exact)
    if (rate, n) == (0.85, 100):  # the shipped max_items = 200 (100 per class)
        assert exact < 0.02


def test_unscored_items_count_as_disagreements_and_a_tiny_set_cannot_clear_the_floor() -> None:
    labels = [True] * 10 + [False] * 10
    errors = check_floor(labels, [True] * 2 + [None] * 8 + [True] * 10, floor=0.6, alpha=0.05)
    assert errors.unscored == 8 and errors.balanced_accuracy == 0.6 and errors.below
    perfect = check_floor(labels, [True] * 20, floor=0.9, alpha=0.05)
    assert perfect.below and not perfect.clearable  # 10 items per class cannot show 0.9


FLOORED = """
name = "anchored"
version = "1"
scorer = "llm_rubric"
pass_threshold = 0.5
[llm_rubric]
criteria = "Is every claim of the answer supported by the documents?"
inputs = ["question", "contexts", "answer"]
[anchors]
file = "anchors/anchored.jsonl"
every = "7d"
max_items = 40
min_agreement = 0.6
"""


def floor_alerts(rt: Runtime) -> list[AlertRecord]:
    with Session(rt.store.engine) as session:
        query = select(AlertRecord).where(AlertRecord.kind == "judge_floor")
        return list(session.exec(query))


@respx.mock
async def test_a_judge_that_passes_everything_is_alerted_on_from_its_first_run(
    runtime: Runtime,  # noqa: F811
) -> None:
    (runtime.rubrics.directory / "anchored.toml").write_text(FLOORED)
    from evaluator.config.rubrics import load_rubrics

    runtime.rubrics = load_rubrics(runtime.settings.rubrics.path)
    rubric = runtime.rubrics.by_name("anchored")
    assert rubric is not None and rubric.anchors is not None
    always_pass = json.dumps({"reasoning": "looks fine", "score": 5})
    respx.post(f"{JUDGE_URL}/chat/completions").mock(
        return_value=httpx.Response(200, json=chat_completion(always_pass))
    )
    first = await run_anchors(runtime, rubric)
    assert first.run is not None and first.alert == "none"  # no earlier run to drift from
    assert first.floor_alert == "opened"
    floor = first.run.metrics["floor"]
    assert floor["balanced_accuracy"] == 0.5 and floor["below"] and floor["lower"] < 0.6
    (alert,) = floor_alerts(runtime)
    assert "JUDGE BELOW FLOOR" in alert.message and alert.status == "open"
    health = check_anchors(runtime.settings, runtime.rubrics)
    assert health["below_floor"] == 1 and "anchored: judge agreement" in health["warning"]

    respx.routes.clear()
    mock_judge(policy_for(runtime, 0.97))
    good = await run_anchors(runtime, rubric)
    assert good.floor_alert == "resolved", good.run.metrics["floor"]  # type: ignore[union-attr]
    assert floor_alerts(runtime)[0].status == "resolved"
    assert check_anchors(runtime.settings, runtime.rubrics)["below_floor"] == 0
