"""`evaluator serve`: a read-only HTTP view of trends and alerts (standard library only).

    GET /                  the trends page (static/index.html + app.js, no external assets)
    GET /api/rubrics       {"rubrics": [names]}
    GET /api/trends        ?rubric=&by=&since=&bucket=   the `evaluator trends --json` document
    GET /api/alerts        ?open=1&rubric=     {"alerts": [...]}, as `evaluator alerts --json`
    GET /api/worst         ?rubric=&by=&key=&start=&end=  {"traces": [...]} lowest scores of a cell
    GET /metrics           Prometheus exposition (intake, sampling, evaluations, judge, scores)
    POST /v1/traces        OTLP/HTTP trace export (protobuf or JSON, gzip): GenAI spans in,
                           completed traces ingested and enqueued for evaluation

Binds 127.0.0.1 by default: trace IDs and judge explanations are internal data.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlmodel import Session, col, select

from evaluator.analytics.alerts import alert_to_json, list_alerts
from evaluator.analytics.rollups import refresh_rollups
from evaluator.analytics.trends import BY, TrendQuery, trend, worst_traces
from evaluator.config.redis_clients import sync_redis
from evaluator.config.settings import Settings
from evaluator.outputs.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from evaluator.outputs.metrics import render_metrics
from evaluator.sources.otlp.assembly import SpanAssembler, handle_otlp_traces, start_sweeper
from evaluator.sources.otlp.decode import OtlpConfig
from evaluator.store.models import EvalRollup
from evaluator.store.store import Store, as_utc

log = logging.getLogger("evaluator.web.server")
STATIC = Path(__file__).with_name("static")
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
}


class BadRequest(ValueError):
    pass


def _one(qs: dict[str, list[str]], name: str, default: str | None = None) -> str:
    value = qs.get(name, [default])[0]
    if value is None:
        raise BadRequest(f"missing query parameter {name!r}")
    return value


def _time(raw: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(raw))
    except ValueError:
        raise BadRequest(f"not an ISO 8601 time: {raw!r}") from None


class Api:
    """The endpoints as plain methods: (status, JSON-able body)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def rubrics(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        refresh_rollups(self.store)  # the rollup knows every rubric without a full scan
        with Session(self.store.engine) as session:
            names = session.exec(
                select(EvalRollup.rubric).distinct().order_by(col(EvalRollup.rubric))
            )
            return {"rubrics": list(names.all())}

    def trends(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        try:
            q = TrendQuery.parse(
                _one(qs, "rubric"),
                _one(qs, "by", "prompt_version"),
                _one(qs, "since", "7d"),
                _one(qs, "bucket", "1d"),
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return trend(self.store, q)

    def alerts(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        rows = list_alerts(
            self.store,
            open_only=_one(qs, "open", "0") in ("1", "true"),
            rubric=qs.get("rubric", [None])[0],
        )
        return {"alerts": [alert_to_json(a) for a in rows]}

    def worst(self, qs: dict[str, list[str]]) -> dict[str, Any]:
        by = _one(qs, "by", "prompt_version")
        if by not in BY:
            raise BadRequest(f"by must be one of {', '.join(BY)}")
        key = qs.get("key", [None])[0] or None
        start, end = _time(_one(qs, "start")), _time(_one(qs, "end"))
        return {
            "traces": worst_traces(
                self.store,
                _one(qs, "rubric"),
                by,
                key,
                start,
                end,
                k=min(50, int(_one(qs, "k", "5"))),
            )
        }


def make_handler(
    api: Api,
    assembler: SpanAssembler | None = None,
    metrics: Callable[[], bytes] | None = None,
) -> type[BaseHTTPRequestHandler]:
    routes = {
        "/api/rubrics": api.rubrics,
        "/api/trends": api.trends,
        "/api/alerts": api.alerts,
        "/api/worst": api.worst,
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "llm-evaluator"

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/v1/traces" or assembler is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > assembler.config.max_body_bytes:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
                return
            status, data, ctype = handle_otlp_traces(
                self.rfile.read(length),
                self.headers.get("Content-Type", ""),
                self.headers.get("Content-Encoding"),
                assembler=assembler,
            )
            self._send(HTTPStatus(status), data, ctype)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics" and metrics is not None:
                try:
                    self._send(HTTPStatus.OK, metrics(), METRICS_CONTENT_TYPE)
                except Exception:
                    log.exception("GET /metrics failed")
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "metrics unavailable"})
                return
            if url.path in _FILES:
                name, ctype = _FILES[url.path]
                self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), ctype)
                return
            handler = routes.get(url.path)
            if handler is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {url.path}"})
                return
            try:
                body = handler(parse_qs(url.query))
            except BadRequest as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            except Exception:
                log.exception("GET %s failed", self.path)
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
                return
            self._json(HTTPStatus.OK, body)

        def _json(self, status: HTTPStatus, body: Any) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: HTTPStatus, data: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header(
                "Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'"
            )
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def make_server(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    assembler: SpanAssembler | None = None,
    metrics: Callable[[], bytes] | None = None,
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(Api(store), assembler, metrics))
    server.daemon_threads = True
    return server


def start_in_thread(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    assembler: SpanAssembler | None = None,
    metrics: Callable[[], bytes] | None = None,
) -> ThreadingHTTPServer:
    """For tests and embedding: serve in a daemon thread; `server.shutdown()` stops it."""
    server = make_server(store, host, port, assembler=assembler, metrics=metrics)
    threading.Thread(target=server.serve_forever, name="evaluator-http", daemon=True).start()
    return server


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8700) -> None:
    """Trends page and API, OTLP/HTTP receiver (POST /v1/traces) and /metrics."""
    store = Store(settings.database.url)
    rsync = sync_redis(settings)
    o = settings.otlp
    assembler = SpanAssembler(
        store,
        rsync,
        key_prefix=settings.redis.key_prefix,
        config=OtlpConfig(
            prompt_version_attribute=o.prompt_version_attribute,
            max_body_bytes=o.max_body_mib << 20,
        ),
        grace_s=o.grace_s,
        orphan_s=o.orphan_s,
    )
    _thread, stop = start_sweeper(assembler, o.sweep_interval_s)

    def metrics() -> bytes:
        return render_metrics(
            rsync, store, key_prefix=settings.redis.key_prefix, queue_name=settings.redis.queue_name
        )

    server = make_server(store, host, port, assembler=assembler, metrics=metrics)
    print(f"serving http://{host}:{server.server_address[1]}/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        rsync.close()
        store.close()
