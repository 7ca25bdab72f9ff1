"""Anchor runs end to end: real SQLite and Redis (reply cache on), the judge mocked at the
HTTP layer by the label-aware drifting judge (bench/drifting_judge.py) through respx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from redis.asyncio import Redis
from sqlmodel import Session, select

from bench.drifting_judge import DriftPolicy
from evaluator.analytics.judge_drift import list_runs
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import Price
from evaluator.store.models import AlertRecord
from evaluator.store.store import Store
from evaluator.worker.anchors import anchors_job, load_anchor_items, run_anchors
from evaluator.worker.runtime import Runtime, make_judge
from judges.types import Clients

from .conftest import JUDGE_URL, make_settings, write_rubric

SAMPLE = Path(__file__).parents[1] / "evaluator" / "data" / "ragtruth_sample.jsonl"

ANCHORED = """
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
"""


def write_anchor_file(path: Path) -> None:
    """The sample's traces in the labelled-JSONL format ({"trace", "label"})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for raw in SAMPLE.read_text().splitlines():
        trace = json.loads(raw)
        bad = trace["attributes"].pop("ragtruth.hallucinated")
        lines.append(json.dumps({"trace": trace, "label": "hallucinated" if bad else "faithful"}))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def runtime(tmp_path: Path, redis_url: str) -> Iterator[Runtime]:
    settings = make_settings(
        tmp_path,
        redis_url,
        judge={"base_url": JUDGE_URL, "model": "judge-m"},
        redaction={"enabled": False},
    )
    price = Price(input_per_mtok=0.15, output_per_mtok=0.6)
    settings = settings.model_copy(update={"pricing": {"judge-m": price}})
    write_rubric(tmp_path / "rubrics", "anchored", ANCHORED)
    write_anchor_file(tmp_path / "rubrics" / "anchors" / "anchored.jsonl")
    redis = Redis.from_url(redis_url)
    rt = Runtime(
        settings=settings,
        store=Store(settings.database.url),
        rubrics=load_rubrics(settings.rubrics.path),
        clients=Clients(judge=make_judge(settings, redis)),  # with its Redis reply cache
        redis=redis,
    )
    yield rt
    rt.store.close()


def policy_for(rt: Runtime, accuracy: float) -> DriftPolicy:
    path = rt.rubrics.directory / "anchors" / "anchored.jsonl"
    labels = {i.case.answer.strip(): i.positive for i in load_anchor_items(path)}
    return DriftPolicy(labels, accuracy, noise=0.0, seed=5)


def mock_judge(policy: DriftPolicy) -> respx.Route:
    return respx.post(f"{JUDGE_URL}/chat/completions").mock(
        side_effect=lambda request: httpx.Response(
            200, json=policy.completion(json.loads(request.content))
        )
    )


def drift_alerts(rt: Runtime) -> list[AlertRecord]:
    with Session(rt.store.engine) as session:
        return list(session.exec(select(AlertRecord).where(AlertRecord.kind == "judge_drift")))


@respx.mock
async def test_unchanged_judge_never_alerts_and_a_drop_does(runtime: Runtime) -> None:
    rubric = runtime.rubrics.by_name("anchored")
    assert rubric is not None
    policy = policy_for(runtime, 0.95)
    route = mock_judge(policy)

    first = await run_anchors(runtime, rubric)
    assert first.run is not None and first.run.n == 40 and first.alert == "none"
    assert first.estimate.calls == 40 and first.estimate.usd > 0
    assert first.run.metrics["positives"] == 12  # stratified: the small class is all in
    ba = first.run.metrics["balanced_accuracy"]
    assert ba["ci_low"] <= ba["value"] <= ba["ci_high"] and ba["value"] > 0.85
    assert first.run.cost_usd > 0 and first.run.judge_calls == 40

    same = await run_anchors(runtime, rubric)
    assert same.alert == "none" and not same.run.drift["alarm"]  # type: ignore[union-attr]
    assert same.run.drift["test"] == "paired-exact"  # type: ignore[union-attr]
    # the reply cache was bypassed: every anchor item went to the judge each time
    assert route.call_count == 80
    # the second estimate uses the first run's measured tokens per call
    assert same.estimate.input_tokens == first.run.input_tokens

    policy.set_accuracy(0.55)
    dropped = await run_anchors(runtime, rubric)
    assert dropped.alert == "opened", dropped.run.drift  # type: ignore[union-attr]
    (alert,) = drift_alerts(runtime)
    assert alert.status == "open" and "JUDGE DRIFT" in alert.message
    assert alert.baseline_mean > alert.current_mean + 0.2

    still = await run_anchors(runtime, rubric)
    assert still.alert == "already_open" and len(drift_alerts(runtime)) == 1

    policy.set_accuracy(0.95)
    back = await run_anchors(runtime, rubric)
    assert back.alert == "resolved"
    assert drift_alerts(runtime)[0].status == "resolved"
    assert len(list_runs(runtime.store, "anchored")) == 5

    # the cron body: same epoch, ran just now -> nothing is due
    report = await anchors_job({"runtime": runtime})
    assert report == {"ran": [], "errors": []}


@respx.mock
async def test_a_run_over_its_budget_is_skipped(runtime: Runtime, tmp_path: Path) -> None:
    rubric = runtime.rubrics.by_name("anchored")
    assert rubric is not None and rubric.anchors is not None
    capped = rubric.model_copy(
        update={"anchors": rubric.anchors.model_copy(update={"max_usd": 1e-9})}
    )
    route = mock_judge(policy_for(runtime, 0.9))
    outcome = await run_anchors(runtime, capped)
    assert outcome.skipped.startswith("estimated $") and outcome.run is None
    assert route.call_count == 0
