"""A tiny OpenAI-compatible judge on 127.0.0.1 for tests that run workers as real processes
(respx cannot reach into another process). Replies to the llm_rubric schema; the first
`hang_first` requests wait `hang_s` before answering (a judge that stalls mid-call), or until
the test sets `release` (and at exit), so a test can hold a call exactly as long as it needs.
`delays` is the judge's latency (it only spreads calls out; no outcome waits on it)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .conftest import chat_completion


class JudgeStub:
    def __init__(
        self,
        *,
        hang_first: int = 0,
        hang_s: float = 0.0,
        score: int = 4,
        port: int = 0,
        delays: tuple[float, ...] = (),
    ) -> None:
        self.calls = 0
        self.delays = delays  # call n (from 1) waits delays[n % len] (after any hang)
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once
        self.hang_first = hang_first
        self.hang_s = hang_s
        self.score = score
        self.first_request = threading.Event()
        self.release = threading.Event()  # ends every hang now and from now on
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with stub._lock:
                    stub.calls += 1
                    n = stub.calls
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                stub.first_request.set()
                if n <= stub.hang_first:
                    stub.release.wait(stub.hang_s)
                if stub.delays:
                    stub.release.wait(stub.delays[n % len(stub.delays)])
                with stub._lock:
                    stub.in_flight -= 1
                body = json.dumps(
                    chat_completion(json.dumps({"reasoning": "stub", "score": stub.score}))
                ).encode()
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client (a killed worker) is gone

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JudgeStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
