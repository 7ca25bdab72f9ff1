"""Shared fixtures: a real Redis (a db leased per test run, flushed per test), real SQLite,
real PostgreSQL (a fresh schema per test, already migrated: see `postgres_url`).

Override the servers with EVALUATOR_TEST_REDIS_URL / EVALUATOR_TEST_POSTGRES_URL. Two test
runs on one machine (or pytest-xdist workers) each lease their own Redis db with `flock`, so
one run's FLUSHDB never wipes another's keys (arq's own keys ignore our prefix).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hypothesis
import pytest
import redis
import respx.mocks
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from evaluator.config.settings import SHIPPED_RUBRICS_DIR, Settings, load_settings
from evaluator.store.schema import upgrade
from evaluator.store.store import Store, make_engine

REDIS_URL = os.environ.get("EVALUATOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
POSTGRES_URL = os.environ.get(
    "EVALUATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
JUDGE_URL = "http://judge.test/v1"

# respx intercepts at httpx's client level (which transport to send through), not inside
# httpcore, so the SDK over its aiohttp client (the generator's default) is mocked too. The
# judge's shipped transport is a bare aiohttp session, which respx cannot see: settings
# whose judge is the mocked JUDGE_URL use the SDK's httpx transport (make_settings); the
# aiohttp session itself is tested against real servers (tests/test_judge_transport.py,
# the scenario tests' loopback judges).
respx.mocks.DEFAULT_MOCKER = "httpx"
FIXTURES = Path(__file__).parent / "fixtures"

# Hypothesis fails an example slower than 200 ms by default: a machine's speed, not a
# property. No deadline (each test's own `@settings` still bounds its examples' count).
hypothesis.settings.register_profile("evaluator", deadline=None)
hypothesis.settings.load_profile("evaluator")


@pytest.fixture(scope="session")
def leased_redis_url() -> Iterator[str]:
    """REDIS_URL with a db number no other live test run holds (db 0 is left to people)."""
    parts = urlsplit(REDIS_URL)
    for db in range(1, 16):
        name = f"evaluator-test-redis-{parts.hostname}-{parts.port}-db{db}.lock"
        lock = (Path(tempfile.gettempdir()) / name).open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:  # the kernel releases the lock when this process ends, however it ends
            yield urlunsplit(parts._replace(path=f"/{db}"))
        finally:
            lock.close()
        return
    pytest.fail("every Redis db 1-15 is leased by another test run on this machine")


@pytest.fixture
def redis_url(leased_redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(leased_redis_url)
    try:
        client.ping()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"tests need a real Redis at {leased_redis_url}: {exc}")
    client.flushdb()
    yield leased_redis_url
    client.flushdb()
    client.close()


# Test files that exercise the migrations themselves: their `postgres_url` schema is empty,
# so Alembic runs for real there (every other test gets the replayed head, below).
MIGRATION_TEST_FILES = frozenset({"test_migrations.py", "test_partitions.py"})


def _in_schema(schema: str) -> str:
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"


def _dump_schema(schema: str) -> str | None:
    """`schema`'s DDL and rows as SQL (pg_dump); None when pg_dump is missing or fails
    (e.g. older than the server)."""
    url = make_url(POSTGRES_URL)
    argv = ["pg_dump", "--schema", schema, "--inserts", "--no-owner", "--no-privileges"]
    argv += ["--host", url.host or "localhost", "--port", str(url.port or 5432)]
    argv += ["--username", url.username or "postgres", "--dbname", url.database or "postgres"]
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError:
        return None
    if done.returncode != 0:
        return None
    # pg_dump >= 15.14 brackets its output in psql meta-commands (\restrict): not SQL.
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("\\"))


class MigratedSchema:
    """A schema migrated to the Alembic head once per session, as SQL that re-creates it
    under another name in one round trip: ~900 DDL statements run server-side, 0.7 s
    against 1.15 s for the 144 migration statements (0006_partitions reads the catalogue
    between its steps) each PostgreSQL test used to run (medians, load 5; docs/development.md)."""

    def __init__(self, name: str, sql: str) -> None:
        self.name, self.sql = name, sql

    def create(self, admin: Any, schema: str) -> None:
        with admin.begin() as conn:  # one transaction: a failure leaves no half schema
            conn.exec_driver_sql(self.sql.replace(self.name, schema))


@pytest.fixture(scope="session")
def migrated_schema() -> Iterator[MigratedSchema | None]:
    """The session's migrated schema as SQL; None without a usable pg_dump or with
    EVALUATOR_TEST_MIGRATE_EACH=1 (then each test migrates its own empty schema in Store)."""
    if os.environ.get("EVALUATOR_TEST_MIGRATE_EACH") == "1":
        yield None
        return
    name = f"tpl_{uuid.uuid4().hex[:12]}"  # unique: other runs share the server
    admin = create_engine(POSTGRES_URL, poolclass=NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"tests need PostgreSQL at {POSTGRES_URL}: {exc}")
    check = f"chk_{uuid.uuid4().hex[:12]}"
    try:
        engine = make_engine(_in_schema(name))
        upgrade(engine)
        engine.dispose()
        sql = _dump_schema(name)
        template = None if sql is None else MigratedSchema(name, sql)
        if template is not None:
            # The replay must be the migrated schema exactly, as pg_dump sees it; else
            # every test would run on a schema the migrations never made.
            template.create(admin, check)
            replayed = _dump_schema(check)
            if replayed is None or replayed.replace(check, name) != sql:
                pytest.fail(f"replaying pg_dump of {name} does not re-create it")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{check}" CASCADE'))
    admin.dispose()
    yield template


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh schema per test on the real PostgreSQL server, already at the Alembic head
    (the session's migrated schema, replayed); empty in MIGRATION_TEST_FILES."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, poolclass=NullPool)
    template = None
    if request.path.name not in MIGRATION_TEST_FILES:
        template = request.getfixturevalue("migrated_schema")
    try:
        if template is not None:
            template.create(admin, schema)
        else:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"tests need PostgreSQL at {POSTGRES_URL}: {exc}")
    yield _in_schema(schema)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database, once on SQLite and once on PostgreSQL (the test runs on each)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A Store on `db_url`'s database (SQLite, then PostgreSQL)."""
    s = Store(db_url)
    yield s
    s.close()


def write_rubric(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(body)
    return path


TONE_RUBRIC = """
name = "tone"
version = "1"
scorer = "llm_rubric"
pass_threshold = 0.75
[sampling]
rate = 1.0
[scale]
min = 1
max = 5
[llm_rubric]
criteria = "Is the answer polite and direct?"
steps = ["Read the answer.", "Score it."]
inputs = ["question", "answer"]
"""


def make_settings(tmp_path: Path, redis_url: str, **sections: dict[str, Any]) -> Settings:
    """Settings isolated per test: own SQLite file, own key prefix and queue."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    base: dict[str, dict[str, Any]] = {
        "redis": {"url": redis_url, "key_prefix": prefix, "queue_name": f"{prefix}:queue"},
        "database": {"url": f"sqlite:///{tmp_path / 'evals.db'}"},
        "worker": {"trace_not_found_tries": 2, "trace_not_found_delay_s": 0.0},
        "rubrics": {"dir": str(tmp_path / "rubrics")},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    if base.get("judge", {}).get("base_url") == JUDGE_URL:  # respx's, see above
        base["judge"].setdefault("http_transport", "httpx")
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(_to_toml(base))
    return load_settings(settings_file, environ={})


def _to_toml(tree: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in tree.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def shipped_rubrics(tmp_path: Path) -> Path:
    target = tmp_path / "rubrics"
    shutil.copytree(SHIPPED_RUBRICS_DIR, target)
    return target


def chat_completion(
    content: str | None,
    *,
    prompt_tokens: int = 120,
    completion_tokens: int = 30,
    finish_reason: str = "stop",
    refusal: str | None = None,
) -> dict[str, Any]:
    """The body of an OpenAI-compatible /chat/completions reply."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "judge-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def rag_trace(
    trace_id: str,
    *,
    answer: str = "Paris is the capital of France.",
    question: str = "What is the capital of France?",
    documents: list[str] | None = None,
    prompt_version: str = "v1",
    status: str = "ok",
    **attributes: Any,
) -> dict[str, Any]:
    documents = ["France's capital is Paris."] if documents is None else documents
    return {
        "trace_id": trace_id,
        "attributes": {
            "prompt.version": prompt_version,
            "feature": "qa",
            "tenant": "acme",
            **attributes,
        },
        "spans": [
            {
                "span_id": f"{trace_id}-r",
                "name": "retrieve",
                "status": "ok",
                "start_time": "2026-01-01T00:00:00Z",
                "end_time": "2026-01-01T00:00:00.100Z",
                "attributes": {
                    "gen_ai.operation.name": "retrieval",
                    "gen_ai.retrieval.documents": [
                        {"id": f"d{i}", "content": d} for i, d in enumerate(documents)
                    ],
                },
            },
            {
                "span_id": f"{trace_id}-c",
                "name": "chat",
                "status": status,
                "start_time": "2026-01-01T00:00:00.100Z",
                "end_time": "2026-01-01T00:00:01.100Z",
                "attributes": {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.input.messages": [
                        {"role": "user", "parts": [{"type": "text", "content": question}]}
                    ],
                    "gen_ai.output.messages": [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": answer}],
                            "finish_reason": "stop",
                        }
                    ],
                },
            },
        ],
    }


@pytest.fixture
def generator_url() -> Iterator[str]:
    from tests.loopback_generator import Generator

    Generator.calls = 0
    Generator.max_tokens = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Generator)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


async def queued_members(client: Any, queue: str) -> list[list[Any]]:
    """The traces in a queue's arq jobs, whether a job carries one or a batch: each
    [trace_id, signals, kind, ...] as the job function receives it."""
    from evaluator.intake.jobs import EVALUATE_BATCH_JOB
    from evaluator.intake.serialization import deserialize

    out: list[list[Any]] = []
    for job_id in await client.zrange(queue, 0, -1):
        job = deserialize(await client.get(f"arq:job:{job_id.decode()}"))
        out.extend(job["a"][0] if job["f"] == EVALUATE_BATCH_JOB else [job["a"]])
    return out
