"""`evaluator serve` against a network: raw sockets for what HTTP clients would never send
(bad Content-Length, slowloris, too many connections), tokens, Host checks, bad query
parameters, and GETs that write nothing."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select
from sqlmodel import Session

from evaluator.analytics.rollups import refresh_rollups
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.store.models import EvalRecord, EvalRollup
from evaluator.store.store import Store
from evaluator.web.guards import host_allowed
from evaluator.web.server import ServerOptions, start_in_thread

from .polling import wait_until

NOW = datetime.now(UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'net.db'}")
    yield s
    s.close()


def serve(store: Store, redis_url: str, **options: object) -> Iterator[tuple[str, int]]:
    client = redis.Redis.from_url(redis_url)
    assembler = SpanAssembler(store, client, key_prefix="net")
    server = start_in_thread(store, assembler=assembler, options=ServerOptions(**options))  # type: ignore[arg-type]
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()
    client.close()


@pytest.fixture
def addr(store: Store, redis_url: str) -> Iterator[tuple[str, int]]:
    yield from serve(store, redis_url, read_timeout_s=0.5, request_timeout_s=1.5,
                     max_connections=3, max_body_bytes=1000)  # fmt: skip


PATIENT_S = 30.0  # a server whose timeouts no test waits for: what it answers, it answers at once


@pytest.fixture
def patient_addr(store: Store, redis_url: str) -> Iterator[tuple[str, int]]:
    yield from serve(store, redis_url, read_timeout_s=PATIENT_S, request_timeout_s=2 * PATIENT_S,
                     max_connections=3, max_body_bytes=1000)  # fmt: skip


def raw(addr: tuple[str, int], request: bytes, wait: float = 5.0) -> str:
    with socket.create_connection(addr, timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("latin-1")


def post(length_headers: str, body: bytes = b"") -> bytes:
    head = "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return (head + length_headers + "\r\n").encode() + body


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Content-Length: -1\r\n", "400"),
        ("Content-Length: abc\r\n", "400"),
        ("Content-Length: 1e3\r\n", "400"),
        ("Content-Length: 2\r\nContent-Length: 2\r\n", "400"),
        ("", "411"),
        ("Content-Length: 999999999\r\n", "413"),  # refused before a byte is read
        ("Transfer-Encoding: gzip\r\n", "400"),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "400"),
    ],
)
def test_content_length_is_checked_before_reading(
    patient_addr: tuple[str, int], headers: str, status: str
) -> None:
    started = time.monotonic()
    reply = raw(patient_addr, post(headers), wait=PATIENT_S)
    assert reply.startswith(f"HTTP/1.0 {status}"), reply
    # Answered before any body was read: a reply that waited for one would come after the
    # 30 s read timeout (half of it is a bound no loaded machine reaches for one reply).
    assert time.monotonic() - started < PATIENT_S / 2


def test_chunked_body_is_read_and_limited(addr: tuple[str, int]) -> None:
    ok = post("Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n")
    assert raw(addr, ok).startswith("HTTP/1.0 200")
    big = post("Transfer-Encoding: chunked\r\n", b"3e8\r\n" + b"x" * 1000 + b"\r\n1\r\nx\r\n")
    assert raw(addr, big).startswith("HTTP/1.0 413")


def test_slowloris_is_cut_off(store: Store, redis_url: str) -> None:
    """A client never silent for the read timeout (10 s) is still cut at the request timeout
    (1.5 s): the connection closes long before a silence could have closed it."""
    for addr in serve(store, redis_url, read_timeout_s=10.0, request_timeout_s=1.5):
        started = time.monotonic()
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(b"GET /api/rubrics HTTP/1.1\r\n")
            closed = False
            while time.monotonic() - started < 30:  # a header line every 0.2 s (its pace)
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
        assert closed, "the trickling client was never cut off"


def test_connections_are_bounded(patient_addr: tuple[str, int]) -> None:
    get = b"GET /api/rubrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    # The server accepts in connection order and the idle three hold their slots (its read
    # timeout is 30 s), so the fourth is refused however slowly the server runs.
    idle = [socket.create_connection(patient_addr) for _ in range(3)]
    try:
        reply = raw(patient_addr, get)
        assert reply.startswith("HTTP/1.0 503"), reply
    finally:
        for s in idle:
            s.close()
    # The slots come back once the server has seen the three close.
    wait_until(lambda: raw(patient_addr, get).startswith("HTTP/1.0 200"), "a free slot again")


def test_token_and_host(store: Store, redis_url: str) -> None:
    for host, port in serve(store, redis_url, token="s3cret"):
        base = f"http://{host}:{port}"
        assert httpx.get(f"{base}/api/rubrics").status_code == 401
        wrong = {"Authorization": "Bearer s3cret-not"}
        assert httpx.get(f"{base}/api/rubrics", headers=wrong).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{base}/api/rubrics", headers=good).status_code == 200
        assert httpx.post(f"{base}/v1/traces", content=b"{}").status_code == 401
        assert httpx.get(f"{base}/").status_code == 200  # the page holds no data
        evil = httpx.get(f"{base}/", headers={"Host": "evil.example"})
        assert evil.status_code == 403
        local = httpx.get(f"{base}/api/rubrics", headers={**good, "Host": f"localhost:{port}"})
        assert local.status_code == 200
    assert host_allowed("[::1]:8700", (), True)
    assert not host_allowed("127.0.0.1.evil.example", (), True)
    assert host_allowed("evals.internal:8700", ("evals.internal",), False)
    assert host_allowed("anything", (), False)


@pytest.mark.parametrize(
    "query",
    [
        "/api/worst?k=abc", "/api/worst?rubric=f&start=x&end=y",
        "/api/worst?rubric=f&start=2026-01-01&end=2026-01-02&k=0",
        "/api/worst?rubric=f&start=2026-01-01&end=2026-01-02&by=nope",
        "/api/trends?rubric=f&since=abc", "/api/trends?rubric=f&bucket=99999999999d",
        "/api/trends?rubric=f&rubric=g", "/api/trends?rubric=f%00", "/api/trends?nope=1",
        "/api/alerts?open=maybe", "/api/rubrics?x=1", "/api/overview?x=1",
    ],
)  # fmt: skip
def test_bad_query_parameters_are_400_json(addr: tuple[str, int], query: str) -> None:
    reply = httpx.get(f"http://{addr[0]}:{addr[1]}{query}")
    assert reply.status_code == 400 and reply.json()["error"], reply.text


def test_gets_write_nothing_and_read_unrolled_hours(store: Store, addr: tuple[str, int]) -> None:
    with Session(store.engine) as session:
        for hours in (30, 5, 0):  # closed hours not rolled up yet, and the open hour
            for i in range(4):
                session.add(EvalRecord(trace_id=f"t{hours}-{i}", rubric="faith", rubric_version="1",
                                       scorer="s", status="ok", score=0.5 + i / 10, passed=i > 1,
                                       prompt_version="v1", judge_cost_usd=0.01,
                                       created_at=NOW - timedelta(hours=hours, minutes=i)))  # fmt: skip
        session.commit()
    base = f"http://{addr[0]}:{addr[1]}"

    def rollups() -> int:
        with Session(store.engine) as session:
            return int(session.exec(select(func.count()).select_from(EvalRollup)).one()[0])

    assert httpx.get(f"{base}/api/rubrics").json() == {"rubrics": ["faith"]}
    doc = httpx.get(f"{base}/api/trends", params={"rubric": "faith", "bucket": "1h"}).json()
    assert sum(b["count"] for b in doc["groups"][0]["buckets"]) == 12
    over = httpx.get(f"{base}/api/overview").json()["rubrics"]
    assert over[0]["versions"][0]["count"] == 8 and over[0]["open_alerts"] == 0
    assert over[0]["judge_cost_usd_per_day"] == pytest.approx(0.08)
    assert rollups() == 0  # the GETs wrote nothing
    refresh_rollups(store)  # the cron's job; the document is the same after it
    again = httpx.get(f"{base}/api/trends", params={"rubric": "faith", "bucket": "1h"}).json()
    assert rollups() > 0 and again["groups"] == doc["groups"]
