"""The guards `evaluator serve` puts in front of its routes: who may ask (a token), under
which name (Host), and the server's limits (evaluator.web.framing enforces them).

- auth: with a token configured, /v1/traces, /api/* and /metrics need it (401), compared in
  constant time; the page itself carries no data;
- Host: only configured names, or localhost names when bound to loopback (403), so a
  DNS-rebinding page cannot read the API through the user's browser.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from evaluator.config.settings import ServerSettings
from evaluator.sources.otlp.decode import MAX_BODY_BYTES

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


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


def needs_token(path: str) -> bool:
    """Paths that carry data (the page and its script do not)."""
    return path in ("/v1/traces", "/metrics") or path.startswith("/api/")


def token_matches(authorization: str | None, token: str) -> bool:
    """A `Bearer` Authorization header with this token, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    given_bytes = given.strip().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode())
