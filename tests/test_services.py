"""The private-services harness itself, against real redis-server and PostgreSQL binaries:
the semantics fault-injection tests will rely on (what survives which kind of stop)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from tests import services
from tests.services import (
    PostgresCluster,
    PostgresUnavailable,
    RedisServer,
    ServiceError,
    free_port,
    private_postgres,
    private_redis,
    private_redis_aof,
)

# Imported for pytest to collect as fixtures; named here so linters see them used.
__all__ = ["private_postgres", "private_redis", "private_redis_aof"]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# -- Redis ---------------------------------------------------------------------------------


def test_redis_aof_restart_keeps_a_key_written_before_sigterm(
    private_redis_aof: RedisServer,
) -> None:
    server = private_redis_aof
    port = server.port
    client = server.client()
    client.set("survivor", "yes")
    client.close()
    assert server.stop(signal.SIGTERM) == 0  # a clean shutdown fsyncs the AOF
    assert not _listening(port or 0)
    server.start()
    assert server.port == port  # same address: clients only need to reconnect
    client = server.client()
    assert client.get("survivor") == b"yes"
    client.close()


def test_redis_without_persistence_loses_the_key_after_sigkill(
    private_redis: RedisServer,
) -> None:
    server = private_redis
    client = server.client()
    client.set("doomed", "yes")
    server.stop(signal.SIGKILL)
    # The same client object sees the outage, as app code with a pool would.
    with pytest.raises(redis.ConnectionError):
        client.get("doomed")
    server.start()
    assert client.get("doomed") is None  # the pool reconnects; the data is gone
    client.close()


def test_redis_restart_keeps_port_and_dir(private_redis_aof: RedisServer) -> None:
    before = (private_redis_aof.port, private_redis_aof.dir, private_redis_aof.url)
    private_redis_aof.restart(signal.SIGKILL)
    assert (private_redis_aof.port, private_redis_aof.dir, private_redis_aof.url) == before
    assert private_redis_aof.client().ping()


def test_redis_close_leaves_no_process_or_dir() -> None:
    with RedisServer() as server:
        assert server.proc is not None
        pid, port, directory = server.proc.pid, server.port, server.dir
        assert directory is not None and directory.is_dir()
    assert not services._pid_alive(pid)
    assert not _listening(port or 0)
    assert not directory.exists()
    assert server not in services._LIVE


def test_redis_failed_start_cleans_up(tmp_path: Path) -> None:
    # A "server" that exits at once: start must report it and leave nothing behind.
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Fatal: broken on purpose' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = RedisServer(binary=str(fake))
    with pytest.raises(ServiceError, match="exited with 3"), server:
        pass
    assert server.dir is None and server not in services._LIVE


# -- PostgreSQL ----------------------------------------------------------------------------


def test_postgres_immediate_stop_refuses_connections_then_recovers_committed_rows(
    private_postgres: PostgresCluster,
) -> None:
    pg = private_postgres
    assert pg.url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/test"
    with pg.connect() as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO kept VALUES (1, 'written before the crash')")
        conn.commit()
        pg.stop("immediate")  # a crash: no checkpoint, WAL replay on the next start
        # The open connection is dead too.
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match=r"(?i)refused"):
        psycopg.connect(pg.dsn, connect_timeout=2)
    port = pg.port
    pg.start()
    assert pg.port == port
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("SELECT id, note FROM kept").fetchall() == [
            (1, "written before the crash")
        ]


def test_postgres_fixture_gives_a_running_cluster_and_an_empty_database(
    private_postgres: PostgresCluster, request: pytest.FixtureRequest
) -> None:
    with private_postgres.connect() as conn:
        conn.execute("CREATE TABLE leftover (id int)")
        conn.commit()
    private_postgres.stop("fast")
    # What the fixture does for the next test: same cluster, running, `test` recreated.
    again = services._provide_postgres(request)
    assert again is private_postgres and again.started
    with again.connect() as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'leftover'")
        assert tables.fetchone() == (0,)


def test_postgres_fixture_replaces_a_cluster_killed_behind_its_back(
    private_postgres: PostgresCluster, request: pytest.FixtureRequest
) -> None:
    old_dir = private_postgres.dir
    pid = int((private_postgres.datadir / "postmaster.pid").read_text().split()[0])
    services._terminate(pid)  # not via pg_ctl: the object still thinks it is running
    assert private_postgres.started
    replacement = services._provide_postgres(request)  # what the next test's fixture does
    assert replacement.dir != old_dir and old_dir is not None and not old_dir.exists()
    with replacement.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_missing_postgres_binaries_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALUATOR_PG_BINDIR", "/nonexistent/bin")
    with pytest.raises(PostgresUnavailable, match="EVALUATOR_SKIP_PRIVATE_PG=1"):
        services.find_pg_bindir()


@pytest.mark.parametrize(
    ("skip_env", "outcome"), [("", pytest.fail.Exception), ("1", pytest.skip.Exception)]
)
def test_fixture_fails_without_binaries_unless_told_to_skip(
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    skip_env: str,
    outcome: type[BaseException],
) -> None:
    monkeypatch.setattr(services, "_SESSION_PG", None)  # restored after the test
    monkeypatch.setenv("EVALUATOR_PG_BINDIR", "/nonexistent/bin")
    monkeypatch.setenv("EVALUATOR_SKIP_PRIVATE_PG", skip_env)
    with pytest.raises(outcome, match="no initdb/pg_ctl"):
        services._session_cluster(request)


# -- Side by side --------------------------------------------------------------------------


def test_two_instances_run_side_by_side(private_postgres: PostgresCluster) -> None:
    with RedisServer() as one, RedisServer() as two, PostgresCluster() as other_pg:
        assert one.port != two.port and one.dir != two.dir
        one.client().set("who", "one")
        two.client().set("who", "two")
        assert one.client().get("who") == b"one" and two.client().get("who") == b"two"
        # Killing one leaves the other alone.
        one.stop(signal.SIGKILL)
        assert two.client().get("who") == b"two"

        assert other_pg.port != private_postgres.port and other_pg.dir != private_postgres.dir
        for pg, name in ((private_postgres, "fixture"), (other_pg, "second")):
            with pg.connect() as conn:
                conn.execute("CREATE TABLE who (name text)")
                conn.execute("INSERT INTO who VALUES (%s)", (name,))
        other_pg.stop("immediate")
        with private_postgres.connect() as conn:
            assert conn.execute("SELECT name FROM who").fetchall() == [("fixture",)]
        other_dir = other_pg.dir
    assert other_dir is not None and not other_dir.exists()


ORPHAN_MAKER = """
import os
from tests.services import PostgresCluster, RedisServer
redis, pg = RedisServer(), PostgresCluster()
redis.start()
pg.start()
print(redis.proc.pid, pg.dir, flush=True)
os._exit(0)  # what pytest-timeout's thread method does: no atexit, no teardown
"""


def test_servers_of_a_dead_test_process_are_swept_at_the_next_start() -> None:
    root = Path(__file__).parent.parent
    made = subprocess.run(
        [sys.executable, "-c", ORPHAN_MAKER], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert made.returncode == 0, made.stderr
    redis_pid, pg_dir = made.stdout.split()
    postmaster = int((Path(pg_dir) / "data" / "postmaster.pid").read_text().split()[0])
    assert services._pid_alive(int(redis_pid)) and services._pid_alive(postmaster)
    with RedisServer():  # any start sweeps
        pass
    assert not services._pid_alive(int(redis_pid)) and not services._pid_alive(postmaster)
    assert not Path(pg_dir).exists()
