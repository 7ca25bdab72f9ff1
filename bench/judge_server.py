"""A local OpenAI-compatible judge server for benchmarks (loopback only, stdlib asyncio).

    python -m bench.judge_server --port 8099 --latency 300
    python -m bench.judge_server --latency lognormal:300:0.3 --rpm 600 --error-rate 0.01
    curl http://127.0.0.1:8099/stats

It answers `POST /v1/chat/completions` with replies that fit the request, so a caller never
re-asks because of the server:

- `response_format: json_schema` → a minimal valid instance of that schema;
- `response_format: json_object` (or none) → an instance of the schema the prompt embeds
  (instructor's and ragas's JSON mode paste it into the system message), else `{}` / text;
- `tools` → one tool call whose arguments fit the (chosen) function's parameters;
- `n` choices; usage tokens estimated as characters / 4 — the prompt count includes the
  schema sent in `response_format`/`tools`, as a real provider bills it.

`POST /v1/embeddings` returns deterministic fake unit vectors (float or base64). Faults:
latency distribution, requests-per-minute limit answered with 429 + Retry-After (sliding
60 s window over chat calls), injected 500s, hangs (no reply until the client gives up)
and malformed (non-JSON) content. `GET /stats` counts calls, statuses and tokens;
`POST /stats/reset` zeroes them. `--labels FILE` (RAGTruth QA) makes faithfulness verdicts
agree with the human labels with probability `--p-correct`, optionally switching to
`--p-after` at request `--drift-at`: see bench/labelled_judge.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import math
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .labelled_judge import LabelledVerdicts, load_labels
from .schema_instance import instance, schema_in_text

_REASONS = {200: "OK", 404: "Not Found", 400: "Bad Request", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error"}
_MALFORMED = 'Sure! Here is the JSON you asked for: {"verdict": "supp'


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    latency: str = "0"  # ms: "300", "uniform:200:400", "normal:300:50", "lognormal:300:0.3"
    embed_latency_ms: float = 0.0
    rpm: int = 0  # 0 = unlimited
    error_rate: float = 0.0
    hang_rate: float = 0.0
    malformed_rate: float = 0.0
    hang_s: float = 3600.0
    min_items: int = 1
    string_words: int = 6
    embedding_dim: int = 384
    seed: int = 0
    labels: str = ""  # RAGTruth QA jsonl: label-aware faithfulness verdicts (labelled_judge)
    p_correct: float = 1.0
    drift_at: int = 0  # chat request number from which p_after applies; 0 = never
    p_after: float = 1.0


@dataclass
class Stats:
    requests: int = 0
    chat_calls: int = 0  # answered 200 with a completion (malformed included)
    embedding_calls: int = 0
    choices: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embedding_tokens: int = 0
    rate_limited: int = 0
    errors_500: int = 0
    hangs: int = 0
    malformed: int = 0
    bad_requests: int = 0
    in_flight: int = 0
    labelled: int = 0  # replies whose verdicts were set from a label
    unlabelled: int = 0  # verdict replies whose answer the labels file lacks
    max_in_flight: int = 0
    started_at: float = field(default_factory=time.time)


def latency_sampler(spec: str, rng: random.Random) -> Callable[[], float]:
    """Seconds per call from a spec in milliseconds (see ServerConfig.latency)."""
    kind, _, rest = spec.partition(":") if ":" in spec else ("const", "", spec)
    args = [float(a) for a in rest.split(":") if a]
    if kind == "const":
        return lambda: args[0] / 1000
    if kind == "uniform":
        return lambda: rng.uniform(args[0], args[1]) / 1000
    if kind == "normal":
        return lambda: max(rng.gauss(args[0], args[1]), 0.0) / 1000
    if kind == "lognormal":  # median, sigma of the log
        return lambda: args[0] * math.exp(rng.gauss(0.0, args[1])) / 1000
    raise ValueError(f"unknown latency distribution {spec!r}")


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text) / 4)) if text else 0


def message_text(messages: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def fake_embedding(text: str, dim: int) -> list[float]:
    """Deterministic unit vector per text (equal texts → equal vectors)."""
    rng = random.Random(hashlib.blake2b(text.encode(), digest_size=8).digest())
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class JudgeServer:
    """The server; `await start()` binds and returns the base URL (…/v1)."""

    def __init__(self, config: ServerConfig) -> None:
        if not ipaddress.ip_address(config.host).is_loopback:
            raise ValueError(f"the bench judge serves loopback only, not {config.host}")
        self.config = config
        self.stats = Stats()
        self._rng = random.Random(config.seed)
        self._latency = latency_sampler(config.latency, self._rng)
        self._window: deque[float] = deque()
        self._server: asyncio.base_events.Server | None = None
        self._labelled = (
            LabelledVerdicts(
                load_labels(config.labels), config.p_correct, config.drift_at, config.p_after
            )
            if config.labels
            else None
        )
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}/v1"

    async def start(self) -> str:
        self._server = await asyncio.start_server(
            self._connection, self.config.host, self.config.port, limit=1 << 20, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    # --- HTTP/1.1 (keep-alive, Content-Length bodies: what httpx sends) --------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                reply = await self._dispatch(method, path.split("?")[0], body, reader)
                if reply is None:  # a hang: drop the connection without a reply
                    return
                status, extra, payload = reply
                out = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}"]
                out += ["content-type: application/json", f"content-length: {len(payload)}"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # loop shutdown with a keep-alive connection open: nothing to report
        finally:
            writer.close()

    async def _dispatch(
        self, method: str, path: str, body: bytes, reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes] | None:
        self.stats.requests += 1
        path = path.removeprefix("/v1")
        if method == "GET" and path == "/stats":
            return 200, {}, json.dumps(asdict(self.stats)).encode()
        if method == "POST" and path == "/stats/reset":
            self.stats = Stats()
            return 200, {}, b"{}"
        if method == "GET" and path == "/models":
            return 200, {}, json.dumps({"object": "list", "data": [{"id": "bench-judge"}]}).encode()
        if method != "POST" or path not in ("/chat/completions", "/embeddings"):
            return 404, {}, b'{"error": {"message": "not found"}}'
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            self.stats.bad_requests += 1
            return 400, {}, b'{"error": {"message": "body is not JSON"}}'
        if path == "/embeddings":
            return await self._embeddings(request)
        return await self._chat(request, reader)

    # --- endpoints -------------------------------------------------------------------

    def _admit(self) -> float | None:
        """None when the call may proceed, else seconds until a slot frees (sliding 60 s)."""
        if self.config.rpm <= 0:
            return None
        now = time.monotonic()
        while self._window and now - self._window[0] >= 60.0:
            self._window.popleft()
        if len(self._window) >= self.config.rpm:
            return 60.0 - (now - self._window[0])
        self._window.append(now)
        return None

    async def _chat(
        self, request: dict[str, Any], reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes] | None:
        wait = self._admit()
        if wait is not None:
            self.stats.rate_limited += 1
            headers = {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(int(wait * 1000))}
            body = {"error": {"message": "rate limit", "type": "rate_limit_exceeded"}}
            return 429, headers, json.dumps(body).encode()
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            roll = self._rng.random()
            cfg = self.config
            if roll < cfg.hang_rate:
                self.stats.hangs += 1
                # Until the client gives up and closes (EOF) or hang_s passes.
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(reader.read(1), cfg.hang_s)
                return None
            await asyncio.sleep(self._latency())
            if roll < cfg.hang_rate + cfg.error_rate:
                self.stats.errors_500 += 1
                return 500, {}, b'{"error": {"message": "injected server error"}}'
            malformed = roll < cfg.hang_rate + cfg.error_rate + cfg.malformed_rate
            return 200, {}, json.dumps(self._completion(request, malformed)).encode()
        finally:
            self.stats.in_flight -= 1

    def _completion(self, request: dict[str, Any], malformed: bool) -> dict[str, Any]:
        messages = request.get("messages") or []
        prompt = message_text(messages)
        fmt = request.get("response_format") or {}
        tools = request.get("tools") or []
        billed = prompt + (json.dumps(fmt) if fmt else "") + (json.dumps(tools) if tools else "")
        n = max(1, int(request.get("n") or 1))
        tool_call = self._tool_call(request) if tools and not malformed else None
        content = None if tool_call else (_MALFORMED if malformed else self._content(fmt, prompt))
        out_text = json.dumps(tool_call) if tool_call else content or ""
        choices = []
        for i in range(n):
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if tool_call:
                message["tool_calls"] = [{**tool_call, "id": f"call_{i}"}]
            finish = "tool_calls" if tool_call else "stop"
            choices.append({"index": i, "message": message, "finish_reason": finish})
        usage_in, usage_out = estimate_tokens(billed), estimate_tokens(out_text) * n
        self.stats.chat_calls += 1
        self.stats.choices += n
        self.stats.malformed += malformed
        self.stats.prompt_tokens += usage_in
        self.stats.completion_tokens += usage_out
        return {
            "id": f"chatcmpl-bench{self.stats.chat_calls}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "bench-judge"),
            "choices": choices,
            "usage": {
                "prompt_tokens": usage_in,
                "completion_tokens": usage_out,
                "total_tokens": usage_in + usage_out,
            },
        }

    def _instance(self, schema: dict[str, Any]) -> Any:
        return instance(
            schema, min_items=self.config.min_items, string_words=self.config.string_words
        )

    def _content(self, fmt: dict[str, Any], prompt: str) -> str:
        if fmt.get("type") == "json_schema":
            reply = self._instance(fmt.get("json_schema", {}).get("schema", {}))
            if self._labelled is not None:
                label = self._labelled.apply(reply, prompt, self.stats.chat_calls + 1, self._rng)
                if label is None and isinstance(reply, dict) and "claims" in reply:
                    self.stats.unlabelled += 1
                self.stats.labelled += label is not None
            return json.dumps(reply)
        schema = schema_in_text(prompt)
        if schema is not None:
            return json.dumps(self._instance(schema))
        if fmt.get("type") == "json_object":
            return "{}"
        return " ".join(["lorem ipsum dolor sit amet"] * 2)

    def _tool_call(self, request: dict[str, Any]) -> dict[str, Any]:
        tools = request["tools"]
        choice = request.get("tool_choice")
        wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
        tool = next((t for t in tools if t.get("function", {}).get("name") == wanted), tools[0])
        fn = tool.get("function", {})
        args = self._instance(fn.get("parameters", {"type": "object"}))
        return {
            "type": "function",
            "function": {"name": fn.get("name"), "arguments": json.dumps(args)},
        }

    async def _embeddings(self, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        texts = request.get("input", [])
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        if self.config.embed_latency_ms:
            await asyncio.sleep(self.config.embed_latency_ms / 1000)
        base64_out = request.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vec = fake_embedding(text, self.config.embedding_dim)
            emb: Any = (
                base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if base64_out else vec
            )
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(estimate_tokens(t) for t in texts)
        self.stats.embedding_calls += 1
        self.stats.embedding_tokens += tokens
        body = {
            "object": "list",
            "data": data,
            "model": request.get("model", "bench-embed"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return 200, {}, json.dumps(body).encode()


async def serve(config: ServerConfig) -> None:
    server = JudgeServer(config)
    url = await server.start()
    # The first line is read by the benchmarks that start this as a subprocess.
    print(f"judge server listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    d = ServerConfig()
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 = any free port (printed)")
    p.add_argument(
        "--latency",
        default=d.latency,
        help="ms, or uniform:a:b, normal:mu:sd, lognormal:median:sigma",
    )
    p.add_argument("--embed-latency-ms", type=float, default=d.embed_latency_ms)
    p.add_argument("--rpm", type=int, default=d.rpm, help="chat requests per minute, 0 = no limit")
    p.add_argument("--error-rate", type=float, default=d.error_rate, help="share answered 500")
    p.add_argument("--hang-rate", type=float, default=d.hang_rate, help="share never answered")
    p.add_argument(
        "--malformed-rate", type=float, default=d.malformed_rate, help="share of non-JSON content"
    )
    p.add_argument("--hang-s", type=float, default=d.hang_s)
    p.add_argument("--min-items", type=int, default=d.min_items, help="items per array in replies")
    p.add_argument("--string-words", type=int, default=d.string_words, help="words per string")
    p.add_argument("--embedding-dim", type=int, default=d.embedding_dim)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--labels", default=d.labels, help="RAGTruth QA jsonl: label-aware verdicts")
    p.add_argument("--p-correct", type=float, default=d.p_correct, help="P(verdict = label)")
    p.add_argument("--drift-at", type=int, default=d.drift_at, help="request no. for --p-after")
    p.add_argument("--p-after", type=float, default=d.p_after)
    args = p.parse_args(argv)
    config = ServerConfig(**{k: v for k, v in vars(args).items()})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))


if __name__ == "__main__":
    main()
