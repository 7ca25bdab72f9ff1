"""Every transport of the judge against a real HTTP server on 127.0.0.1, not respx: the
shipped `judge.http_transport = "aiohttp"` (a bare aiohttp session, judges.llm.aio), `httpx`
(the SDK's own client) and the SDK over its aiohttp client (`sdk_http_client("aiohttp")`,
what the generator uses): success with usage, a stalled reply cut by the timeout, a 429 whose
Retry-After is honoured, a 500 retried, a body that is not a completion."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import BaseModel

from judges.errors import JudgeOutputError, JudgeTransientError
from judges.llm.client import JudgeClient, sdk_http_client

from .conftest import chat_completion

MESSAGES = [{"role": "user", "content": "grade this"}]


class Verdict(BaseModel):
    score: int


class ScriptedJudge:
    """Answers POSTs in order from `script`: (status, headers, body, delay_s); the last entry
    repeats. Records each request's JSON body. A delay ends early when the server closes, so
    a stall far longer than the client's timeout costs the test nothing."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes, float]]) -> None:
        self.script = script
        self.closing = threading.Event()
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                judge.bodies.append(json.loads(body))
                judge.paths.append(self.path)
                n = min(len(judge.bodies), len(judge.script)) - 1
                status, headers, reply, delay = judge.script[n]
                if delay:
                    judge.closing.wait(delay)
                try:
                    self.send_response(status)
                    for k, v in {"content-type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


OK = (
    200,
    {},
    json.dumps(chat_completion(json.dumps({"score": 5}), prompt_tokens=21)).encode(),
    0.0,
)


@pytest.fixture(params=["aiohttp", "httpx", "sdk-aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_for(base_url: str, transport: str, **kw: Any) -> JudgeClient:
    if transport == "sdk-aiohttp":
        return JudgeClient(
            base_url=base_url, model="m", http_client=sdk_http_client("aiohttp"), **kw
        )
    return JudgeClient(base_url=base_url, model="m", http_transport=transport, **kw)


@pytest.fixture
def scripted() -> Iterator[list[ScriptedJudge]]:
    servers: list[ScriptedJudge] = []
    yield servers
    for server in servers:
        server.close()


def judge_for(
    scripted: list[ScriptedJudge],
    transport: str,
    script: list[tuple[int, dict[str, str], bytes, float]],
    **kw: Any,
) -> tuple[ScriptedJudge, JudgeClient]:
    server = ScriptedJudge(script)
    scripted.append(server)
    client = client_for(server.url, transport, **kw)
    return server, client


async def test_a_reply_is_parsed_with_its_usage(transport: str, scripted: list) -> None:
    server, client = judge_for(scripted, transport, [OK])
    try:
        reply = await client.complete(MESSAGES, Verdict)
    finally:
        await client.aclose()
    assert reply.parsed.score == 5 and reply.usage.input_tokens == 21
    assert server.bodies[0]["messages"] == MESSAGES


async def test_a_stalled_reply_is_cut_by_the_timeout_and_retried_a_bounded_number_of_times(
    transport: str, scripted: list
) -> None:
    stall = (200, {}, OK[2], 60.0)  # answers only when the test closes the server
    server, client = judge_for(scripted, transport, [stall], timeout_s=0.3, max_retries=1)
    started = time.monotonic()
    try:
        with pytest.raises(JudgeTransientError, match="timed out") as caught:
            await client.complete(MESSAGES, Verdict)
    finally:
        await client.aclose()
    assert "gave up after 2 attempts" in str(caught.value)
    assert client.concurrency.decreases["timeout"] >= 1  # a timeout is a capacity signal
    assert len(server.bodies) == 2
    # Neither attempt waited for the stalled reply (it would have come after 60 s and parsed).
    assert time.monotonic() - started < 30


async def test_a_429_retry_after_is_honoured_then_the_call_succeeds(
    transport: str, scripted: list
) -> None:
    limited = (429, {"retry-after": "0.4"}, b'{"error": {"message": "slow down"}}', 0.0)
    server, client = judge_for(scripted, transport, [limited, OK])
    started = time.monotonic()
    try:
        reply = await client.complete(MESSAGES, Verdict)
    finally:
        await client.aclose()
    assert reply.parsed.score == 5 and len(server.bodies) == 2
    assert time.monotonic() - started >= 0.4


async def test_a_500_is_retried(transport: str, scripted: list) -> None:
    broken = (500, {}, b'{"error": {"message": "boom"}}', 0.0)
    server, client = judge_for(scripted, transport, [broken, OK])
    try:
        reply = await client.complete(MESSAGES, Verdict)
    finally:
        await client.aclose()
    assert reply.parsed.score == 5 and len(server.bodies) == 2


async def test_an_html_page_with_200_is_an_output_error(transport: str, scripted: list) -> None:
    page = (200, {"content-type": "text/html"}, b"<html>proxy login</html>", 0.0)
    server, client = judge_for(scripted, transport, [page])
    try:
        with pytest.raises(JudgeOutputError, match="not a chat completion") as caught:
            await client.complete(MESSAGES, Verdict)
    finally:
        await client.aclose()
    assert caught.value.raw_output == "<html>proxy login</html>"
    assert len(server.bodies) == 1


async def test_http_proxy_from_the_environment_is_used(
    transport: str, scripted: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ScriptedJudge([OK])  # a forward proxy sees the absolute URL in the request line
    scripted.append(proxy)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/v1"))
    client = client_for("http://judge.invalid/v1", transport)
    try:
        reply = await client.complete(MESSAGES, Verdict)
    finally:
        await client.aclose()
    assert reply.parsed.score == 5
    assert proxy.paths == ["http://judge.invalid/v1/chat/completions"]


def test_an_unknown_transport_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'curl'"):
        sdk_http_client("curl")
    with pytest.raises(ValueError, match="'curl'"):
        JudgeClient(base_url="http://127.0.0.1:9/v1", model="m", http_transport="curl")


async def test_the_key_and_errors_go_through_the_bare_session(scripted: list) -> None:
    """The aiohttp path sends the bearer key; a 400's body is quoted in a JudgeError (not
    retried); a refused connection is "unreachable" and retried a bounded number of times."""
    from judges.errors import JudgeError

    bad = (400, {}, b'{"error": {"message": "unknown model m"}}', 0.0)
    seen: list[str] = []
    server, client = judge_for(scripted, "aiohttp", [bad], api_key="sk-test")
    original = server.server.RequestHandlerClass.do_POST

    def capture(handler: Any) -> None:
        seen.append(handler.headers.get("authorization"))
        original(handler)

    server.server.RequestHandlerClass.do_POST = capture  # type: ignore[method-assign]
    try:
        with pytest.raises(JudgeError, match=r"HTTP 400.*unknown model m"):
            await client.complete(MESSAGES, Verdict)
    finally:
        await client.aclose()
    assert seen == ["Bearer sk-test"] and len(server.bodies) == 1
    dead = JudgeClient(
        base_url="http://127.0.0.1:9/v1", model="m", http_transport="aiohttp", max_retries=1
    )
    try:
        with pytest.raises(JudgeTransientError, match="unreachable"):
            await dead.complete(MESSAGES, Verdict)
    finally:
        await dead.aclose()
