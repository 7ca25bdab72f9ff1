"""The per-process runtime: settings, store, rubrics and clients, built once at start-up."""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from redis.asyncio import Redis

from evaluator.analytics.alerts import regression_problems
from evaluator.budget.admission import BudgetGate
from evaluator.budget.plan import budget_plan
from evaluator.config.policy import inclusion_floor
from evaluator.config.redis_clients import async_redis
from evaluator.config.rubrics import RubricSet, load_rubrics
from evaluator.config.settings import Settings
from evaluator.errors import RubricError, SettingsError
from evaluator.intake.drain import SamplingConfig
from evaluator.outputs.langfuse import LangfuseScoreSink
from evaluator.outputs.metrics import MetricsRecorder
from evaluator.outputs.otel import EvaluationExporter
from evaluator.sampling import TailRules
from evaluator.sources.langfuse import LangfuseTraceSource
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.traces.model import Trace
from evaluator.worker.cascade_routing import CascadeRouter
from evaluator.worker.group_commit import GroupCommit, GroupRead
from evaluator.worker.judge_limits import RedisRateLimiter, RedisReplyCache
from evaluator.worker.two_stage import TwoStage
from judges.llm.client import JudgeClient, sdk_http_client
from judges.scorers.faithfulness import advisory_note
from judges.scorers.registry import escalates, identity_for, needs_judge, wants_embeddings
from judges.types import Clients

if TYPE_CHECKING:  # loaded only when configured (make_generator, make_embedder)
    from judges.llm.embedder import Embedder
    from judges.llm.generator import Generator

log = logging.getLogger("evaluator.worker.runtime")


def tail_rules(settings: Settings) -> TailRules:
    s = settings.sampling
    return TailRules(
        on_error=s.always_on_error,
        on_negative_feedback=s.always_on_negative_feedback,
        cost_above_usd=s.cost_above_usd,
        latency_above_ms=s.latency_above_ms,
    )


def sampling_config(settings: Settings, rubrics: RubricSet) -> SamplingConfig:
    """Without a budget intake only needs the widest rate: the job re-decides per rubric.
    With one, intake allocates per rubric and the job evaluates what it was given."""
    default = settings.sampling.default_rate
    rates = [default if r.sampling.rate is None else r.sampling.rate for r in rubrics.rubrics]
    return SamplingConfig(
        max_rate=max(rates, default=0.0),
        rules=tail_rules(settings),
        budget=budget_plan(settings, rubrics),
    )


class TraceSource(Protocol):
    """Where traces are read from when not the service's own table (e.g. Langfuse)."""

    def get_trace(self, trace_id: str) -> Trace | None: ...

    def close(self) -> None: ...


class RecordSink(Protocol):
    """Where a job's records go once committed (evaluator.outputs): `records` all it wrote
    (work done), `new` those not stored before (what an export sends). Never raises: a sink
    logs and swallows its own failures, so a record is never lost to a sink."""

    async def take(self, records: Sequence[EvalRecord], new: Sequence[EvalRecord]) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    store: Store
    rubrics: RubricSet
    clients: Clients
    redis: Redis | None = None
    # Where traces are read from: None for the service's own table, or e.g. Langfuse.
    source: TraceSource | None = None
    # Metrics, OTLP export, Langfuse scores: in that order (`record_sinks`).
    sinks: list[RecordSink] = field(default_factory=list)
    # With a judge budget: charges the judge calls of escalating rubrics (a cascade that
    # escalates) when they happen (evaluator.worker.escalation).
    budget: BudgetGate | None = None
    # Cascades ask it what their cheap stage may decide (certification, calibration draw).
    cascade_router: CascadeRouter | None = None

    @functools.cached_property
    def group_commit(self) -> GroupCommit:
        return GroupCommit(self.store)

    @functools.cached_property
    def group_read(self) -> GroupRead:
        return GroupRead(self.store)

    @property
    def otel(self) -> EvaluationExporter | None:
        """The OTLP exporter among the sinks: the alert jobs send their events through it."""
        return next((s for s in self.sinks if isinstance(s, EvaluationExporter)), None)

    @property
    def tail_rules(self) -> TailRules:
        return tail_rules(self.settings)

    def rate(self, rubric_rate: float | None) -> float:
        return self.settings.sampling.default_rate if rubric_rate is None else rubric_rate

    def inclusion_floors(self) -> dict[str, float]:
        """Each rubric's smallest possible inclusion probability, for the e-processes' bets."""
        plan = budget_plan(self.settings, self.rubrics)
        min_rate = self.settings.budget.min_rate if plan is not None else None
        return {
            r.name: inclusion_floor(self.rate(r.sampling.rate), min_rate)
            for r in self.rubrics.rubrics
        }

    @property
    def sampling(self) -> SamplingConfig:
        return sampling_config(self.settings, self.rubrics)

    async def aclose(self) -> None:
        for sink in self.sinks:
            try:
                await sink.aclose()
            except Exception:  # e.g. Redis gone at shut-down: the last counts are lost
                log.warning("%s: could not close", type(sink).__name__, exc_info=True)
        if self.clients.judge is not None:
            await self.clients.judge.aclose()
        if self.clients.generator is not None:
            await self.clients.generator.aclose()
        if self.source is not None:
            self.source.close()
        self.store.close()
        if self.redis is not None:
            await self.redis.aclose()


def make_judge(
    settings: Settings, redis: Redis | None = None, recorder: MetricsRecorder | None = None
) -> JudgeClient | None:
    j = settings.judge
    if not j.configured:
        return None
    prefix = f"{settings.redis.key_prefix}:judge"
    limiter = None
    if redis is not None and (j.rpm_limit or j.tpm_limit):
        limiter = RedisRateLimiter(redis, name=f"{prefix}:limit", rpm=j.rpm_limit, tpm=j.tpm_limit)
    cache = None
    if redis is not None and j.cache_ttl_s:
        namespace = j.cache_namespace or f"{prefix}:cache"
        cache = RedisReplyCache(redis, prefix=namespace, ttl_s=j.cache_ttl_s)
    return JudgeClient(
        base_url=j.base_url,
        model=j.model,
        api_key=j.api_key(),
        timeout_s=j.timeout_s,
        max_retries=j.max_retries,
        max_concurrency=j.max_concurrency,
        initial_concurrency=min(j.initial_concurrency, j.max_concurrency),
        response_format=j.response_format,
        system_role=j.system_role,
        temperature=j.temperature,
        max_output_tokens=j.max_output_tokens,
        price=settings.cost_usd,
        rate_limiter=limiter,
        cache=cache,
        max_wait_s=j.max_wait_s,
        on_event=recorder.judge_event if recorder is not None else None,
        http_transport=j.http_transport,
    )


def make_generator(settings: Settings, judge: JudgeClient | None = None) -> Generator | None:
    g = settings.generator
    base_url = g.base_url or settings.judge.base_url
    if not base_url:
        return None
    from judges.llm.generator import Generator
    from judges.provenance import endpoint_of

    # One endpoint, one capacity: the generator takes slots of the judge's adaptive limit.
    shared = judge.concurrency if judge and endpoint_of(base_url) == judge.endpoint else None

    return Generator(
        base_url=base_url,
        api_key=g.api_key() if g.base_url else settings.judge.api_key(),
        timeout_s=g.timeout_s,
        max_retries=settings.judge.max_retries,
        temperature=g.temperature,
        max_output_tokens=g.max_output_tokens,
        price=settings.cost_usd,
        http_client=sdk_http_client(g.http_transport),
        concurrency=shared,
    )


def make_embedder(rubrics: RubricSet) -> Embedder | None:
    """An embedder only when a rubric can use one and the optional extra is installed."""
    wanted = any(wants_embeddings(r) for r in rubrics.rubrics)
    if not wanted or importlib.util.find_spec("sentence_transformers") is None:
        return None
    from judges.llm.embedder import Embedder

    return Embedder()


def build_runtime(settings: Settings) -> Runtime:
    rubrics = load_rubrics(settings.rubrics.path)
    problems = regression_problems(rubrics.rubrics, settings.alerts)
    if problems:  # refuse at start-up, not at the first cron run
        raise RubricError(problems)
    if not settings.judge.configured:
        for rubric in rubrics.rubrics:
            if needs_judge(rubric):  # say it once at start, not only in every skipped record
                log.warning(
                    "rubric %s uses method %r, which needs a judge, and none is configured: "
                    "every trace it samples will be recorded as skipped "
                    "(set EVALUATOR_JUDGE__BASE_URL, or use a local method)",
                    rubric.name,
                    rubric.resolved_method,
                )
        cascades = [r.name for r in rubrics.rubrics if escalates(r)]
        if cascades:  # no certification can ever be computed: say so once, not per record
            log.warning(advisory_note(cascades))
    redis = async_redis(settings)
    # Counts reach Redis once a second per process, not once per job (Prometheus scrapes
    # every 15 s or so); close() writes the rest.
    recorder = MetricsRecorder(redis, key_prefix=settings.redis.key_prefix, flush_interval_s=1.0)
    plan = budget_plan(settings, rubrics)
    prefix = settings.redis.key_prefix
    store = Store(settings.database.url, echo=settings.database.echo)
    budget = (
        None
        if plan is None
        else BudgetGate(redis, key_prefix=prefix, plan=plan, engine=store.engine)
    )
    judge = make_judge(settings, redis, recorder)
    clients = Clients(
        judge=judge,
        generator=make_generator(settings, judge),
        embedder=make_embedder(rubrics),
    )
    for rubric in rubrics.rubrics:
        # Imports each scorer's module and renders its probe prompts now, not in the first
        # jobs (~0.3 s of CPU that would otherwise land on live traffic).
        identity_for(rubric, clients)
    return Runtime(
        settings=settings,
        store=store,
        rubrics=rubrics,
        clients=clients,
        redis=redis,
        source=trace_source(settings),
        sinks=record_sinks(settings, recorder),
        budget=budget,
        cascade_router=cascade_router(settings, store, rubrics, clients),
    )


def cascade_router(
    settings: Settings, store: Store, rubrics: RubricSet, clients: Clients
) -> CascadeRouter | None:
    """The certification source for cascades (None when no rubric is one)."""
    if not any(escalates(r) for r in rubrics.rubrics):
        return None
    from evaluator.store.certifications import active_certifications

    return CascadeRouter(
        source=lambda: active_certifications(store),
        rubric_of=rubrics.by_name,
        clients=clients,
        ttl_s=settings.worker.certifications_ttl_s,
        two_stage=TwoStage(settings.two_stage),
    )


def record_sinks(settings: Settings, recorder: MetricsRecorder) -> list[RecordSink]:
    """Where committed records go: metrics, then the OTLP export and Langfuse scores when
    configured."""
    sinks: list[RecordSink] = [recorder]
    e, lf = settings.otel_export, settings.langfuse
    if e.endpoint:
        sinks.append(EvaluationExporter(e.endpoint, headers=e.headers, timeout_s=e.timeout_s))
    if lf.base_url and lf.write_scores:
        sinks.append(LangfuseScoreSink(lf.base_url, *_langfuse_keys(settings)))
    return sinks


def trace_source(settings: Settings) -> TraceSource | None:
    """Langfuse when it is configured as the trace source; None: the service's own table."""
    lf = settings.langfuse
    if not (lf.base_url and lf.trace_source):
        return None
    return LangfuseTraceSource(lf.base_url, *_langfuse_keys(settings))


def _langfuse_keys(settings: Settings) -> tuple[str, str]:
    lf = settings.langfuse
    public, secret = lf.keys()
    if not public or not secret:
        raise SettingsError(
            f"langfuse.base_url is set but {lf.public_key_env} / {lf.secret_key_env} "
            "are not both in the environment"
        )
    return public, secret
