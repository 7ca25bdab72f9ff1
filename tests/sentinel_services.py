"""A throw-away Redis Sentinel deployment: one master, one replica, three sentinels.

Every process runs on a free loopback port in a temp dir of its own and belongs to the test
that started it, so a test may SIGKILL the master and watch the sentinels promote the
replica. Like tests/services.py (whose helpers this reuses), free of `evaluator` imports.

    with SentinelDeployment() as ha:
        ha.sentinels           # ["127.0.0.1:port", ...] for redis.sentinels
        ha.kill_master()       # SIGKILL, no persistence: the replica is all that is left
        ha.wait_for_failover() # seconds until the sentinels name the replica as master
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.services import (
    _LIVE,
    HOST,
    REDIS_SERVER,
    Service,
    ServiceError,
    _make_service_dir,
    _tail,
    free_port,
)

MASTER_NAME = "mymaster"


class _Node:
    """One redis-server (data node or sentinel) started from a config file we write."""

    def __init__(self, directory: Path, name: str, lines: list[str], *, sentinel: bool) -> None:
        self.dir = directory
        self.name = name
        self.port = free_port()
        self.sentinel = sentinel
        self.conf = directory / f"{name}.conf"
        self.log = directory / f"{name}.log"
        self.conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    f"bind {HOST}",
                    "daemonize no",
                    f"dir {directory}",
                    f"logfile {self.log}",
                    'save ""',
                    "appendonly no",
                    *lines,
                ]
            )
            + "\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        argv = [REDIS_SERVER, str(self.conf), *(["--sentinel"] if self.sentinel else [])]
        # Own session, as in services.py: Ctrl-C on pytest must not take it down first.
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, cwd=self.dir,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ServiceError(f"{self.name} exited:\n{_tail(self.log)}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self.name} did not answer PING:\n{_tail(self.log)}")
                time.sleep(0.01)
        finally:
            client.close()

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=1, socket_connect_timeout=1)


class SentinelDeployment(Service):
    """Master + replica + `sentinels` sentinels (quorum 2), failover within seconds."""

    def __init__(self, *, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.n_sentinels = sentinels
        self.down_after_ms = down_after_ms
        self.dir: Path | None = None
        self.master: _Node | None = None
        self.replica: _Node | None = None
        self.sentinel_nodes: list[_Node] = []

    @property
    def sentinels(self) -> list[str]:
        return [s.address for s in self.sentinel_nodes]

    def start(self) -> None:
        self.dir = _make_service_dir("evaluator-sentinel-")
        _LIVE.append(self)
        self.master = _Node(self.dir, "master", [], sentinel=False)
        self.master.start()
        self.replica = _Node(
            self.dir, "replica", [f"replicaof {HOST} {self.master.port}"], sentinel=False
        )
        self.replica.start()
        self._wait(lambda: self._link_up(), "the replica to sync")
        for i in range(self.n_sentinels):
            node = _Node(
                self.dir,
                f"sentinel{i}",
                [
                    f"sentinel monitor {MASTER_NAME} {HOST} {self.master.port} 2",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                    f"sentinel failover-timeout {MASTER_NAME} 10000",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                ],
                sentinel=True,
            )
            node.start()
            self.sentinel_nodes.append(node)
        # Sentinels find the replica and each other through the master's hello channel.
        self._wait(lambda: self._sentinels_agree(replicas=1), "the sentinels to see everyone")

    def _link_up(self) -> bool:
        assert self.replica is not None
        client = self.replica.client()
        try:
            return bool(client.info("replication").get("master_link_status") == "up")
        finally:
            client.close()

    def _sentinels_agree(self, replicas: int) -> bool:
        for node in self.sentinel_nodes:
            client = node.client()
            try:
                info = client.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if info.get("num-slaves", 0) < replicas:
                return False
            if info.get("num-other-sentinels", 0) < self.n_sentinels - 1:
                return False
        return True

    def master_address(self) -> tuple[str, int] | None:
        for node in self.sentinel_nodes:
            client = node.client()
            try:
                host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return (host.decode() if isinstance(host, bytes) else str(host)), int(port)
            except (redis.RedisError, TypeError):
                continue
            finally:
                client.close()
        return None

    def _all_name(self, target: tuple[str, int]) -> bool:
        # Every sentinel, with the new master not flagged down: what a client asks first.
        for node in self.sentinel_nodes:
            client = node.client()
            try:
                info = client.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if (info.get("ip"), info.get("port")) != target:
                return False
            if info.get("is_sdown") or info.get("is_odown"):
                return False
        return True

    def kill_master(self) -> None:
        assert self.master is not None
        self.master.kill(signal.SIGKILL)

    def wait_for_failover(self, timeout_s: float = 30.0) -> float:
        """Seconds until a sentinel names the replica as master and it accepts writes."""
        assert self.replica is not None
        t0 = time.monotonic()
        target = (HOST, self.replica.port)
        self._wait(lambda: self._all_name(target) and self._writable(), "failover", timeout_s)
        return time.monotonic() - t0

    def _writable(self) -> bool:
        assert self.replica is not None
        client = self.replica.client()
        try:
            return bool(client.info("replication").get("role") == "master")
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _wait(self, check: object, what: str, timeout_s: float = 20.0) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {n.name}\n{_tail(n.log, 8)}"
                    for n in [self.master, self.replica, *self.sentinel_nodes]
                    if n is not None
                )
                raise ServiceError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.05)

    def close(self) -> None:
        for node in [*self.sentinel_nodes, self.replica, self.master]:
            if node is not None:
                node.kill(signal.SIGKILL)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self in _LIVE:
            _LIVE.remove(self)
