"""`evaluator serve`: the trends page, a read-only JSON API (plus POST /api/feedback),
/metrics and the OTLP receiver.

    GET /                  the trends page (static/index.html + app.js, no external assets)
    GET /api/rubrics       {"rubrics": [names]} (rolled-up hours and records not rolled up yet)
    GET /api/overview      one row per rubric: mean and pass rate per prompt version (24 h),
                           open alerts, judge cost per day
    GET /api/cost          ?by=&since=   USD per answer that passed all of its rubrics
    GET /api/trends        ?rubric=&by=&since=&bucket=   the `evaluator trends --json` document
    GET /api/alerts        ?open=1&rubric=     {"alerts": [...]}, as `evaluator alerts --json`
    GET /api/worst         ?rubric=&by=&key=&start=&end=&k=  lowest scores of a trend cell
    GET /api/review        ?rubric=&n=   the review queue, as `evaluator review next --json`
    GET /metrics           Prometheus exposition
    POST /v1/traces        OTLP/HTTP trace export (evaluator.sources.otlp.receive)
    POST /api/feedback     human feedback: one item or a list (evaluator.sources.feedback)

Facing a network (README, "Serving on a network"). The standard library's threading server
is kept: it adds no dependency to a package that installs it anyway, and each guard below is
a few explicit lines rather than a framework's defaults to audit. It answers one request per
connection (HTTP/1.0), so a connection's deadline is its request's deadline.

- connections: at most `max_connections` at once; one more gets 503 without a thread;
- time: `read_timeout_s` of silence or `request_timeout_s` in all ends the connection
  (a slowloris client sending a byte every few seconds meets the second);
- bodies: Content-Length must be one non-negative integer (400), is required unless the body
  is chunked (411) and is held to the size limit before a byte is read (413);
- auth: with a token configured, /v1/traces, /api/* and /metrics need it (401), compared in
  constant time; the page itself carries no data;
- Host: only configured names, or localhost names when bound to loopback (403), so a
  DNS-rebinding page cannot read the API through the user's browser.

Binds 127.0.0.1 by default: trace IDs and judge explanations are internal data.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from evaluator.analytics.cost import PriceFn
from evaluator.config.redis_clients import sync_redis
from evaluator.config.rubrics import pass_thresholds
from evaluator.config.settings import Settings
from evaluator.outputs.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from evaluator.outputs.metrics import render_metrics
from evaluator.sources.feedback import handle_feedback
from evaluator.sources.feedback_tail import FeedbackIntake
from evaluator.sources.otlp.assembly import SpanAssembler, start_sweeper
from evaluator.sources.otlp.decode import OtlpConfig
from evaluator.sources.otlp.receive import handle_otlp_traces
from evaluator.store.store import Store
from evaluator.web.api import Api, error_answer
from evaluator.web.guards import BoundedServer, HttpError, ServerOptions, host_allowed, is_loopback

log = logging.getLogger("evaluator.web.server")
STATIC = Path(__file__).with_name("static")
_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
}
DEFAULT_OPTIONS = ServerOptions()
_LENGTH = re.compile(r"[0-9]{1,19}")
_CHUNK = re.compile(rb"[0-9a-fA-F]{1,8}")


def make_handler(
    api: Api,
    assembler: SpanAssembler | None = None,
    metrics: Callable[[], bytes] | None = None,
    options: ServerOptions = DEFAULT_OPTIONS,
    bound_loopback: bool = True,
    feedback_intake: FeedbackIntake | None = None,
) -> type[BaseHTTPRequestHandler]:
    # Late negative feedback enqueues its trace (evaluator.sources.feedback_tail); the OTLP
    # receiver's intake serves POST /api/feedback too unless another is given.
    if feedback_intake is None and assembler is not None:
        feedback_intake = assembler.feedback_intake
    routes = {
        "/api/rubrics": api.rubrics,
        "/api/overview": api.overview,
        "/api/cost": api.cost,
        "/api/trends": api.trends,
        "/api/alerts": api.alerts,
        "/api/worst": api.worst,
        "/api/review": api.review,
    }
    limit = options.max_body_bytes  # on the wire; decoding limits the decompressed size
    if assembler is not None:
        limit = min(limit, assembler.config.max_body_bytes)

    class Handler(BaseHTTPRequestHandler):
        server_version = "llm-evaluator"
        timeout = options.read_timeout_s  # socket timeout: silence ends the connection
        _deadline: threading.Timer

        def setup(self) -> None:
            super().setup()
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

        def _guard(self, path: str) -> bool:
            if not host_allowed(self.headers.get("Host"), options.allowed_hosts, bound_loopback):
                self._json(HTTPStatus.FORBIDDEN, {"error": "Host not allowed"})
                return False
            protected = path == "/v1/traces" or path == "/metrics" or path.startswith("/api/")
            if options.token and protected:
                scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
                ok = scheme.lower() == "bearer" and hmac.compare_digest(
                    given.strip().encode(), options.token.encode()
                )
                if not ok:
                    self._json(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"},
                               extra={"WWW-Authenticate": "Bearer"})  # fmt: skip
                    return False
            return True

        def _body(self) -> bytes:
            coding = self.headers.get("Transfer-Encoding")
            lengths = self.headers.get_all("Content-Length") or []
            if coding is not None:
                if coding.strip().lower() != "chunked" or lengths:
                    raise HttpError(HTTPStatus.BAD_REQUEST, "only chunked, without Content-Length")
                return self._chunked()
            if not lengths:
                raise HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            if len(lengths) > 1 or not _LENGTH.fullmatch(lengths[0].strip()):
                raise HttpError(HTTPStatus.BAD_REQUEST, "Content-Length must be one integer >= 0")
            length = int(lengths[0])
            if length > limit:
                raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
            return self._exactly(length)

        def _exactly(self, n: int) -> bytes:
            data = self.rfile.read(n)
            if len(data) < n:
                raise HttpError(HTTPStatus.BAD_REQUEST, "body shorter than announced")
            return data

        def _chunked(self) -> bytes:
            out = bytearray()
            while True:
                size = self.rfile.readline(1026).split(b";", 1)[0].strip()
                if not _CHUNK.fullmatch(size):
                    raise HttpError(HTTPStatus.BAD_REQUEST, "malformed chunk size")
                n = int(size, 16)
                if n == 0:
                    for _ in range(64):  # trailers, up to the blank line
                        if self.rfile.readline(1026) in (b"\r\n", b"\n", b""):
                            return bytes(out)
                    raise HttpError(HTTPStatus.BAD_REQUEST, "too many trailers")
                if len(out) + n > limit:
                    raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {limit} bytes")
                out += self._exactly(n)
                self.rfile.readline(3)

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if not self._guard(path):
                return
            feedback = path == "/api/feedback"
            if not feedback and (path != "/v1/traces" or assembler is None):
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}"})
                return
            try:
                body = self._body()
            except HttpError as exc:
                self._json(exc.status, {"error": str(exc)})
                return
            except (TimeoutError, OSError):
                self.close_connection = True  # too slow, or gone: nothing to answer
                return
            if feedback:  # human labels, scores and thumbs (evaluator.sources.feedback)
                code, payload = handle_feedback(api.store, body, feedback_intake)
                self._json(HTTPStatus(code), payload)
                return
            assert assembler is not None
            status, data, ctype = handle_otlp_traces(
                body,
                self.headers.get("Content-Type", ""),
                self.headers.get("Content-Encoding"),
                assembler=assembler,
            )
            self._send(HTTPStatus(status), data, ctype)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if not self._guard(url.path):
                return
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
                body = handler(parse_qs(url.query, keep_blank_values=True))
            except Exception as exc:
                answer = error_answer(exc)  # the one exit-code table's HTTP statuses
                if answer is None:
                    log.exception("GET %s failed", self.path)
                    answer = (HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
                elif answer[0] >= 500:
                    log.warning("GET %s: %s", url.path, exc)
                self._json(HTTPStatus(answer[0]), {"error": answer[1]})
                return
            self._json(HTTPStatus.OK, body)

        def _json(self, status: HTTPStatus, body: Any, extra: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(body).encode(), "application/json", extra)

        def _send(
            self, status: HTTPStatus, data: bytes, ctype: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header(
                "Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'"
            )
            for name, value in (extra or {}).items():
                self.send_header(name, value)
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
    options: ServerOptions = DEFAULT_OPTIONS,
    price: PriceFn | None = None,
    thresholds: Mapping[str, float] | None = None,
    feedback_intake: FeedbackIntake | None = None,
    pricing: Collection[str] | None = None,
) -> BoundedServer:
    api = (
        Api(store, thresholds=thresholds, pricing=pricing)
        if price is None
        else Api(store, price, thresholds, pricing)
    )
    handler = make_handler(
        api, assembler, metrics, options, is_loopback(host), feedback_intake=feedback_intake
    )
    return BoundedServer((host, port), handler, options.max_connections)


def start_in_thread(
    store: Store,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    assembler: SpanAssembler | None = None,
    metrics: Callable[[], bytes] | None = None,
    options: ServerOptions = DEFAULT_OPTIONS,
    thresholds: Mapping[str, float] | None = None,
    feedback_intake: FeedbackIntake | None = None,
) -> BoundedServer:
    """For tests and embedding: serve in a daemon thread; `server.shutdown()` stops it."""
    server = make_server(
        store, host, port, assembler=assembler, metrics=metrics, options=options,
        thresholds=thresholds, feedback_intake=feedback_intake,
    )  # fmt: skip
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
        on_negative_feedback=settings.sampling.always_on_negative_feedback,
    )
    _thread, stop = start_sweeper(assembler, o.sweep_interval_s)

    def metrics() -> bytes:
        return render_metrics(
            rsync, store, key_prefix=settings.redis.key_prefix, queue_name=settings.redis.queue_name
        )

    options = ServerOptions.from_settings(settings.server, max_body_bytes=o.max_body_mib << 20)
    server = make_server(
        store, host, port, assembler=assembler, metrics=metrics, options=options,
        price=settings.cost_usd, thresholds=pass_thresholds(settings.rubrics.path),
        pricing=settings.pricing,
    )  # fmt: skip
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
