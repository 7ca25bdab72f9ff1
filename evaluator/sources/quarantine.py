"""Refused traces and spans, made visible: counted in the intake stats hash (read by
`evaluator stats` and /metrics) and the latest ones kept with their cause in a capped list.

    stats hash `{prefix}:stats`:         quarantined                    all refusals
                                         quarantined:{source}:{cause}   per entry point, cause
    list `{prefix}:quarantine`:          newest first, QUARANTINE_KEEP JSON entries
                                         {"at", "source", "item", "cause", "reason"}

Counting is best effort: Redis being away must not turn a refusal into a failed request.
The intake drain counts the entries it quarantines under the same fields (source `intake`,
evaluator.intake.parking), keeping the raw entries in `{prefix}:intake:quarantine` instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from evaluator.intake.drain import stats_key

log = logging.getLogger("evaluator.sources.quarantine")
QUARANTINE_KEEP = 200
FIELD = "quarantined"


@dataclass(frozen=True, slots=True)
class Refusal:
    item: str  # "trace <id>", "span <trace>/<span>", "line 12"
    cause: str  # one of evaluator.traces.validate.CAUSES
    reason: str  # field and why


def quarantine_key(prefix: str) -> str:
    return f"{prefix}:quarantine"


def record_refusals(
    client: redis.Redis | None, prefix: str, source: str, refusals: Sequence[Refusal]
) -> None:
    if not refusals:
        return
    for r in refusals[:20]:  # a log line each, bounded: a hostile batch must not flood logs
        log.warning("%s: refused %s (%s): %s", source, r.item, r.cause, r.reason)
    if client is None:
        return
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(stats_key(prefix), FIELD, len(refusals))
    now = round(time.time(), 3)
    for r in refusals:
        pipe.hincrby(stats_key(prefix), f"{FIELD}:{source}:{r.cause}", 1)
    entries = [
        json.dumps(
            {
                "at": now,
                "source": source,
                "item": r.item,
                "cause": r.cause,
                "reason": r.reason[:500],
            }
        )
        for r in refusals[:QUARANTINE_KEEP]
    ]
    pipe.lpush(quarantine_key(prefix), *entries)
    pipe.ltrim(quarantine_key(prefix), 0, QUARANTINE_KEEP - 1)
    try:
        pipe.execute()
    except redis.RedisError:
        log.warning("%s: counting %d refusals in Redis failed", source, len(refusals))
