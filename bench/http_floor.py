"""What one judge request costs the calling process in CPU, by HTTP client (issue 7 §3).

    python -m bench.http_floor                      # 2,000 requests per client, 5 rounds
    python -m bench.http_floor --requests 4000 --reps 3 --concurrency 16

The worker's CPU per evaluation has a floor: two judge requests, each paid in full by the
client library that sends it. This measures that floor in one process against the loopback
judge server (bench/judge_server.py in its own process, latency 0 ms), interleaving the
clients round by round:

- `openai SDK create`: `AsyncOpenAI.chat.completions.create` (what JudgeClient used first);
- `openai SDK post (raw)`: the same client's `post(..., cast_to=httpx.Response)`, which skips
  the SDK's request-body transform and response model;
- `httpx post`: a bare `httpx.AsyncClient.post` of pre-encoded JSON;
- `openai SDK post (raw), aiohttp transport`: the same through `DefaultAioHttpClient`;
- `httpx post, aiohttp transport`: `DefaultAioHttpClient.post` without the SDK, and
  `aiohttp ClientSession post`: aiohttp alone;
- `JudgeClient.complete`: our client end to end (schema, validation, usage) on the bare
  aiohttp session the worker ships with (`judge.http_transport = "aiohttp"`,
  judges/llm/aio.py), through the SDK over aiohttp (the shipped path before 2026-11-30) and
  through the SDK's httpx (`"httpx"`);
- a raw asyncio socket speaking HTTP/1.1 keep-alive: the floor, not a client.

CPU = `time.process_time()` over the requests of one round (all threads of this process),
divided by the requests; the judge server's CPU is its own process and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from openai import AsyncOpenAI, DefaultAioHttpClient
from pydantic import BaseModel

from judges.llm.client import JudgeClient, sdk_http_client

from .multiworker import Judge
from .report import Summary, command_line, fmt, machine, table


class Verdict(BaseModel):
    verdict: str
    reason: str


SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "Verdict", "schema": Verdict.model_json_schema(), "strict": True},
}
# About the size of a faithfulness prompt: ~2,800 characters of context and answer.
MESSAGES = [
    {"role": "system", "content": "You judge whether an answer is supported. " * 10},
    {"role": "user", "content": "Context: " + "the river floods in spring. " * 90},
]


async def _run(send: Callable[[], Awaitable[object]], n: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await send()

    cpu = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return (time.process_time() - cpu) / n * 1000


async def measure(url: str, n: int, reps: int, concurrency: int) -> dict[str, list[float]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    sdk = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    sdk_aio = AsyncOpenAI(
        base_url=url, api_key="x", max_retries=0, http_client=DefaultAioHttpClient()
    )
    raw = httpx.AsyncClient(base_url=url, limits=limits, headers={"authorization": "Bearer x"})
    raw_aio = DefaultAioHttpClient(base_url=url, headers={"authorization": "Bearer x"})
    session = aiohttp.ClientSession(
        base_url=url.rstrip("/") + "/", headers={"authorization": "Bearer x"}
    )
    judge = JudgeClient(
        base_url=url,
        api_key="x",
        model="judge",
        max_concurrency=concurrency,
        http_transport="aiohttp",
    )
    judge_sdk_aio = JudgeClient(
        base_url=url,
        api_key="x",
        model="judge",
        max_concurrency=concurrency,
        http_client=sdk_http_client("aiohttp"),
    )
    judge_httpx = JudgeClient(base_url=url, api_key="x", model="judge", max_concurrency=concurrency)
    body = {"model": "judge", "messages": MESSAGES, "response_format": SCHEMA, "max_tokens": 300}
    encoded = json.dumps(body).encode()

    async def sdk_create() -> object:
        return await sdk.chat.completions.create(
            model="judge",
            messages=MESSAGES,  # type: ignore[arg-type]
            response_format=SCHEMA,  # type: ignore[arg-type]
            max_tokens=300,
        )

    async def sdk_post() -> object:
        response = await sdk.post("/chat/completions", body=body, cast_to=httpx.Response)
        return response.json()

    async def sdk_post_aiohttp() -> object:
        response = await sdk_aio.post("/chat/completions", body=body, cast_to=httpx.Response)
        return response.json()

    async def httpx_post() -> object:
        response = await raw.post(
            "/chat/completions", content=encoded, headers={"content-type": "application/json"}
        )
        return response.json()

    async def httpx_aiohttp_post() -> object:
        response = await raw_aio.post(
            "/chat/completions", content=encoded, headers={"content-type": "application/json"}
        )
        return response.json()

    async def aiohttp_post() -> object:
        async with session.post(
            "chat/completions", data=encoded, headers={"content-type": "application/json"}
        ) as response:
            return json.loads(await response.read())

    async def judge_complete() -> object:
        return await judge.complete(MESSAGES, Verdict)

    async def judge_complete_sdk_aiohttp() -> object:
        return await judge_sdk_aio.complete(MESSAGES, Verdict)

    async def judge_complete_httpx() -> object:
        return await judge_httpx.complete(MESSAGES, Verdict)

    # The floor under any client: HTTP/1.1 keep-alive on raw asyncio streams, one connection
    # per slot, the reply's JSON parsed. Not a usable client (no TLS, chunking, errors).
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(encoded)}\r\n\r\n"
    ).encode()
    sockets: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(concurrency):
        sockets.put_nowait(await asyncio.open_connection(host, int(port)))

    async def raw_socket() -> object:
        reader, writer = await sockets.get()
        try:
            writer.write(head + encoded)
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            return json.loads(await reader.readexactly(length))
        finally:
            sockets.put_nowait((reader, writer))

    clients = {
        "openai SDK create": sdk_create,
        "openai SDK post (raw)": sdk_post,
        "openai SDK post (raw), aiohttp transport": sdk_post_aiohttp,
        "httpx post": httpx_post,
        "httpx post, aiohttp transport (no SDK)": httpx_aiohttp_post,
        "aiohttp ClientSession post (no httpx)": aiohttp_post,
        "JudgeClient.complete, bare aiohttp (as the worker runs it)": judge_complete,
        "JudgeClient.complete, SDK over aiohttp (before 2026-11-30)": judge_complete_sdk_aiohttp,
        "JudgeClient.complete, httpx": judge_complete_httpx,
        "raw asyncio socket (the floor; not a client)": raw_socket,
    }
    for send in clients.values():  # warm connections and caches
        await _run(send, concurrency * 2, concurrency)
    results: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(reps):
        for name, send in clients.items():
            results[name].append(await _run(send, n, concurrency))
    await sdk.close()
    await sdk_aio.close()
    await raw.aclose()
    await raw_aio.aclose()
    await session.close()
    await judge.aclose()
    await judge_sdk_aio.aclose()
    await judge_httpx.aclose()
    while not sockets.empty():
        sockets.get_nowait()[1].close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per client per round")
    parser.add_argument("--reps", type=int, default=5, help="rounds (clients interleaved)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    args = parser.parse_args(argv)
    judge = Judge.start(latency="0")
    try:
        results = asyncio.run(measure(judge.url, args.requests, args.reps, args.concurrency))
    finally:
        judge.stop()
    base = Summary.of(results["httpx post"]).median
    rows = []
    for name, values in results.items():
        s = Summary.of(values)
        rows.append(
            [
                name,
                f"{fmt(s.median)} ms",
                f"{fmt(s.low)} – {fmt(s.high)}",
                f"{s.median / base:.1f}×",
            ]
        )
    print(f"`{command_line()}`\n")
    print(machine() + "\n")
    print(table(["client", "CPU per request (median)", "min – max", "÷ bare httpx"], rows))
    print(f"\n{args.requests} requests × {args.reps} rounds, {args.concurrency} in flight")


if __name__ == "__main__":
    main()
