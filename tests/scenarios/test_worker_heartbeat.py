"""The worker's own heartbeat, in real processes: `evaluator worker` subprocesses, real
Redis, `evaluator health --require-worker[=N]` as a supervisor runs it.

Guarantee checked (evaluator.worker.heartbeat): a worker killed with SIGKILL leaves the
count within 3 × worker.heartbeat_s of its last beat; a clean stop leaves it at once. The
test uses heartbeat_s = 0.5 (TTL 1.5 s) and polls state; it never sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from evaluator.config.settings import Settings
from evaluator.worker.heartbeat import key_pattern
from tests.conftest import make_settings, write_rubric
from tests.scenarios.cli import evaluator_command, run

HEARTBEAT_S = 0.5
RUBRIC = 'name = "faith"\nversion = "1"\nscorer = "faithfulness"\nmethod = "local"\n'
API_KEY = "sk-test-do-not-print-0123456789"


def _until(what: str, ready: Callable[[], bool], deadline_s: float = 120,
           alive: tuple[subprocess.Popen[str], ...] = ()) -> float:  # fmt: skip
    """Poll until `ready()`; return the seconds it took."""
    start = time.monotonic()
    while not ready():
        for p in alive:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"a worker exited ({p.returncode}): {out}{err}"[-3000:])
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"timed out after {deadline_s} s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


class Workers:
    def __init__(self, path: Path, settings: Settings) -> None:
        self.path, self.settings, self.procs = path, settings, list[subprocess.Popen[str]]()
        self.redis = redis.Redis.from_url(settings.redis.url)

    def start(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*evaluator_command(), "--settings", str(self.path), "worker"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": API_KEY},
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def beats(self) -> list[dict[str, object]]:
        pattern = key_pattern(self.settings.redis.key_prefix, self.settings.redis.queue_name)
        values = [self.redis.get(k) for k in self.redis.scan_iter(match=pattern)]
        return [json.loads(v) for v in values if v is not None]

    def health(self, *flags: str) -> tuple[int, dict[str, object]]:
        done = run("health", "--json", *flags, settings=self.path, check=False)
        return done.returncode, json.loads(done.stdout)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=30)


@pytest.fixture
def workers(tmp_path: Path, redis_url: str) -> Iterator[Workers]:
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    settings = make_settings(
        tmp_path, redis_url,
        worker={"heartbeat_s": HEARTBEAT_S, "trace_not_found_tries": 2,
                "trace_not_found_delay_s": 0.0},
        judge={"base_url": "http://127.0.0.1:9/v1", "model": "judge-model"},
    )  # fmt: skip
    w = Workers(tmp_path / "settings.toml", settings)
    yield w
    w.close()


@pytest.mark.timeout(300)
def test_kill_9_turns_health_unhealthy_within_the_ttl(workers: Workers) -> None:
    code, checks = workers.health("--require-worker")
    assert code == 1 and checks["redis"]["workers"] == 0  # type: ignore[index]
    first, second = workers.start(), workers.start()
    _until("two heartbeats", lambda: len(workers.beats()) == 2, alive=(first, second))
    assert workers.health("--require-worker=2")[0] == 0
    beats = {b["pid"]: b for b in workers.beats()}
    assert set(beats) == {first.pid, second.pid}

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = time.monotonic()
    gone = _until("the killed worker's key expires", lambda: len(workers.beats()) == 1)
    ttl = 3 * HEARTBEAT_S
    # The key's TTL runs from the last beat, at most one period before the kill.
    assert gone <= ttl + 1.0, f"key outlived its TTL: {gone:.2f} s > {ttl} s"
    code, checks = workers.health("--require-worker=2")
    unhealthy_after = time.monotonic() - killed_at
    assert code == 1, checks
    assert "1 live worker(s), 2 required" in checks["redis"]["error"]  # type: ignore[index]
    assert workers.health("--require-worker")[0] == 0  # the other one still beats
    print(f"\nkill -9 -> key gone {gone:.2f} s, health unhealthy {unhealthy_after:.2f} s "
          f"(TTL {ttl} s)")  # fmt: skip

    second.send_signal(signal.SIGTERM)  # a clean stop deletes its key at once
    second.communicate(timeout=60)
    assert workers.beats() == []
    assert workers.health("--require-worker")[0] == 1


@pytest.mark.timeout(120)
def test_a_worker_prints_one_start_line_without_secrets(workers: Workers) -> None:
    proc = workers.start()
    _until("a heartbeat", lambda: len(workers.beats()) == 1, alive=(proc,))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    lines = [line for line in (out + err).splitlines() if "worker ready" in line]
    assert len(lines) == 1, out + err
    line = lines[0]
    s = workers.settings
    for part in (f"queue {s.redis.queue_name}", "1 rubrics (faith)",
                 "judge http://127.0.0.1:9/v1 (judge-model)", f"database {s.database.url}",
                 f"Redis {s.redis.url}"):  # fmt: skip
        assert part in line, line
    assert API_KEY not in out + err
