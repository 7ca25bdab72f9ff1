"""Erasure in Redis: every key under the prefix (and arq's keys) that names or holds a trace ID.

The SQL side (evaluator.store.erasure) deletes what is stored about the traces; Redis holds
work in flight and short-lived markers that name them: intake entries not yet drained, the
quarantine, held traces and their job arguments, in-batch markers, arq jobs and their queue
entries, and the judge budget's day ledger. Every key whose name mentions an erased ID is
deleted; in collections, only the members that mention it go:

- lists (intake, processing, quarantine): the entries that mention an ID;
- hashes: the fields whose name or value mentions an ID, except the budget ledger's, which
  are renamed with the SQL side's token (the admission still counts against the day's cap);
- sets and sorted sets (held traces, arq's queue): the members that mention an ID;
- strings (arq job payloads, markers): the key. A batch job that also carries other traces
  goes whole; their intents are still pending in SQL, so the sweeper queues them again.

Guarantee: after `erase_in_redis`, a SCAN of the prefix and of arq's keys finds no ID (a
mention is the ID not inside a longer ID, as JSON escapes it or raw). Not covered: a job a
worker is running at that moment may still write its record (docs/scaling.md, Erasure:
erase with the workers stopped, or again once the queue is idle).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from evaluator.budget.source import ledger_field

_LEDGER = ":budget:ledger:"


def _mention(ids: Sequence[str]) -> re.Pattern[bytes]:
    forms = {i.encode() for i in ids} | {json.dumps(i)[1:-1].encode() for i in ids}
    alternatives = b"|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rb"(?<![\w-])(?<!\w\.)(?:" + alternatives + rb")(?![\w-]|\.\w)")


def _renamed_ledger_field(field: bytes, tokens: Mapping[str, str]) -> bytes | None:
    parts = field.decode(errors="replace").split("\x1f")
    if len(parts) == 3 and parts[1] in tokens:
        return ledger_field(parts[0], tokens[parts[1]], parts[2]).encode()
    return None


async def erase_in_redis(
    redis: Any,  # redis.asyncio.Redis (bytes keys: its stubs say str)
    key_prefix: str,
    queue_name: str,
    trace_ids: Sequence[str],
    tokens: Mapping[str, str],
) -> int:
    """Remove every mention of `trace_ids` under the prefix, in arq's keys and in the queue;
    returns how many keys were deleted or changed. `tokens`: trace ID -> the token its
    budget admissions carry now (the SQL side's)."""
    if not trace_ids:
        return 0
    mention = _mention(trace_ids)
    touched = 0
    seen: set[bytes] = set()
    for pattern in (f"{key_prefix}*", "arq:*", queue_name):
        async for key in redis.scan_iter(match=pattern, count=1000):
            if key in seen:
                continue
            seen.add(key)
            touched += await _erase_key(redis, key, mention, tokens)
    return touched


async def _erase_key(
    redis: Any, key: bytes, mention: re.Pattern[bytes], tokens: Mapping[str, str]
) -> int:
    if mention.search(key):
        return int(await redis.delete(key))
    kind = (await redis.type(key)).decode()
    if kind == "string":
        value = await redis.get(key)
        return int(await redis.delete(key)) if value and mention.search(value) else 0
    if kind == "list":
        hits = {v for v in await redis.lrange(key, 0, -1) if mention.search(v)}
        for value in hits:
            await redis.lrem(key, 0, value)
        return int(bool(hits))
    if kind == "set":
        hits = {v for v in await redis.smembers(key) if mention.search(v)}
        return int(bool(hits) and bool(await redis.srem(key, *hits)))
    if kind == "zset":
        hits = {v for v in await redis.zrange(key, 0, -1) if mention.search(v)}
        return int(bool(hits) and bool(await redis.zrem(key, *hits)))
    if kind == "hash":
        return await _erase_fields(redis, key, mention, tokens)
    return 0


async def _erase_fields(
    redis: Any, key: bytes, mention: re.Pattern[bytes], tokens: Mapping[str, str]
) -> int:
    changed = 0
    ledger = _LEDGER.encode() in key
    for field, value in (await redis.hgetall(key)).items():
        if not (mention.search(field) or mention.search(value)):
            continue
        renamed = _renamed_ledger_field(field, tokens) if ledger else None
        if renamed is not None:
            await redis.hset(key, renamed, value)
        await redis.hdel(key, field)
        changed = 1
    return changed
