"""Prometheus metrics for `GET /metrics`, computed from shared state only.

Several workers on several hosts serve the same queue, so nothing here lives in process
memory: counters are Redis hash fields that every worker increments (`MetricsRecorder`),
gauges are read at scrape time from Redis (queue depth) and SQL (current scores, open
alerts). Any process that can reach both can serve the same numbers.

The score gauges carry the evaluator epoch (judges.provenance) as a label, so a judge swap
starts a new series instead of showing as a drop of the old one. Its cardinality stays low:
a rubric has a handful of epochs over its life (one per judge model, prompt or scorer
change), and only epochs with ok records inside the window are exported.

    evaluator_intake_received_total                  IDs popped from the intake list
    evaluator_intake_invalid_total                   entries that could not be decoded
    evaluator_sampling_decisions_total{reason}       rate / tail_* / not_sampled
    evaluator_jobs_created_total                     traces queued in arq jobs by intake
    evaluator_intake_pending                         IDs waiting in the intake list
    evaluator_queue_depth                            arq jobs queued
    evaluator_intake_held_back_total                 sampled traces whose job waited for room
                                                     in the queue (worker.max_queue_depth)
    evaluator_intents_pending                        sampled traces not evaluated yet (SQL):
                                                     the backlog while the judge is slow/down
    evaluator_evaluations_total{rubric,status}       rubric runs, ok / error / skipped
    evaluator_evaluation_duration_seconds{rubric}    scoring time per rubric run (histogram;
                                                     judge calls dominate it)
    evaluator_judge_calls_total{rubric}
    evaluator_judge_tokens_total{rubric,direction}   direction = input | output
    evaluator_judge_cost_usd_total{rubric}
    evaluator_judge_cache_total{rubric,result}       judge replies served from the reply cache
                                                     (hit) or asked of the judge (miss)
    evaluator_judge_rate_limited_total               HTTP 429 answers from the judge
    evaluator_judge_retries_total                    retried judge calls
    evaluator_judge_concurrency_increase_total       the adaptive judge concurrency limit grew
    evaluator_judge_concurrency_decrease_total       ... or was cut (timeouts, 429/503, latency);
                                                     each worker's current limit is in its
                                                     heartbeat (`evaluator health`)
    evaluator_score{rubric,prompt_version,epoch}     mean score of ok records, last window
    evaluator_score_samples{rubric,prompt_version,epoch}
                                                     how many records that mean is over
    evaluator_score_ci_lower{rubric,prompt_version,epoch}
    evaluator_score_ci_upper{rubric,prompt_version,epoch}
                                                     its 95 % interval (evalcore.intervals:
                                                     Wilson for 0/1 scores, Student t else)
    evaluator_records{status}                        stored eval records
    evaluator_alerts_open{rubric}                    open regression alerts
    evaluator_quarantined_total{source,cause}        traces/spans refused at an entry point
                                                     (evaluator.sources.quarantine)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.asyncio import Redis as AsyncRedis
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from evalcore.intervals import GroupStats
from evalcore.weights import WeightedStats
from evaluator.intake.drain import stats_key
from evaluator.intake.enqueue import intake_key
from evaluator.sampling import Reason
from evaluator.store import outbox
from evaluator.store.models import AlertRecord, EvalRecord, record_weight, utcnow
from evaluator.store.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCORE_CI_LEVEL = 0.95  # the level trends and the page use too
# Seconds; judge calls take 0.5–30 s, local scorers milliseconds.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
log = logging.getLogger("evaluator.outputs.metrics")
SEP = "\x1f"  # field separator inside the Redis hash; never in rubric names or statuses
_REASONS = frozenset(r.value for r in Reason)


def metrics_key(prefix: str) -> str:
    return f"{prefix}:metrics"


def _bucket(seconds: float) -> str:
    return next((str(b) for b in BUCKETS if seconds <= b), "+Inf")


class MetricsRecorder:
    """Counts what workers did, in one Redis hash shared by all of them.

    recorder = MetricsRecorder(redis, key_prefix=settings.redis.key_prefix)
    await recorder.observe(records)          # after the pipeline wrote them
    await recorder.judge_event("rate_limited")
    await recorder.aclose()                  # at shut-down: writes what is left

    With `flush_interval_s` > 0 the counts are summed in the process and written every
    interval by a background task (one pipeline of a few HINCRBYs instead of ~7 per record
    per job); `aclose()` writes the rest. A process killed with SIGKILL loses at most one
    interval of counts. 0 writes on every call.
    """

    def __init__(
        self, redis_client: AsyncRedis, *, key_prefix: str, flush_interval_s: float = 0.0
    ) -> None:
        self._redis = redis_client
        self._key = metrics_key(key_prefix)
        self._interval = flush_interval_s
        self._counts: dict[str, int] = {}
        self._sums: dict[str, float] = {}
        self._timer: asyncio.Task[None] | None = None

    async def observe(self, records: Iterable[EvalRecord]) -> None:
        counts, sums = self._counts, self._sums
        for r in records:
            seconds = r.latency_ms / 1000
            fields: list[tuple[str, int]] = [
                (f"evals{SEP}{r.rubric}{SEP}{r.status}", 1),
                # Non-cumulative bucket counts; the scrape side makes them cumulative.
                (f"lat{SEP}{r.rubric}{SEP}{_bucket(seconds)}", 1),
            ]
            totals: list[tuple[str, float]] = [(f"latsum{SEP}{r.rubric}", seconds)]
            if r.judge_calls:
                fields += [
                    (f"calls{SEP}{r.rubric}", r.judge_calls),
                    (f"tok{SEP}{r.rubric}{SEP}input", r.judge_input_tokens),
                    (f"tok{SEP}{r.rubric}{SEP}output", r.judge_output_tokens),
                ]
                totals.append((f"cost{SEP}{r.rubric}", r.judge_cost_usd))
            for result, key in (("hit", "judge_cache_hits"), ("miss", "judge_cache_misses")):
                n = r.details.get(key)
                if isinstance(n, int) and n:
                    fields.append((f"cache{SEP}{r.rubric}{SEP}{result}", n))
            for field, n in fields:
                counts[field] = counts.get(field, 0) + n
            for field, x in totals:
                sums[field] = sums.get(field, 0.0) + x
        if self._interval <= 0:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(
                self._flush_every(), name="evaluator-metrics-flush"
            )

    async def take(self, records: Sequence[EvalRecord], new: Sequence[EvalRecord]) -> None:
        """As a record sink: counts every record a job wrote, new or not (work done)."""
        try:
            await self.observe(records)
        except Exception:
            log.warning(
                "metrics: flush to Redis failed; the counts are kept for the next one",
                exc_info=True,
            )

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # Redis away for a moment: the counts wait for the next tick
                log.warning("metrics: flush to Redis failed; kept for the next one", exc_info=True)

    async def aclose(self) -> None:
        """Stop the background flush and write what is left."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self.flush()

    async def judge_event(self, kind: str, n: int = 1) -> None:
        """`rate_limited` (an HTTP 429), `retries` (a retried call) or
        `concurrency_increase` / `concurrency_decrease`: written at once."""
        # redis-py types hincrby as sync-or-async (Awaitable | int); this client is async.
        await self._redis.hincrby(self._key, f"judge{SEP}{kind}", n)  # type: ignore[misc]

    async def flush(self) -> None:
        """Write the counts summed since the last flush; kept for the next one on failure."""
        counts, sums = self._counts, self._sums
        if not counts and not sums:
            return
        self._counts, self._sums = {}, {}
        pipe = self._redis.pipeline(transaction=False)
        for field, n in counts.items():
            pipe.hincrby(self._key, field, n)
        for field, x in sums.items():
            pipe.hincrbyfloat(self._key, field, x)
        try:
            await pipe.execute()
        except BaseException:
            # Not written (or not known to be): count them again next time rather than lose
            # them. A pipeline that half-applied would double-count; metrics accept that.
            for field, n in counts.items():
                self._counts[field] = self._counts.get(field, 0) + n
            for field, x in sums.items():
                self._sums[field] = self._sums.get(field, 0.0) + x
            raise


def _redis_families(
    counters: dict[str, float], intake: dict[str, float], pending: int, queued: int
) -> Iterator[Metric]:
    for field, name, doc in (
        ("received", "evaluator_intake_received", "Trace IDs popped from the intake list."),
        ("invalid", "evaluator_intake_invalid", "Intake entries that could not be decoded."),
        ("jobs_created", "evaluator_jobs_created", "Traces queued in evaluation jobs by intake."),
        ("held_back", "evaluator_intake_held_back", "Jobs held back: the queue was full."),
    ):
        yield CounterMetricFamily(name, doc, value=intake.get(field, 0))
    decisions = CounterMetricFamily(
        "evaluator_sampling_decisions", "Sampling decisions by reason.", labels=["reason"]
    )
    for reason, n in sorted(intake.items()):
        if reason in _REASONS:  # the hash holds other counters too
            decisions.add_metric([reason], n)
    yield decisions
    quarantined = CounterMetricFamily(
        "evaluator_quarantined",
        "Traces or spans refused at an entry point, by cause.",
        labels=["source", "cause"],
    )
    for field, n in sorted(intake.items()):
        kind, _, rest = field.partition(":")
        if kind == "quarantined" and rest.count(":") == 1:  # quarantined:{source}:{cause}
            quarantined.add_metric(rest.split(":"), n)
    yield quarantined
    yield GaugeMetricFamily("evaluator_intake_pending", "IDs in the intake list.", value=pending)
    yield GaugeMetricFamily("evaluator_queue_depth", "Evaluation jobs queued.", value=queued)

    evals = CounterMetricFamily(
        "evaluator_evaluations", "Rubric runs by outcome.", labels=["rubric", "status"]
    )
    calls = CounterMetricFamily("evaluator_judge_calls", "Judge calls.", labels=["rubric"])
    tokens = CounterMetricFamily(
        "evaluator_judge_tokens", "Judge tokens.", labels=["rubric", "direction"]
    )
    cost = CounterMetricFamily("evaluator_judge_cost_usd", "Judge cost in USD.", labels=["rubric"])
    cache = CounterMetricFamily(
        "evaluator_judge_cache",
        "Judge replies served from the reply cache (hit) or asked of the judge (miss).",
        labels=["rubric", "result"],
    )
    buckets: dict[str, dict[str, float]] = {}
    sums: dict[str, float] = {}
    for field, value in sorted(counters.items()):
        kind, *labels = field.split(SEP)
        if kind == "evals":
            evals.add_metric(labels, value)
        elif kind == "calls":
            calls.add_metric(labels, value)
        elif kind == "tok":
            tokens.add_metric(labels, value)
        elif kind == "cost":
            cost.add_metric(labels, value)
        elif kind == "cache":
            cache.add_metric(labels, value)
        elif kind == "lat":
            buckets.setdefault(labels[0], {})[labels[1]] = value
        elif kind == "latsum":
            sums[labels[0]] = value
    yield from (evals, calls, tokens, cost, cache)
    histogram = HistogramMetricFamily(
        "evaluator_evaluation_duration_seconds",
        "Time to score one trace with one rubric (judge calls included).",
        labels=["rubric"],
    )
    for rubric, counts in sorted(buckets.items()):
        running, cumulative = 0.0, []
        for bound in [*(str(b) for b in BUCKETS), "+Inf"]:
            running += counts.get(bound, 0)
            cumulative.append((bound, running))
        histogram.add_metric([rubric], cumulative, sum_value=sums.get(rubric, 0.0))
    yield histogram
    for kind, doc in (
        ("rate_limited", "Judge answers with HTTP 429."),
        ("retries", "Judge calls retried."),
        ("concurrency_increase", "Adaptive judge concurrency limit raised by one."),
        ("concurrency_decrease", "Adaptive judge concurrency limit cut (timeout, 429, latency)."),
    ):
        value = counters.get(f"judge{SEP}{kind}", 0)
        yield CounterMetricFamily(f"evaluator_judge_{kind}", doc, value=value)


ScoreSums = tuple[
    str,
    str | None,
    str,
    int,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
]
# (store, rubrics, since, until) -> {(rubric, prompt version, epoch): a trend total's shown
# numbers}: `evaluator.analytics.ppi_trends.score_estimates`, handed in by the entry point
# (outputs sit below analytics in the layers).
ScoreEstimates = Callable[
    [Store, list[str], datetime, datetime], Mapping[tuple[str, str, str], Mapping[str, Any]]
]


def _score_families(
    rows: Iterable[ScoreSums],
    window: timedelta,
    estimates: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None,
) -> Iterator[Metric]:
    """Mean, count, interval and ESS per (rubric, prompt version, epoch) from SQL sums
    (pure). Records weigh 1/p as in trends and the regression check (evalcore.weights): the
    Hájek mean, its interval with the ESS for n; every p = 1 gives the plain numbers.
    `estimates` (a cascade rubric's, `ppi_trends.window_estimates`): that series' mean,
    interval and ESS are the trend total's instead, with an `estimator` label (ppi++, hajek
    over the judged records, or all-records); other series keep their labels."""
    labels = ["rubric", "prompt_version", "epoch"]
    where = f"ok records in the last {window}, per evaluator epoch (never pooled across judges)"
    level = f"{SCORE_CI_LEVEL:.0%}"
    score = GaugeMetricFamily(
        "evaluator_score",
        f"Mean normalised score of {where}, each record weighted by 1/inclusion probability.",
        labels=labels,
    )
    samples = GaugeMetricFamily(
        "evaluator_score_samples", "Records behind evaluator_score.", labels=labels
    )
    ess = GaugeMetricFamily(
        "evaluator_score_ess",
        "Effective sample size (sum w)^2 / sum w^2 behind evaluator_score (= samples when "
        "every inclusion probability is 1).",
        labels=labels,
    )
    lower, upper = (
        GaugeMetricFamily(
            f"evaluator_score_ci_{side}",
            f"{side.capitalize()} bound of the {level} interval of evaluator_score "
            "(Wilson for 0/1 scores, Student t otherwise; the ESS in place of n).",
            labels=labels,
        )
        for side in ("lower", "upper")
    )
    for rubric, version, epoch, n, total, total_sq, w_sum, w_total, w_total_sq, w_sq in rows:
        plain = GroupStats(int(n), float(total or 0.0), float(total_sq or 0.0))
        w = WeightedStats(
            int(n),
            float(w_sum or 0.0),
            float(w_total or 0.0),
            float(w_total_sq or 0.0),
            float(w_sq or 0.0),
        )
        stats: GroupStats | WeightedStats = plain if w.unit else w
        values = [rubric, version or "", epoch]
        samples.add_metric(values, n)
        got = (estimates or {}).get((rubric, version or "", epoch))
        if got is not None and got.get("mean") is not None:
            named = {**dict(zip(labels, values, strict=True)), "estimator": got["estimator"]}
            for family, key in (
                (score, "mean"),
                (lower, "ci_low"),
                (upper, "ci_high"),
                (ess, "ess"),
            ):
                family.add_sample(family.name, named, float(got.get(key) or 0.0))
            continue
        score.add_metric(values, stats.mean if n else 0.0)
        ess.add_metric(values, float(n) if w.unit else w.ess)
        lo, hi = stats.mean_ci(SCORE_CI_LEVEL)
        lower.add_metric(values, lo)
        upper.add_metric(values, hi)
    yield from (score, samples, lower, upper, ess)


def _sql_families(
    store: Store, window: timedelta, score_estimates: ScoreEstimates | None = None
) -> Iterator[Metric]:
    since = utcnow() - window
    records = GaugeMetricFamily("evaluator_records", "Stored eval records.", labels=["status"])
    alerts = GaugeMetricFamily("evaluator_alerts_open", "Open alerts.", labels=["rubric"])
    score = col(EvalRecord.score)
    w = record_weight()
    # More columns than sqlmodel's select() types: the SQLAlchemy core form.
    sums = (
        sa_select(
            col(EvalRecord.rubric),
            col(EvalRecord.prompt_version),
            col(EvalRecord.epoch),
            func.count(score),
            func.sum(score),
            func.sum(score * score),
            func.sum(w),
            func.sum(w * score),
            func.sum(w * score * score),
            func.sum(w * w),
        )
        .where(col(EvalRecord.status) == "ok", col(EvalRecord.created_at) >= since)
        .group_by(col(EvalRecord.rubric), col(EvalRecord.prompt_version), col(EvalRecord.epoch))
    )
    with Session(store.engine) as session:
        rows = session.connection().execute(sums).all()
        rubrics = sorted({row[0] for row in rows})
        named = score_estimates(store, rubrics, since, utcnow()) if score_estimates else None
        families = list(_score_families(rows, window, named))
        for status, n in session.exec(
            select(EvalRecord.status, func.count()).group_by(EvalRecord.status)
        ).all():
            records.add_metric([status], n)
        for rubric, n in session.exec(
            select(AlertRecord.rubric, func.count())
            .where(AlertRecord.status == "open")
            .group_by(AlertRecord.rubric)
        ).all():
            alerts.add_metric([rubric], n)
    pending = GaugeMetricFamily(
        "evaluator_intents_pending",
        "Sampled traces not evaluated yet: the backlog while the judge is slow or down.",
        value=outbox.count_intents(store.engine, outbox.PENDING),
    )
    yield from (*families, records, alerts, pending)


class _Snapshot:
    """A one-scrape collector over values already read (prometheus_client's interface)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _numbers(raw: dict[bytes, bytes]) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in raw.items()}


def render_metrics(
    redis_client: redis.Redis,
    store: Store,
    *,
    key_prefix: str,
    queue_name: str,
    score_window: timedelta = timedelta(hours=24),
    score_estimates: ScoreEstimates | None = None,
) -> bytes:
    """The exposition text for one scrape; serve it with `CONTENT_TYPE`. `score_estimates`
    (`evaluator.analytics.ppi_trends.score_estimates`): cascade rubrics' score series carry
    the trend's estimator (PPI++ where it stands); without it every series is today's."""
    pipe = redis_client.pipeline(transaction=False)
    pipe.hgetall(metrics_key(key_prefix))
    pipe.hgetall(stats_key(key_prefix))
    pipe.llen(intake_key(key_prefix))
    pipe.zcard(queue_name)
    counters, intake, pending, queued = pipe.execute()
    families = list(
        _redis_families(_numbers(counters), _numbers(intake), int(pending), int(queued))
    )
    families += _sql_families(store, score_window, score_estimates)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)
