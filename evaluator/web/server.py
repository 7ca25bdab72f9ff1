"""`evaluator serve`: the trends page, a read-only JSON API (plus POST /api/feedback),
/metrics and the OTLP receiver. The routes are evaluator.web.routes; the guards
evaluator.web.guards; the framing (connections, deadlines, bodies) evaluator.web.framing.

Binds 127.0.0.1 by default: trace IDs and judge explanations are internal data.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Mapping

from evaluator.analytics.certification_view import Now
from evaluator.analytics.cost import PriceFn
from evaluator.analytics.ppi_trends import score_estimates
from evaluator.config.redis_clients import sync_redis
from evaluator.config.rubrics import load_rubrics, pass_thresholds
from evaluator.config.settings import Settings
from evaluator.outputs.metrics import render_metrics
from evaluator.sources.feedback_tail import FeedbackIntake
from evaluator.sources.otlp.assembly import SpanAssembler, start_sweeper
from evaluator.sources.otlp.decode import OtlpConfig
from evaluator.store.store import Store
from evaluator.web.api import Api
from evaluator.web.framing import BoundedServer
from evaluator.web.guards import ServerOptions, is_loopback
from evaluator.web.routes import App, route_table
from evaluator.worker.cascade_routing import rubrics_now
from evaluator.worker.runtime import make_judge
from judges.types import Clients

DEFAULT_OPTIONS = ServerOptions()


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
    certification_now: Now | None = None,
) -> BoundedServer:
    api = (
        Api(store, thresholds=thresholds, pricing=pricing, certification_now=certification_now)
        if price is None
        else Api(store, price, thresholds, pricing, certification_now)
    )
    routes = route_table(api, assembler=assembler, metrics=metrics, feedback_intake=feedback_intake)
    if assembler is not None:  # on the wire; decoding limits the decompressed size
        limit = min(options.max_body_bytes, assembler.config.max_body_bytes)
        options = dataclasses.replace(options, max_body_bytes=limit)
    return BoundedServer((host, port), App(routes, options, is_loopback(host)), options)


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
    certification_now: Now | None = None,
) -> BoundedServer:
    """For tests and embedding: serve in a daemon thread; `server.shutdown()` stops it."""
    server = make_server(
        store,
        host,
        port,
        assembler=assembler,
        metrics=metrics,
        options=options,
        thresholds=thresholds,
        feedback_intake=feedback_intake,
        certification_now=certification_now,
    )
    threading.Thread(target=server.serve_forever, name="evaluator-http", daemon=True).start()
    return server


def _certification_now(settings: Settings) -> Now:
    """Each rubric's cheap stage, judge epoch and guarantee as the worker's routers see them
    (the same settings), so the page marks other-epoch rows and advisory cascades."""
    clients = Clients(judge=make_judge(settings))
    return rubrics_now(load_rubrics(settings.rubrics.path).rubrics, clients)


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
        # Cascade rubrics' score series name their estimator (PPI++ where it stands).
        return render_metrics(
            rsync,
            store,
            key_prefix=settings.redis.key_prefix,
            queue_name=settings.redis.queue_name,
            score_estimates=score_estimates,
        )

    options = ServerOptions.from_settings(settings.server, max_body_bytes=o.max_body_mib << 20)
    server = make_server(
        store,
        host,
        port,
        assembler=assembler,
        metrics=metrics,
        options=options,
        price=settings.cost_usd,
        thresholds=pass_thresholds(settings.rubrics.path),
        pricing=settings.pricing,
        certification_now=_certification_now(settings),
    )
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
