"""The certified cascade in real processes (issue 28, done-when): cold start → judge all →
certification appears → local passes begin → injected drift → certification withdrawn.

Processes: a long-running `evaluator worker` (real Redis, SQLite), an app that stores its
traces, enqueues them and exits (a child process per burst), a loopback judge whose verdicts
the test decides, a loopback webhook that checks the HMAC signature, and `evaluator certify
--rubric faithfulness --json`. The rubric is the shipped `faithfulness` cascade (alpha 0.05,
delta 0.1, local_threshold 0.5) with two overrides: every trace sampled, and audit_rate 0.5
so the first checkpoint (100 labelled clusters) is reached after ~200 sessions.

Traffic, judge and cron: tests/scenarios/cascade_world.py. The certification job runs in the
worker, enqueued by its cron name as arq's scheduler does; the test owns its schedule, so no
run of the worker's own cron lands mid-phase.

Assertions are exact counts: judge requests against records decided by the judge, the
tickets the judge saw against the records decided locally, the certification's labels,
failing labels and decided share against the test's own truth about the draw, the judge
calls the certification saved against its local passes.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evaluator.config.settings import SHIPPED_RUBRICS_DIR
from tests.conftest import make_settings
from tests.polling import wait_until
from tests.scenarios.cascade_world import (
    CertificationCron,
    LoopbackJudge,
    Sent,
    SignedWebhook,
    burst,
    drawn,
    mixed_kind,
    serve,
)
from tests.scenarios.cli import evaluator_command, run

pytest.importorskip("judges.scorers.local")

AUDIT_RATE = 0.5
FIRST_CHECKPOINT = 100  # labelled clusters at the schedule's first checkpoint
PHASE_DEADLINE_S = 180.0  # generous: a loaded machine is slower, never wrong
WARM, DRIFT, AFTER = 60, 20, 30  # sessions per burst after the cold start

APP = """
import json, sys
from pathlib import Path
from evaluator import Store, enqueue_trace_sync, ingest_jsonl, load_settings
path = Path(sys.argv[1])
store = Store(load_settings().database.url)
report = ingest_jsonl(store, path)
assert not report.errors, report.errors
store.close()
for line in path.read_text().splitlines():
    enqueue_trace_sync(json.loads(line)["trace_id"], feature="plans", prompt_version="v1")
print("enqueued", flush=True)
"""

Records = dict[str, dict[str, Any]]


@pytest.fixture
def judge_url() -> Iterator[str]:
    LoopbackJudge.seen = []
    yield from serve(LoopbackJudge)


@pytest.fixture
def webhook_url() -> Iterator[str]:
    SignedWebhook.got = queue.Queue()
    for url in serve(SignedWebhook):
        yield f"{url}/hook"


@dataclass
class Scenario:
    """The app's side and the reads: bursts of traces, their records, `evaluator certify`."""

    settings_path: Path
    tmp: Path
    worker: subprocess.Popen[str]
    sent: dict[str, Sent] = field(default_factory=dict)
    clock: list[str] = field(default_factory=list)  # seconds per step, for the report
    _t: float = field(default_factory=time.monotonic)

    @property
    def db(self) -> Path:
        return self.tmp / "evals.db"

    def lap(self, what: str) -> None:
        now = time.monotonic()
        self.clock.append(f"{what} {now - self._t:.1f} s")
        self._t = now

    def until(self, ready: Callable[[], object], what: str) -> None:
        def check() -> object:
            if self.worker.poll() is not None:
                raise AssertionError(f"the worker exited ({self.worker.returncode}): {what}")
            return ready()

        wait_until(check, what, deadline_s=PHASE_DEADLINE_S)

    def send(self, numbers: range, kind: Callable[[int], str]) -> list[Sent]:
        """The app stores and enqueues these traces and exits; returns once each has its
        record (the worker writes one per trace and rubric)."""
        made = burst(numbers, kind, AUDIT_RATE)
        file = self.tmp / f"burst-{numbers.start}.jsonl"
        file.write_text("".join(json.dumps(t) + "\n" for t, _ in made))
        app = subprocess.run(
            [sys.executable, "-c", APP, str(file)],
            env={**os.environ, "EVALUATOR_SETTINGS": str(self.settings_path),
                 "HF_HUB_OFFLINE": "1"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert app.returncode == 0 and "enqueued" in app.stdout, app.stderr[-3000:]
        self.sent.update((s.trace_id, s) for _, s in made)
        self.until(lambda: self.count() == len(self.sent), f"records of burst {numbers}")
        return [s for _, s in made]

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db, timeout=30) as conn:
            return conn.execute(query).fetchall()

    def count(self) -> int:
        return int(self.sql("SELECT count(*) FROM eval_records")[0][0])

    def records(self, sent: list[Sent]) -> Records:
        """These traces' records: status, passed, judge_calls and the cascade trail."""
        ids = {s.trace_id for s in sent}
        rows = self.sql("SELECT trace_id, status, passed, judge_calls, details FROM eval_records"
                        " WHERE rubric = 'faithfulness'")  # fmt: skip
        return {
            t: {"status": st, "passed": p, "judge_calls": calls,
                "cascade": json.loads(details or "{}").get("cascade") or {}}
            for t, st, p, calls, details in rows if t in ids
        }  # fmt: skip

    def withdrawn(self) -> bool:
        return bool(self.sql("SELECT count(*) FROM certifications WHERE withdrawn_at IS NOT NULL")
                    [0][0])  # fmt: skip

    def certifications(self) -> list[dict[str, Any]]:
        out = run("certify", "--rubric", "faithfulness", "--json", settings=self.settings_path)
        return list(json.loads(out.stdout)["certifications"])


def decided(records: Records, by: str) -> set[str]:
    return {t for t, r in records.items() if r["cascade"].get("decided_by") == by}


def check_routing(records: Records, sent: dict[str, Sent], cert: dict[str, Any]) -> None:
    """Under an active certification each record was routed by the rule: passed locally (no
    judge call) iff its session is not in the draw and its cheap score is at least the
    certified threshold; every record names the certification."""
    for t, r in records.items():
        c = r["cascade"]
        assert r["status"] == "ok", r
        assert c["calibration"] is sent[t].drawn and c["certification"] == cert["id"], (t, c)
        score = c["cheap_score"]
        local = not sent[t].drawn and score is not None and score >= cert["threshold"]
        assert (c["decided_by"] == "local_certified") is local, (t, c)
        assert r["judge_calls"] == (0 if local else 1), (t, r)


def shipped_with_overrides() -> str:
    """The shipped rubric, every trace sampled and audit_rate AUDIT_RATE."""
    shipped = (SHIPPED_RUBRICS_DIR / "faithfulness.toml").read_text()
    rubric = shipped.replace("\nrate = 0.5\n", "\nrate = 1.0\n").replace(
        "\naudit_rate = 0.1\n", f"\naudit_rate = {AUDIT_RATE}\n"
    )
    assert rubric.count("\nrate = 1.0\n") == 1 and f"\naudit_rate = {AUDIT_RATE}\n" in rubric, (
        "the shipped faithfulness rubric changed: update the overrides"
    )
    return rubric


@pytest.mark.timeout(600)
def test_cold_start_certifies_passes_locally_and_withdraws_on_drift(
    tmp_path: Path, redis_url: str, judge_url: str, webhook_url: str
) -> None:
    started = time.monotonic()
    (tmp_path / "rubrics").mkdir()
    (tmp_path / "rubrics" / "faithfulness.toml").write_text(shipped_with_overrides())
    settings = make_settings(
        tmp_path, redis_url,
        judge={"base_url": f"{judge_url}/v1", "model": "judge-model", "max_retries": 0,
               "timeout_s": 20},
        worker={"certifications_ttl_s": 0},  # a withdrawal applies from the next trace on
        alerts={"webhook_urls": [webhook_url], "allowlist": ["127.0.0.1"],
                "allow_private": True, "backoff_s": 0.1},
    )  # fmt: skip
    path = tmp_path / "settings.toml"
    cron = CertificationCron(settings)
    cron.hold()
    log = (tmp_path / "worker.log").open("w")  # a file: an unread pipe would block its writes
    worker = subprocess.Popen(
        [*evaluator_command(), "--settings", str(path), "worker"],
        stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "EVALUATOR_WEBHOOK_SECRET": SignedWebhook.secret,
             "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    s = Scenario(path, tmp_path, worker)
    seen = LoopbackJudge.seen
    try:
        # 1. Cold start: sessions until the draw holds the first checkpoint's clusters (some
        # sessions have two traces); no certification exists: the judge decides every trace.
        n_cold, in_draw = 0, 0
        while in_draw < FIRST_CHECKPOINT:
            in_draw += drawn(f"session-{n_cold:05d}", AUDIT_RATE)
            n_cold += 1
        cold = s.send(range(n_cold), mixed_kind)
        s.lap(f"cold start ({len(cold)} traces)")
        records = s.records(cold)
        assert {r["status"] for r in records.values()} == {"ok"}
        assert decided(records, "judge") == set(records), "decided without the judge"
        assert len(seen) == len(cold) == sum(r["judge_calls"] for r in records.values())
        assert sorted(seen) == sorted(x.ticket for x in cold)
        assert all(r["cascade"]["certification"] is None for r in records.values())
        labels = [x for x in cold if records[x.trace_id]["cascade"]["calibration"]]
        assert [x.trace_id for x in labels] == [x.trace_id for x in cold if x.drawn]
        assert len({x.session for x in labels}) == FIRST_CHECKPOINT < len(labels)
        assert s.sql("SELECT count(*) FROM certifications") == [(0,)]

        # 2. The job certifies the stratum at its first checkpoint, on the draw's labels.
        cron.run(s.until)
        rows = s.certifications()
        s.lap("job + certify --json")
        assert len(rows) == 1, rows
        cert = rows[0]
        assert cert["status"] == "active" and cert["stratum"] == "qa", cert
        assert (cert["alpha"], cert["delta"]) == (0.05, 0.1)
        assert cert["guarantee"] == "P(miss) <= 0.05 with confidence 0.9"
        assert cert["checkpoint_labels"] == cert["labels"] == cert["clusters"] == FIRST_CHECKPOINT
        # One label per cluster; a session's traces share their verdict (cascade_world.burst).
        failing_clusters = len({x.session for x in labels if x.failing})
        assert cert["failing"] == failing_clusters and cert["misses"] == 0, cert
        score = {x.trace_id: records[x.trace_id]["cascade"]["cheap_score"] for x in labels}
        worst_failing = max(v for t, v in score.items() if s.sent[t].failing and v is not None)
        grounded = [v for t, v in score.items() if not s.sent[t].failing]
        assert worst_failing < cert["threshold"] <= min(grounded), (cert, worst_failing)
        grounded_clusters = FIRST_CHECKPOINT - failing_clusters
        assert cert["decided_share"] == pytest.approx(grounded_clusters / FIRST_CHECKPOINT)

        # 3. Local passes begin: traces passed under the certification never reach the judge.
        calls = len(seen)
        warm = s.send(range(n_cold, n_cold + WARM), mixed_kind)
        s.lap(f"certified burst ({len(warm)})")
        records = s.records(warm)
        check_routing(records, s.sent, cert)
        local = decided(records, "local_certified")
        assert local, "no local pass under the certification"
        # These answer templates' local scores are fixed, and the certification's labels held
        # every one of them: a hallucinated answer here scores below the threshold.
        assert not {t for t in local if s.sent[t].failing}, "a known hallucination passed"
        assert len(seen) - calls == len(decided(records, "judge"))
        assert not {s.sent[t].ticket for t in local} & set(seen)
        saved = len(local)

        # 4. Drift: fluent hallucinations in the same stratum, a burst and a job run at a time
        # until the monitor withdraws. Those outside the draw pass locally (real misses).
        first, bursts = n_cold + WARM, 0
        while not s.withdrawn():
            assert bursts < 5, f"the certification survived {bursts * DRIFT} drifted traces"
            calls = len(seen)
            drift = s.send(range(first + bursts * DRIFT, first + (bursts + 1) * DRIFT),
                           lambda n: "F")  # fmt: skip
            bursts += 1
            records = s.records(drift)
            check_routing(records, s.sent, cert)
            assert decided(records, "judge") == {x.trace_id for x in drift if x.drawn}
            assert all(r["passed"] == 0 for t, r in records.items() if s.sent[t].drawn)
            assert len(seen) - calls == len(decided(records, "judge"))
            saved += len(decided(records, "local_certified"))
            cron.run(s.until)
            s.lap(f"drift burst ({len(drift)}) + job")
        events = [SignedWebhook.got.get(timeout=30)]
        while not SignedWebhook.got.empty():
            events.append(SignedWebhook.got.get_nowait())
        alerts = [(e.get("alert", e), ok) for e, ok in events]
        withdrawals = [(a, ok) for a, ok in alerts if a["kind"] == "cert_withdrawn"]
        assert len(withdrawals) == 1, events
        alert, valid = withdrawals[0]
        assert valid, "the webhook's X-Evaluator-Signature does not verify"
        assert alert["summary"]["certification"] == cert["id"], alert
        rows = s.certifications()
        assert [(r["id"], r["status"]) for r in rows] == [(cert["id"], "withdrawn")], rows
        assert rows[0]["withdrawn_at"] and "monitor" in rows[0]["withdrawn_reason"], rows
        assert rows[0]["saved_judge_calls"] == saved
        s.lap("alert + certify --json")

        # 5. After withdrawal the judge decides every trace again, whatever its answer.
        calls = len(seen)
        after = s.send(range(first + bursts * DRIFT, first + bursts * DRIFT + AFTER),
                       lambda n: "FGH"[n % 3])  # fmt: skip
        s.lap(f"burst after withdrawal ({len(after)})")
        records = s.records(after)
        assert decided(records, "judge") == {x.trace_id for x in after}
        assert all(r["cascade"]["certification"] is None for r in records.values())
        assert sorted(seen[calls:]) == sorted(x.ticket for x in after)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()
        cron.close()
    out = (tmp_path / "worker.log").read_text()
    assert worker.returncode == 0, out[-3000:]
    print(
        f"\ncold start: {len(cold)} traces in {n_cold} sessions judged, {len(labels)} labels in "
        f"{FIRST_CHECKPOINT} clusters; "
        f"certified threshold {cert['threshold']} on {cert['failing']} failing labels; "
        f"local passes {saved} (drift misses {saved - len(local)} in {bursts} burst(s) of "
        f"{DRIFT} sessions before withdrawal); wall {time.monotonic() - started:.1f} s "
        f"({'; '.join(s.clock)})"
    )
