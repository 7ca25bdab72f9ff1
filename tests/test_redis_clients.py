"""The Redis client factory: URL forms, Sentinel settings, and a real TLS server with an ACL
user (a private redis-server with a throw-away certificate made by openssl)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from arq.connections import create_pool

from evaluator.config.redis_clients import (
    arq_redis_settings,
    async_redis,
    describe,
    sentinel_hosts,
    sync_redis,
)
from evaluator.config.settings import RedisSettings
from evaluator.errors import SettingsError
from tests.services import HOST, REDIS_SERVER, free_port

PASSWORD = "p@ss:w/rd"  # characters that must be %-escaped in a URL
ESCAPED = "p%40ss%3Aw%2Frd"


def test_arq_settings_keep_user_password_db_and_tls() -> None:
    arq = arq_redis_settings(f"rediss://alice:{ESCAPED}@cache.internal:6380/3")
    assert (arq.host, arq.port, arq.database) == ("cache.internal", 6380, 3)
    assert (arq.username, arq.password, arq.ssl) == ("alice", PASSWORD, True)
    plain = arq_redis_settings("redis://127.0.0.1:6379/0")
    assert (plain.ssl, plain.username, plain.password) == (False, None, None)
    assert arq_redis_settings("unix:///run/redis.sock?db=2").unix_socket_path == "/run/redis.sock"


def test_sentinel_settings() -> None:
    section = RedisSettings(
        url="rediss://:secret@ignored:1/4",
        sentinels=("10.0.0.1:26379", "[::1]:26380"),
        sentinel_master="evals",
    )
    assert sentinel_hosts(section) == [("10.0.0.1", 26379), ("::1", 26380)]
    arq = arq_redis_settings(section)
    assert arq.sentinel and arq.sentinel_master == "evals" and arq.host == sentinel_hosts(section)
    assert (arq.database, arq.password, arq.ssl) == (4, "secret", True)
    assert "evals" in describe(section) and "secret" not in describe(section)
    with pytest.raises(ValueError, match="host:port"):
        RedisSettings(sentinels=("10.0.0.1",))


def test_a_sentinel_password_is_refused_for_arq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTINEL_PW", "x")
    section = RedisSettings(sentinels=("127.0.0.1:26379",), sentinel_password_env="SENTINEL_PW")
    with pytest.raises(SettingsError, match="cannot authenticate to sentinels"):
        arq_redis_settings(section)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(
        f'port 0\ntls-port {port}\nbind {HOST}\ndir {tmp_path}\nsave ""\n'
        f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {cert}\n"
        "tls-auth-clients no\n"
        f"user alice on >{PASSWORD} ~* &* +@all\nuser default off\n"
    )
    proc = subprocess.Popen(
        [REDIS_SERVER, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = redis.Redis(
                    host=HOST, port=port, ssl=True, ssl_ca_certs=str(cert),
                    username="alice", password=PASSWORD,
                )  # fmt: skip
                try:
                    client.ping()
                finally:
                    client.close()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("TLS redis-server did not start (built without TLS?)")
                time.sleep(0.05)
        yield port, cert
    finally:
        proc.kill()
        proc.wait(10)


async def test_tls_and_acl_user_through_every_client(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis
    url = f"rediss://alice:{ESCAPED}@{HOST}:{port}/0?ssl_ca_certs={cert}"
    sync = sync_redis(url)
    try:
        assert sync.set("k", "sync")
    finally:
        sync.close()
    aclient = async_redis(url)
    try:
        assert await aclient.get("k") == b"sync"
    finally:
        await aclient.aclose()
    pool = await create_pool(arq_redis_settings(url))
    try:
        assert await pool.get("k") == b"sync"
    finally:
        await pool.aclose()
    anonymous = redis.Redis(host=HOST, port=port, ssl=True, ssl_ca_certs=str(cert))
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        anonymous.close()
