"""Loopback guard for the peers of bench/throughput.py (ragas, phoenix-evals, deepeval).

Installed by the `sitecustomize.py` beside it: Python imports `sitecustomize` at start-up
from sys.path, so putting this folder on a peer's PYTHONPATH installs the guard before the
peer imports anything — without touching its venv. Importing this module alone installs
nothing (the tests check `is_loopback` that way).

Every socket connection, UDP send or name lookup whose target is not loopback is refused
(PermissionError) before any packet leaves, and recorded: in `ATTEMPTS` (the peer reports
them with each round) and, when PEER_GUARD_LOG names a file, as one JSON line there (so
attempts made at exit, such as a telemetry flush, are counted too). Stdlib only: it runs
in the peers' interpreters.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import traceback
from typing import Any

ATTEMPTS: list[dict[str, Any]] = []
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def is_loopback(host: Any) -> bool:
    """True for 127.0.0.0/8, ::1, 'localhost' and Unix sockets (a path or bytes)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or not isinstance(host, str):
        return host is None  # getaddrinfo(None, port) = the local host
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _refuse(kind: str, target: Any) -> None:
    # The innermost frame in a third-party package says who wanted out (posthog, sentry…).
    stack = traceback.extract_stack(limit=40)[:-2]
    frames = [f for f in stack if "site-packages" in f.filename] or stack
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    attempt = {"pid": os.getpid(), "kind": kind, "target": repr(target)[:200], "from": where}
    ATTEMPTS.append(attempt)
    log = os.environ.get("PEER_GUARD_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(attempt) + "\n")
    raise PermissionError(f"loopback guard: {kind} to {target!r} refused (benchmark is offline)")


def _check_address(kind: str, address: Any) -> None:
    if isinstance(address, tuple) and address and not is_loopback(address[0]):
        _refuse(kind, address)


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_sendto = socket.socket.sendto
_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    _check_address("connect", address)
    return _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    _check_address("connect", address)
    return _connect_ex(self, address)


def _guarded_sendto(self: socket.socket, data: Any, *args: Any) -> Any:
    _check_address("sendto", args[-1] if args else None)
    return _sendto(self, data, *args)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    # A lookup of a public name already tells the resolver where the peer wants to go.
    if not is_loopback(host):
        _refuse("getaddrinfo", host)
    return _getaddrinfo(host, *args, **kwargs)


def install() -> None:
    global INSTALLED
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _guarded_sendto  # type: ignore[assignment]
    socket.getaddrinfo = _guarded_getaddrinfo
    INSTALLED = True


INSTALLED = False
