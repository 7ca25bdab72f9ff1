"""Loud, not fragile, in real processes: `evaluator worker` refuses to start (exit 2, one
line) on a sink that could never send, and starts — logging the fault once — on a sink it
cannot reach now."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from evaluator.config.settings import load_settings
from tests.conftest import make_settings, write_rubric
from tests.scenarios.cli import evaluator_command, run
from tests.scenarios.test_worker_heartbeat import RUBRIC, Workers, _until

HOOK = "https://hooks.invalid/alerts"  # .invalid never resolves (RFC 2606)


def _settings(tmp_path: Path, redis_url: str, extra: str = "", **alerts: object) -> Path:
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    make_settings(tmp_path, redis_url, worker={"heartbeat_s": 0.5},
                  alerts={"allowlist": ["hooks.invalid"], **alerts})  # fmt: skip
    path = tmp_path / "settings.toml"
    path.write_text(path.read_text() + extra)
    return path


def test_a_signed_webhook_without_its_secret_stops_the_worker_at_start(
    tmp_path: Path, redis_url: str
) -> None:
    path = _settings(tmp_path, redis_url, webhook_urls=[HOOK])
    env = {"EVALUATOR_WEBHOOK_SECRET": ""}
    done = run("worker", settings=path, env=env, check=False, timeout=120)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "EVALUATOR_WEBHOOK_SECRET is not set" in lines[0], done.stderr
    check = run("rubrics", "check", settings=path, env=env, check=False)
    assert check.returncode == 1 and "EVALUATOR_WEBHOOK_SECRET" in check.stderr
    health = run("health", settings=path, env=env, check=False)
    assert health.returncode == 1 and "FAIL  alerts" in health.stdout, health.stdout


def test_an_unreachable_unsigned_sink_starts_and_is_logged_once(
    tmp_path: Path, redis_url: str
) -> None:
    extra = f'[[alerts.webhooks]]\nurl = "{HOOK}"\nsigned = false\n'
    path = _settings(tmp_path, redis_url, extra)
    log = tmp_path / "worker.log"
    workers = Workers(path, load_settings(path, environ={}))
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*evaluator_command(), "--settings", str(path), "worker"],
            stdout=sink, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
        try:
            _until("the worker's heartbeat", lambda: len(workers.beats()) == 1, alive=(proc,))
            _until("the sink's warning", lambda: "unreachable now" in log.read_text(),
                   alive=(proc,))  # fmt: skip
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    warned = [line for line in text.splitlines() if "unreachable now" in line]
    assert len(warned) == 1 and "hooks.invalid" in warned[0], text
