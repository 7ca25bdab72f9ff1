"""The certified cascade through the worker's pipeline: real Redis, real SQLite (the
certifications table the router reads), the real local scorer; the judge is respx.

Cold start judges every sampled trace; once a certification of the stratum is stored, local
passes begin (the calibration draw's sessions still go to the judge); once it is withdrawn,
the judge decides again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx

from evaluator.sources.ingest import ingest_traces
from evaluator.store import certifications as certs
from evaluator.store.store import Store
from evaluator.worker.cascade_routing import calibration_point, cluster_key
from evaluator.worker.pipeline import evaluate_trace
from evaluator.worker.runtime import build_runtime
from judges.types import EvalCase
from tests.cascade_support import (
    GROUNDED,
    INVENTED,
    JUDGE,
    cascade_rubric,
    certify,
    grounded_case,
    mock_judge,
    stratum_for,
    trace,
)
from tests.conftest import make_settings

pytest.importorskip("judges.scorers.local")

CASCADE = cascade_rubric(audit_rate=0.1)


def drawn(session: str) -> bool:
    case = EvalCase("t", "s", "q", "a")  # the session decides the cluster, not the case
    return calibration_point(cluster_key(session, case), "faithfulness") < 0.1


# Sessions on both sides of the draw (it is a hash: found, not chosen by score).
SESSIONS = [f"sess-{i}" for i in range(200)]
IN_DRAW = [s for s in SESSIONS if drawn(s)][:2]
OUT_OF_DRAW = [s for s in SESSIONS if not drawn(s)][:6]


@pytest.fixture
def judge_api() -> Iterator[respx.Route]:
    yield from mock_judge()


async def test_cold_start_then_certified_local_passes_then_withdrawal(
    tmp_path: Path, redis_url: str, judge_api: respx.Route
) -> None:
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "faithfulness.toml").write_text(CASCADE)
    settings = make_settings(tmp_path, redis_url, judge=JUDGE, worker={"certifications_ttl_s": 0})
    store = Store(settings.database.url)
    runtime = build_runtime(settings)

    async def run(phase: str) -> dict[str, Any]:
        docs = [trace(f"{phase}-g-{s}", GROUNDED, s) for s in IN_DRAW + OUT_OF_DRAW]
        docs.append(trace(f"{phase}-x", INVENTED, OUT_OF_DRAW[0]))
        ingest_traces(store, docs)
        for d in docs:
            await evaluate_trace(runtime, d["trace_id"], {}, job_try=1)
        got = {r.trace_id: r for r in store.records(limit=1000)}
        return {d["trace_id"]: got[d["trace_id"]] for d in docs}

    # Cold start: no certification, every sampled trace is judged, confident or not.
    cold = await run("cold")
    assert judge_api.call_count == len(cold) == 9
    for row in cold.values():
        trail = row.details["cascade"]
        assert trail["decided_by"] == "judge" and trail["certification"] is None
        session = row.trace_id.split("-g-")[1] if "-g-" in row.trace_id else OUT_OF_DRAW[0]
        assert trail["calibration"] == drawn(session)
    assert sum(r.details["cascade"]["calibration"] for r in cold.values()) == len(IN_DRAW)

    # A certification of the stratum: local passes begin, except for the draw's sessions.
    cert = certify(runtime, stratum_for(grounded_case("c")), 0.5, prompt_version="v1")
    calls = judge_api.call_count
    warm = await run("warm")
    by = {t: r.details["cascade"]["decided_by"] for t, r in warm.items()}
    for s in OUT_OF_DRAW:
        assert by[f"warm-g-{s}"] == "local_certified" and warm[f"warm-g-{s}"].judge_calls == 0
        assert warm[f"warm-g-{s}"].details["cascade"]["certification"] == cert
    for s in IN_DRAW:  # audits: judged, naming the certification they check
        row = warm[f"warm-g-{s}"]
        assert by[row.trace_id] == "judge" and row.details["cascade"]["calibration"] is True
        assert row.details["cascade"]["certification"] == cert
    assert by["warm-x"] == "judge"  # hard evidence: the judge, certified stratum or not
    assert judge_api.call_count - calls == len(IN_DRAW) + 1

    # Withdrawn: the judge decides everything again (ttl 0: at the next trace).
    assert certs.withdraw(store.engine, cert, "monitor: audited passes fail too often")
    calls = judge_api.call_count
    after = await run("after")
    assert judge_api.call_count - calls == len(after)
    assert all(r.details["cascade"]["decided_by"] == "judge" for r in after.values())
    store.close()
    await runtime.aclose()


async def test_without_a_judge_the_worker_warns_and_records_advisory_verdicts(
    tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No judge configured: the start-up log says the cascade's verdicts are advisory and
    nothing can be certified (once, not per record); each record says local_advisory."""
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "faithfulness.toml").write_text(CASCADE)
    settings = make_settings(tmp_path, redis_url)
    assert not settings.judge.configured
    store = Store(settings.database.url)
    with caplog.at_level(logging.WARNING, logger="evaluator.worker.runtime"):
        runtime = build_runtime(settings)
    warned = [r.getMessage() for r in caplog.records if r.name == "evaluator.worker.runtime"]
    assert any(
        "faithfulness have no judge configured" in w and "nothing can be certified" in w
        for w in warned
    ), warned
    doc = trace("advisory-1", GROUNDED, IN_DRAW[0])  # even a calibration session
    ingest_traces(store, [doc])
    await evaluate_trace(runtime, doc["trace_id"], {}, job_try=1)
    (row,) = store.records(limit=10)
    assert row.details["cascade"]["decided_by"] == "local_advisory" and row.judge_calls == 0
    store.close()
    await runtime.aclose()
