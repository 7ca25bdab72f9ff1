"""Every garbage intake entry is quarantined, counted and never evaluated (issue 26 §4).

Anyone with write access to Redis (an older app, a bug, an attacker) can push any bytes into
the intake list. Bytes that are not UTF-8 used to be decoded with U+FFFD into a "trace ID"
that was then evaluated ("not found" error records). Now each such entry is kept as it came
in `{prefix}:intake:quarantine`, counted (`invalid`, `quarantined`,
`quarantined:intake:<cause>`, shown by `evaluator stats`), and its batch is unaffected.
Real Redis, SQLite; the worker and the CLI as real processes, the judge on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from evaluator.intake.drain import Intake, SamplingConfig
from evaluator.intake.enqueue import intake_key
from evaluator.intake.parking import quarantine_key
from evaluator.sampling import TailRules
from evaluator.sources.ingest import ingest_traces
from evaluator.store import outbox
from evaluator.store.store import Store

from .conftest import TONE_RUBRIC, make_settings, rag_trace, write_rubric
from .judge_stub import JudgeStub
from .scenarios.cli import evaluator_command, run

# (entry, cause): what the drain must refuse, and why.
GARBAGE: list[tuple[bytes, str]] = [
    (b"\xff\xfe", "format"),  # not UTF-8, a bare "ID"
    (b"caf\xe9", "format"),  # Latin-1, not UTF-8
    (b"ok-\x80-id", "format"),  # a stray continuation byte
    (b"\xc0\xaf", "format"),  # an overlong encoding of '/'
    (b"\xed\xa0\x80", "format"),  # a UTF-8-encoded surrogate
    (b"id-\xff\x1f{}", "format"),  # not UTF-8, with signals
    (b'good\x1f{"e":true,"x":"\xff"}', "format"),  # a fine ID, bytes not UTF-8 after it
    (b"", "format"),  # empty
    (b"   ", "format"),  # blank
    (b" padded ", "format"),  # surrounding whitespace
    (b"tab\tid", "format"),  # not printable
    (b"a\x00b", "nul"),
    (b"x" * 300, "oversize"),
    (b"t1\x1fnot json", "format"),
    (b"t2\x1f[1, 2]", "format"),  # JSON, not an object
    (b"t3\x1f" + b"[" * 100_000, "depth"),  # nested past the parser's recursion limit
    (b"\x1f{}", "format"),  # no ID at all
]
VALID = [b"v1", b'v2\x1f{"e":true}', b"v3"]


@pytest.mark.parametrize("rate", [0.0, 1.0])
async def test_garbage_is_quarantined_counted_and_never_becomes_an_intent(
    redis_url: str, tmp_path: Path, rate: float
) -> None:
    """At rate 0 (nothing rate-sampled: the hot path that used to hash a repaired ID) and 1."""
    client = Redis.from_url(redis_url)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    intake = Intake(client, key_prefix="gq", queue_name="q", engine=store.engine,
                    sampling=SamplingConfig(rate, TailRules()))  # fmt: skip
    entries = [e for e, _ in GARBAGE]
    await client.rpush(intake_key("gq"), *entries[:9], *VALID, *entries[9:])
    result = await intake.drain_all(100)
    assert result.popped == len(GARBAGE) + len(VALID) and result.invalid == len(GARBAGE)
    assert await client.lrange(quarantine_key("gq"), 0, -1) == entries  # byte for byte
    stats = await intake.stats()
    assert stats["invalid"] == stats["quarantined"] == len(GARBAGE)
    causes = {c: sum(1 for _, k in GARBAGE if k == c) for _, c in GARBAGE}
    assert {k: v for k, v in stats.items() if k.startswith("quarantined:")} == {
        f"quarantined:intake:{c}": n for c, n in causes.items()
    }
    traced = {i.trace_id for i in outbox.list_intents(store.engine, limit=1000)}
    assert traced == ({"v1", "v2", "v3"} if rate == 1.0 else {"v2"})  # v2: its error signal
    store.close()
    await client.aclose()


def test_a_worker_process_evaluates_the_valid_entries_and_no_garbage(
    tmp_path: Path, redis_url: str
) -> None:
    with JudgeStub() as judge:
        write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
        settings_obj = make_settings(
            tmp_path, redis_url,
            judge={"base_url": judge.url, "model": "gpt-4o-mini", "max_retries": 0,
                   "timeout_s": 5},
        )  # fmt: skip
        settings = tmp_path / "settings.toml"
        store = Store(settings_obj.database.url)
        ingest_traces(store, [rag_trace(t, answer=f"answer of {t}") for t in ("v1", "v2", "v3")])
        store.close()
        client = SyncRedis.from_url(redis_url)
        key = intake_key(settings_obj.redis.key_prefix)
        client.rpush(key, *[e for e, _ in GARBAGE], *VALID)
        env = {**os.environ, "EVALUATOR_SETTINGS": str(settings), "HF_HUB_OFFLINE": "1"}
        burst = subprocess.run(
            [*evaluator_command(), "worker", "--burst"],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert burst.returncode == 0, burst.stdout + burst.stderr
        stats = json.loads(run("stats", "--json", settings=settings).stdout)["intake"]
        quarantined = client.lrange(quarantine_key(settings_obj.redis.key_prefix), 0, -1)
        client.close()
    assert quarantined == [e for e, _ in GARBAGE]
    assert stats["invalid"] == stats["quarantined"] == len(GARBAGE), stats
    assert sum(v for k, v in stats.items() if k.startswith("quarantined:intake:")) == len(GARBAGE)
    store = Store(settings_obj.database.url)
    try:
        records = list(store.records(limit=1000))
        intents = outbox.list_intents(store.engine, limit=1000)
    finally:
        store.close()
    # Never evaluated: no record or intent names anything but the three valid traces.
    assert sorted(r.trace_id for r in records) == ["v1", "v2", "v3"]
    assert {r.status for r in records} == {"ok"}
    assert sorted(i.trace_id for i in intents) == ["v1", "v2", "v3"]
    assert judge.calls == 3
