"""The HTTP surface of `evaluator serve`: one table of (method, path) -> route, each route a
small function from a `Request` to a `Response` (evaluator.web.http).

    GET /                  the trends page (static/index.html + app.js, no external assets)
    GET /api/rubrics       {"rubrics": [names]} (rolled-up hours and records not rolled up yet)
    GET /api/overview      one row per rubric: mean and pass rate per prompt version (24 h),
                           open alerts, judge cost per day
    GET /api/cost          ?by=&since=   USD per answer that passed all of its rubrics
    GET /api/trends        ?rubric=&by=&since=&bucket=   the `evaluator trends --json` document
    GET /api/alerts        ?open=1&rubric=     {"alerts": [...]}, as `evaluator alerts --json`
    GET /api/worst         ?rubric=&by=&key=&start=&end=&k=  lowest scores of a trend cell
    GET /api/review        ?rubric=&n=   the review queue, as `evaluator review next --json`
    GET /api/certifications  ?rubric=  a cascade's certifications, as `evaluator certify --json`
    GET /metrics           Prometheus exposition (when the server has a metrics source)
    POST /v1/traces        OTLP/HTTP trace export (evaluator.sources.otlp.receive), with an
                           assembler
    POST /api/feedback     human feedback: one item or a list (evaluator.sources.feedback)

`App` answers every request: the guards (Host, token; evaluator.web.guards) first, then the
route; any other method or path is 404. What a route raises takes its status from the one
exit-code table (evaluator.errors via `error_answer`); anything else is a 500, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from evaluator.outputs.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from evaluator.sources.feedback import handle_feedback
from evaluator.sources.feedback_tail import FeedbackIntake
from evaluator.sources.otlp.assembly import SpanAssembler
from evaluator.sources.otlp.receive import handle_otlp_traces
from evaluator.store.store import Store
from evaluator.web.api import Api, error_answer
from evaluator.web.guards import ServerOptions, host_allowed, needs_token, token_matches
from evaluator.web.http import (
    ClientGone,
    Request,
    Response,
    Route,
    RouteTable,
    error_response,
    json_response,
)

log = logging.getLogger("evaluator.web.server")
STATIC = Path(__file__).with_name("static")


def static_file(name: str, content_type: str, _request: Request) -> Response:
    return Response(200, (STATIC / name).read_bytes(), content_type)


def api_read(read: Callable[[dict[str, list[str]]], dict[str, Any]], request: Request) -> Response:
    """A read-only JSON endpoint: query string in, document out (evaluator.web.api)."""
    return json_response(200, read(request.query))


def metrics_text(metrics: Callable[[], bytes], _request: Request) -> Response:
    try:
        return Response(200, metrics(), METRICS_CONTENT_TYPE)
    except Exception:
        log.exception("GET /metrics failed")
        return error_response(503, "metrics unavailable")


def otlp_traces(assembler: SpanAssembler, request: Request) -> Response:
    status, data, content_type = handle_otlp_traces(
        request.read_body(),
        request.headers.get("Content-Type", ""),
        request.headers.get("Content-Encoding"),
        assembler=assembler,
    )
    return Response(status, data, content_type)


def feedback(store: Store, intake: FeedbackIntake | None, request: Request) -> Response:
    """Human labels, scores and thumbs (evaluator.sources.feedback); late negative feedback
    enqueues its trace through `intake` (evaluator.sources.feedback_tail)."""
    status, doc = handle_feedback(store, request.read_body(), intake)
    return json_response(status, doc)


def route_table(
    api: Api,
    *,
    assembler: SpanAssembler | None = None,
    metrics: Callable[[], bytes] | None = None,
    feedback_intake: FeedbackIntake | None = None,
) -> dict[tuple[str, str], Route]:
    """Every route of the server. The OTLP receiver's intake serves POST /api/feedback too
    unless another is given."""
    if feedback_intake is None and assembler is not None:
        feedback_intake = assembler.feedback_intake
    table: dict[tuple[str, str], Route] = {
        ("GET", "/"): partial(static_file, "index.html", "text/html; charset=utf-8"),
        ("GET", "/app.js"): partial(static_file, "app.js", "text/javascript; charset=utf-8"),
        ("GET", "/api/rubrics"): partial(api_read, api.rubrics),
        ("GET", "/api/overview"): partial(api_read, api.overview),
        ("GET", "/api/cost"): partial(api_read, api.cost),
        ("GET", "/api/trends"): partial(api_read, api.trends),
        ("GET", "/api/alerts"): partial(api_read, api.alerts),
        ("GET", "/api/worst"): partial(api_read, api.worst),
        ("GET", "/api/review"): partial(api_read, api.review),
        ("GET", "/api/certifications"): partial(api_read, api.certifications),
        ("POST", "/api/feedback"): partial(feedback, api.store, feedback_intake),
    }
    if metrics is not None:
        table["GET", "/metrics"] = partial(metrics_text, metrics)
    if assembler is not None:
        table["POST", "/v1/traces"] = partial(otlp_traces, assembler)
    return table


@dataclass(frozen=True, slots=True)
class App:
    """Guards, then the route; None when the client left before it could be answered."""

    routes: RouteTable
    options: ServerOptions
    bound_loopback: bool = True

    def __call__(self, request: Request) -> Response | None:
        options = self.options
        host = request.headers.get("Host")
        if not host_allowed(host, options.allowed_hosts, self.bound_loopback):
            return error_response(403, "Host not allowed")
        if (
            options.token
            and needs_token(request.path)
            and not token_matches(request.headers.get("Authorization"), options.token)
        ):
            return error_response(401, "missing or wrong token", {"WWW-Authenticate": "Bearer"})
        route = self.routes.get((request.method, request.path))
        if route is None:
            return error_response(404, f"no such path {request.path}")
        try:
            return route(request)
        except ClientGone:
            return None
        except Exception as exc:
            return _failed(request, exc)


def _failed(request: Request, exc: Exception) -> Response:
    answer = error_answer(exc)  # the one exit-code table's HTTP statuses
    if answer is None:
        log.exception("%s %s failed", request.method, request.target)
        return error_response(500, "internal error")
    if answer[0] >= 500:
        log.warning("%s %s: %s", request.method, request.path, exc)
    return error_response(*answer)
