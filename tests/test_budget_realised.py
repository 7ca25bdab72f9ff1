"""Realised inclusion probabilities end to end: the real intake (real Redis, real SQL), a day
cap that binds, two strata with different pass rates that the cap refuses at different
rates, the real worker pipeline writing the records (the judge is respx).

The records' weighted (Hájek) mean — what trends show — must cover the known population
mean with its interval; the estimator that weighted by the drawn probability alone (what
records stored before the cap refused by random key) must not. Seeded; the clock is passed
to the intake, so nothing depends on the machine's speed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest
import respx

from evalcore.weights import WeightedStats
from evaluator.budget.allocation import DAY_S
from evaluator.intake.drain import build_intake
from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import encode
from evaluator.sampling import Labels
from evaluator.sources.ingest import ingest_traces
from evaluator.store import admissions
from evaluator.store.store import Store
from evaluator.worker.pipeline import evaluate_trace
from evaluator.worker.runtime import build_runtime
from tests.conftest import (
    JUDGE_URL,
    TONE_RUBRIC,
    chat_completion,
    make_settings,
    queued_members,
    rag_trace,
    write_rubric,
)

SEED = 20261207
CAP = 100
# Stratum "big": many traces, mostly passing; "small": few, mostly failing. The cap's room
# is water-filled over the strata (max-min fair), so "big" is refused far more than "small".
STRATA = {"big": (300, 0.9), "small": (60, 0.2)}
NOON = 1_830_000_000.0 - 1_830_000_000.0 % DAY_S + 43_200.0  # a fixed UTC noon
JUDGE = {"base_url": JUDGE_URL, "model": "judge-model", "max_retries": 0, "timeout_s": 5.0}


def _population() -> list[tuple[str, str, bool]]:
    """(trace id, stratum, passes), seeded; exact pass counts per stratum."""
    rng = random.Random(SEED)
    out = []
    for stratum, (n, rate) in STRATA.items():
        passes = [i < round(n * rate) for i in range(n)]
        rng.shuffle(passes)
        out += [(f"{stratum}-{rng.getrandbits(40):010x}", stratum, p) for p in passes]
    rng.shuffle(out)  # arrival order mixes the strata
    return out


def _judge(request: httpx.Request) -> httpx.Response:
    verdict = 5 if "GOOD" in request.content.decode() else 1
    reply = json.dumps({"reasoning": "stub", "score": verdict})
    return httpx.Response(200, json=chat_completion(reply))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_weighted_mean_of_records_covers_the_population_mean_with_a_binding_cap(
    tmp_path: Path, redis_url: str, database: str, request: pytest.FixtureRequest
) -> None:
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    db = {}
    if database == "postgresql":
        db = {"url": str(request.getfixturevalue("postgres_url"))}
    settings = make_settings(
        tmp_path, redis_url, judge=JUDGE,
        budget={"usd_per_day": float(CAP), "usd_per_evaluation": 1.0, "window_s": 60.0},
        **({"database": db} if db else {}),
    )  # fmt: skip
    population = _population()
    store = Store(settings.database.url)
    ingest_traces(
        store,
        [
            rag_trace(t, answer=f"Answer {t} {'GOOD' if ok else 'BAD'}.", feature=s)
            for t, s, ok in population
        ],
    )
    runtime = build_runtime(settings)
    assert runtime.redis is not None
    prefix = settings.redis.key_prefix
    entries = [encode(t, labels=Labels(feature=s)) for t, s, _ in population]
    await runtime.redis.rpush(intake_key(prefix), *entries)
    intake = build_intake(runtime.redis, settings, sampling=runtime.sampling, engine=store.engine)
    # All of it arrives in one cap window; nothing is admitted before the window closes.
    await intake.drain_all(batch=50, now_s=NOON + 5)
    assert await queued_members(runtime.redis, settings.redis.queue_name) == []
    await intake.drain_once(50, now_s=NOON + 65)  # the next window: the first one closes
    jobs = {m[0]: m[1] for m in await queued_members(runtime.redis, settings.redis.queue_name)}
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        route = router.post("/chat/completions").mock(side_effect=_judge)
        for trace_id, wire in jobs.items():
            await evaluate_trace(runtime, trace_id, wire, job_try=1)
    rows = store.records(limit=10_000)
    by_stratum = {s: [r for r in rows if r.trace_id.startswith(s)] for s in STRATA}

    # The cap binds exactly, in SQL as in the judge's calls, and refuses by stratum.
    day = admissions.day_of(NOON)
    assert len(rows) == route.call_count == CAP
    assert admissions.counts(store.engine, day)["*"] == CAP
    # Max-min fair: each stratum gets half the room (neither asks less), so "small" loses
    # 1/6 of its draws and "big" 5/6: refused at different rates, by random key.
    assert {s: len(v) for s, v in by_stratum.items()} == {"big": 50, "small": 50}
    for stratum, (n, _) in STRATA.items():
        ps = [r.inclusion_probability for r in by_stratum[stratum]]
        assert ps == pytest.approx([50 / n] * 50), stratum
    assert all(w["pd"] == {"tone": 1.0} for w in jobs.values())  # drawn with p = 1

    truth = sum(ok for _, _, ok in population) / len(population)
    realised = WeightedStats.from_scores([(r.score, r.inclusion_probability) for r in rows])
    low, high = realised.mean_ci(0.95)
    drawn = WeightedStats.from_scores([(r.score, jobs[r.trace_id]["pd"]["tone"]) for r in rows])
    report = (
        f"population {truth:.4f}; realised-p Hájek {realised.mean:.4f} [{low:.4f}, {high:.4f}];"
        f" drawn-p {drawn.mean:.4f}"
    )
    print(report)
    assert low <= truth <= high, report
    assert not low <= drawn.mean <= high, report  # the old estimator falls outside
    store.close()
    await runtime.aclose()
