"""The certification job on a real database (SQLite and PostgreSQL): calibration records in,
a certification at its checkpoint out, withdrawn by the monitor when audited local passes
start failing, with a "cert_withdrawn" alert delivered to a loopback webhook; a judge-drift
alert withdraws at once and blocks new certifications while open."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import Session

from evaluator.analytics.alerts import list_alerts, try_open
from evaluator.analytics.certification_job import decide, read_labels, run_certification
from evaluator.config.rubrics import parse_rubric
from evaluator.config.settings import AlertsSettings
from evaluator.outputs.webhooks import build_sinks
from evaluator.store import certifications as certs
from evaluator.store.models import AlertRecord, EvalRecord
from evaluator.store.store import Store
from judges.rubric import Rubric

T0 = datetime(2026, 11, 1, tzinfo=UTC)
RUBRIC = """
name = "faith"
version = "1"
scorer = "faithfulness"
method = "cascade"
pass_threshold = 0.5
"""
KEY = ("faith", "local:2.1", "e1", "v1", "qa")


def rubric(tmp_path: Path) -> Rubric:
    return parse_rubric(RUBRIC, source=tmp_path / "faith.toml")


def records(
    n: int, start: datetime, *, rng: np.random.Generator, fail_high: float = 0.0, prefix: str
) -> list[EvalRecord]:
    """n calibration records one minute apart, one cluster each: half fail with low cheap
    scores, half pass with high ones; a share `fail_high` of the failing ones score high
    (what a drifted cheap stage does)."""
    out = []
    for i in range(n):
        failed = bool(rng.random() < 0.5)
        high = not failed or rng.random() < fail_high
        cheap = float(rng.uniform(0.6, 1.0) if high else rng.uniform(0.0, 0.4))
        cascade = {"local_value": cheap, "cheap_score": cheap, "stage": "local:2.1",
                   "stratum": "qa", "cluster": f"{prefix}-c{i}", "calibration": True,
                   "audit_rate": 0.1, "certification": None, "decided_by": "judge"}  # fmt: skip
        out.append(
            EvalRecord(
                trace_id=f"{prefix}-{i}",
                span_id="s",
                rubric="faith",
                rubric_version="1",
                scorer="faithfulness",
                method="cascade",
                status="ok",
                score=0.2 if failed else 0.9,
                passed=not failed,
                details={"cascade": cascade},
                epoch="e1",
                prompt_version="v1",
                created_at=start + timedelta(minutes=i),
            )
        )
    return out


def local_passes(n: int, cert_id: str, start: datetime) -> list[EvalRecord]:
    cascade = {"local_value": 0.95, "cheap_score": 0.95, "stage": "local:2.1", "stratum": "qa",
               "cluster": "x", "calibration": False, "audit_rate": 0.1,
               "certification": cert_id, "decided_by": "local_certified"}  # fmt: skip
    return [
        EvalRecord(
            trace_id=f"local-{i}",
            span_id="s",
            rubric="faith",
            rubric_version="1",
            scorer="faithfulness",
            method="cascade",
            status="ok",
            score=0.95,
            passed=True,
            details={"cascade": {**cascade, "cluster": f"l{i}"}},
            epoch="e1",
            prompt_version="v1",
            created_at=start,
        )
        for i in range(n)
    ]


def add(store: Store, rows: list[EvalRecord]) -> None:
    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()


class _Receiver(BaseHTTPRequestHandler):
    got: queue.Queue[dict[str, Any]]

    def do_POST(self) -> None:
        self.got.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[dict[str, Any]]]]:
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    handler = type("H", (_Receiver,), {"got": got})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


async def test_certifies_at_a_checkpoint_then_the_monitor_withdraws_and_pages(
    store: Store, tmp_path: Path, receiver: tuple[str, queue.Queue[dict[str, Any]]]
) -> None:
    rng = np.random.default_rng(7)
    url, got = receiver
    add(store, records(90, T0, rng=rng, prefix="a"))
    r = rubric(tmp_path)
    now = T0 + timedelta(days=1)
    assert decide(store, [r], now).written == []  # 90 clusters: before the first checkpoint

    add(store, records(130, T0 + timedelta(hours=2), rng=rng, prefix="b"))  # 220 clusters
    assert sum(map(len, read_labels(store.engine, "faith").values())) == 220
    report = decide(store, [r], now)
    (row,) = report.written
    assert row.key == KEY and row.look == 200 and row.clusters == 200
    assert row.threshold is not None and 0.4 <= row.threshold <= 0.6 and row.misses == 0
    assert row.fail_given_pass_upper is not None and row.fail_given_pass_upper < 0.2
    assert decide(store, [r], now + timedelta(minutes=5)).written == []  # same checkpoint
    (active,) = await certs.active_certifications(store)
    assert (active.id, active.threshold, active.stratum) == (row.id, row.threshold, "qa")

    add(store, local_passes(7, row.id, now))
    decide(store, [r], now + timedelta(minutes=10))
    stored = certs.get(store.engine, row.id)
    assert stored is not None and stored.saved_judge_calls == 7

    # The cheap stage drifts: 60 % of failing answers now score high; audits reveal it.
    later = now + timedelta(hours=1)
    add(store, records(150, later, rng=rng, fail_high=0.6, prefix="d"))
    alerts = AlertsSettings(webhook_urls=(url,), allowlist=("127.0.0.1",), allow_private=True,
                            backoff_s=0)  # fmt: skip
    sinks = build_sinks(alerts, {"EVALUATOR_WEBHOOK_SECRET": "k"})
    try:
        report = await run_certification(store, [r], sinks, later + timedelta(hours=3))
    finally:
        await sinks.aclose()
    (w,) = report.withdrawn
    assert w.row.id == row.id and w.test.endswith("_monitor")
    assert w.failed > w.ceiling * w.audited  # type: ignore[operator]
    assert await certs.active_certifications(store) == []
    body = got.get(timeout=10)
    assert body["event"] == "alert.opened" and body["alert"]["kind"] == "cert_withdrawn"
    assert row.id in body["alert"]["message"] and body["alert"]["labels"]["stratum"] == "qa"
    (alert,) = list_alerts(store, rubric="faith")
    assert [d["sink"] for d in alert.deliveries] == ["log", "webhook"]
    withdrawn = certs.get(store.engine, row.id)
    assert withdrawn is not None and "monitor:" in (withdrawn.withdrawn_reason or "")
    # A new segment starts after the withdrawal: the old labels do not re-certify the key.
    assert decide(store, [r], later + timedelta(hours=4)).written == []


def errored(n: int, start: datetime, cheap: float, prefix: str) -> list[EvalRecord]:
    """n calibration records whose judge call failed (error records: no verdict)."""
    out = records(n, start, rng=np.random.default_rng(0), prefix=prefix)
    for r in out:
        r.status, r.score, r.passed = "error", None, None
        r.details = {"error_kind": "judge_unavailable",
                     "cascade": {**r.details["cascade"], "cheap_score": cheap,
                                 "local_value": cheap}}  # fmt: skip
    return out


def test_judge_errors_on_calibration_draws_count_against_the_cheap_stage(
    store: Store, tmp_path: Path
) -> None:
    """Regression (issue 28 review): error records of the calibration draw were dropped, so a
    judge that errs on fluent hallucinations hid the misses. Each is now a failing label and a
    miss at every threshold at or below its cheap score; below it, not counted at all."""
    rng = np.random.default_rng(7)
    clean = records(220, T0, rng=rng, prefix="a")
    add(store, clean)
    r, now = rubric(tmp_path), T0 + timedelta(days=1)
    (base,) = decide(store, [r], now).written
    assert base.threshold is not None and base.threshold < 0.7 and base.misses == 0
    certs.withdraw(store.engine, base.id, "test: start again", now)

    # The same labels again after the withdrawal, with 4 errored clusters among the first 200
    # whose cheap score is 0.97: they are misses wherever the threshold is <= 0.97.
    later = now + timedelta(hours=1)
    again = records(220, later, rng=np.random.default_rng(7), prefix="b")
    errs = errored(4, later + timedelta(seconds=30), 0.97, "e")
    add(store, again + errs)
    labels = read_labels(store.engine, "faith")[KEY]
    assert sum(x.errored and x.failed for x in labels) == 4
    (row,) = decide(store, [r], later + timedelta(days=1)).written
    assert row.look == 200 and row.clusters == 200
    assert row.threshold is None or row.threshold > 0.97, row
    # Errored labels below every passing score leave the certification as it was.
    certs.withdraw(store.engine, row.id, "test: start again", later + timedelta(days=1))
    last = later + timedelta(days=2)
    add(store, records(220, last, rng=np.random.default_rng(7), prefix="c")
        + errored(4, last + timedelta(seconds=30), 0.05, "f"))  # fmt: skip
    (low,) = decide(store, [r], last + timedelta(days=1)).written
    assert low.threshold is not None and low.threshold <= base.threshold + 0.01


def test_judge_drift_withdraws_at_once_and_blocks_new_certifications(
    store: Store, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    add(store, records(220, T0, rng=rng, prefix="a"))
    r, now = rubric(tmp_path), T0 + timedelta(days=1)
    (row,) = decide(store, [r], now).written
    assert row.threshold is not None
    drift = AlertRecord(group_key="judge_drift|faith", kind="judge_drift", rubric="faith",
                        message="faith: JUDGE DRIFT: anchor accuracy 0.90 -> 0.70",
                        opened_at=now, updated_at=now)  # fmt: skip
    assert try_open(store, drift)
    report = decide(store, [r], now + timedelta(minutes=5))
    (w,) = report.withdrawn
    assert w.test == "judge_drift" and "JUDGE DRIFT" in w.reason
    assert report.events[0][1].kind == "cert_withdrawn"
    add(store, records(250, now + timedelta(hours=1), rng=rng, prefix="b"))
    assert decide(store, [r], now + timedelta(hours=6)).written == []  # blocked while open
    assert certs.active_rows(store.engine) == []


def test_a_drift_alert_opened_and_resolved_between_runs_still_withdraws(
    store: Store, tmp_path: Path
) -> None:
    """Regression (issue 28 review): the job saw only open drift alerts, so one that opened and
    resolved between two runs left the certification in force. An active row created before
    the latest drift alert opened is withdrawn; the next segment starts after it resolved."""
    rng = np.random.default_rng(3)
    add(store, records(220, T0, rng=rng, prefix="a"))
    r, now = rubric(tmp_path), T0 + timedelta(days=1)
    (row,) = decide(store, [r], now).written
    assert row.threshold is not None
    opened, resolved = now + timedelta(minutes=1), now + timedelta(minutes=3)
    drift = AlertRecord(group_key="judge_drift|faith", kind="judge_drift", rubric="faith",
                        message="faith: JUDGE DRIFT", status="resolved", opened_at=opened,
                        updated_at=resolved, resolved_at=resolved)  # fmt: skip
    with Session(store.engine) as session:
        session.add(drift)
        session.commit()
    report = decide(store, [r], now + timedelta(minutes=5))
    (w,) = report.withdrawn
    assert w.row.id == row.id and w.test == "judge_drift" and "opened at" in w.reason
    assert certs.active_rows(store.engine) == []
    # Labels after the resolution certify anew, and that row is not withdrawn again.
    add(store, records(220, resolved + timedelta(minutes=10), rng=rng, prefix="b"))
    later = resolved + timedelta(days=1)
    (fresh,) = decide(store, [r], later).written
    assert fresh.threshold is not None and fresh.clusters == 200
    assert decide(store, [r], later + timedelta(minutes=5)).withdrawn == []
    assert [a.id for a in certs.active_rows(store.engine)] == [fresh.id]


async def test_cron_body_runs_once_per_period_and_skips_without_a_cascade(
    tmp_path: Path, redis_url: str
) -> None:
    from redis.asyncio import Redis

    from evaluator.analytics.certification_job import certification_job
    from evaluator.worker.runtime import build_runtime
    from tests.conftest import make_settings, write_rubric

    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    runtime = build_runtime(settings)
    add(runtime.store, records(120, T0, rng=np.random.default_rng(5), prefix="a"))
    redis = Redis.from_url(redis_url)
    try:
        first = await certification_job({"runtime": runtime, "redis": redis})
        second = await certification_job({"runtime": runtime, "redis": redis})
    finally:
        await redis.aclose()
        await runtime.aclose()
    assert first["errors"] == [] and len(first["written"]) == 1  # checkpoint 100 reached
    assert second == {"skipped": "already run for this period"}

    (tmp_path / "rubrics" / "faith.toml").write_text(RUBRIC.replace('"cascade"', '"local"'))
    runtime = build_runtime(make_settings(tmp_path, redis_url))
    try:
        assert await certification_job({"runtime": runtime, "redis": None}) == {
            "skipped": "no cascade rubric"
        }
    finally:
        await runtime.aclose()
