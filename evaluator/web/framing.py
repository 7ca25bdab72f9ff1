"""Bytes on a socket to a `Request`, a `Response` back to bytes: the standard library's
threading server, with the guards a server facing a network needs written out.

The standard library's server is kept (BENCHMARKS.md, "The HTTP surface"): it adds no
dependency, and each guard below is a few explicit lines rather than a framework's defaults
to audit. It answers one request per connection (HTTP/1.0), so a connection's deadline is
its request's deadline.

- connections: at most `max_connections` at once; one more gets 503 without a thread;
- time: `read_timeout_s` of silence or `request_timeout_s` in all ends the connection
  (a slowloris client sending a byte every few seconds meets the second);
- bodies: Content-Length must be one non-negative integer (400), is required unless the body
  is chunked (411) and is held to the size limit before a byte is read (413).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from evaluator.errors import RequestError
from evaluator.web.guards import ServerOptions
from evaluator.web.http import ClientGone, Request, Response

log = logging.getLogger("evaluator.web.server")
# What answers a request: None when there is no one left to answer (the connection closes).
App = Callable[[Request], Response | None]
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
}
_LENGTH = re.compile(r"[0-9]{1,19}")
_CHUNK = re.compile(rb"[0-9a-fA-F]{1,8}")
_BUSY = json.dumps({"error": "too many connections; retry"}).encode()


class Framing(BaseHTTPRequestHandler):
    """One request per connection, under the server's deadlines and body limit."""

    server: BoundedServer
    server_version = "llm-evaluator"
    _deadline: threading.Timer

    def setup(self) -> None:
        options = self.server.options
        super().setup()
        self.connection.settimeout(options.read_timeout_s)  # silence ends the connection
        self._deadline = threading.Timer(options.request_timeout_s, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def _expire(self) -> None:
        # Wakes a read blocked on a trickling client; the handler then ends.
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True) if url.query else {}
        request = Request(self.command, self.path, url.path, query, self.headers, self._body)
        response = self.server.app(request)
        if response is None:
            self.close_connection = True  # too slow, or gone: nothing to answer
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.data)))
        for headers in (SECURITY_HEADERS, response.headers):
            for name, value in headers.items():
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.data)

    def _body(self) -> bytes:
        try:
            return self._framed_body(self.server.options.max_body_bytes)
        except (TimeoutError, OSError) as exc:
            raise ClientGone(str(exc)) from exc

    def _framed_body(self, limit: int) -> bytes:
        coding = self.headers.get("Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length") or []
        if coding is not None:
            if coding.strip().lower() != "chunked" or lengths:
                raise RequestError(HTTPStatus.BAD_REQUEST, "only chunked, without Content-Length")
            return self._chunked(limit)
        if not lengths:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if len(lengths) > 1 or not _LENGTH.fullmatch(lengths[0].strip()):
            raise RequestError(HTTPStatus.BAD_REQUEST, "Content-Length must be one integer >= 0")
        length = int(lengths[0])
        if length > limit:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
        return self._exactly(length)

    def _exactly(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise RequestError(HTTPStatus.BAD_REQUEST, "body shorter than announced")
        return data

    def _chunked(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            size = self.rfile.readline(1026).split(b";", 1)[0].strip()
            if not _CHUNK.fullmatch(size):
                raise RequestError(HTTPStatus.BAD_REQUEST, "malformed chunk size")
            n = int(size, 16)
            if n == 0:
                for _ in range(64):  # trailers, up to the blank line
                    if self.rfile.readline(1026) in (b"\r\n", b"\n", b""):
                        return bytes(out)
                raise RequestError(HTTPStatus.BAD_REQUEST, "too many trailers")
            if len(out) + n > limit:
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
            out += self._exactly(n)
            self.rfile.readline(3)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `options.max_connections` of them, each request
    answered by `app`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App, options: ServerOptions) -> None:
        super().__init__(address, Framing)
        self.app = app
        self.options = options
        self._slots = threading.BoundedSemaphore(options.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            head = (
                "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(_BUSY)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
            )
            try:
                request.settimeout(1.0)
                request.sendall(head.encode() + _BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
