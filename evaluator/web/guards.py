"""The guards `evaluator serve` puts in front of its handlers (see evaluator.web.server)."""

from __future__ import annotations

import ipaddress
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from evaluator.config.settings import ServerSettings
from evaluator.sources.otlp.decode import MAX_BODY_BYTES

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
_BUSY = json.dumps({"error": "too many connections; retry"}).encode()


@dataclass(frozen=True, slots=True)
class ServerOptions:
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    read_timeout_s: float = 10.0
    request_timeout_s: float = 30.0
    max_connections: int = 64
    max_body_bytes: int = MAX_BODY_BYTES

    @classmethod
    def from_settings(cls, s: ServerSettings, *, max_body_bytes: int) -> ServerOptions:
        return cls(
            token=s.token(),
            allowed_hosts=tuple(h.lower() for h in s.allowed_hosts),
            read_timeout_s=s.read_timeout_s,
            request_timeout_s=s.request_timeout_s,
            max_connections=s.max_connections,
            max_body_bytes=max_body_bytes,
        )


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_allowed(header: str | None, allowed: tuple[str, ...], bound_loopback: bool) -> bool:
    """Whether a Host header names this server: a listed name (with or without the port),
    or a localhost name when bound to loopback with nothing listed."""
    if not allowed and not bound_loopback:
        return True
    if not header:
        return False
    value = header.strip().lower()
    name = value[1:].split("]", 1)[0] if value.startswith("[") else value.rsplit(":", 1)[0]
    names = allowed or LOCAL_NAMES
    return value in names or name in names


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` of them."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

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
