"""The one request/response seam of `evaluator serve`: a route is a function from a
`Request` to a `Response`, and nothing else in a route knows how HTTP is framed.

evaluator.web.framing turns bytes on a socket into a `Request` and a `Response` back into
bytes; evaluator.web.routes holds the route table. A request's body is read only when a
route asks for it (`Request.read_body()`), after the guards and the route lookup: a refused or
unknown request never waits for a body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any


class ClientGone(Exception):
    """The client went silent past the read timeout, or away, while its body was read:
    there is no one to answer, and the connection closes."""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # as sent: path and query string (for logs)
    path: str
    query: dict[str, list[str]]
    headers: Message  # names case-insensitive
    # Reads the body now: `RequestError` with its status for a malformed or oversized one,
    # `ClientGone` when the client stops sending.
    read_body: Callable[[], bytes] = field(repr=False, default=lambda: b"")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    data: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


Route = Callable[[Request], Response]
# (method, path) -> route: the whole HTTP surface, one table (evaluator.web.routes).
RouteTable = Mapping[tuple[str, str], Route]


def json_response(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json.dumps(doc).encode(), "application/json", headers or {})


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)
