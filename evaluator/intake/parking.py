"""Where popped intake entries wait until their intents are committed, and where entries
that can never be processed go (the quarantine).

Each worker parks its batch in `{prefix}:intake:processing:{worker}`. The pop returns that
list again while it is non-empty, so a worker whose drain failed (database down) retries its
own batch before taking new entries, however fresh its heartbeat. A worker that died leaves
its list behind; the sweeper hands it back to the intake list once the heartbeat expires.

An entry that can never be processed (not UTF-8, a bad ID, signals that are not a JSON
object, or refused by the database) is kept as it came in `{prefix}:intake:quarantine` and
counted in the intake stats hash (`evaluator stats`, /metrics): `invalid`, and with the
other entry points' refusals (evaluator.sources.quarantine) `quarantined` and
`quarantined:intake:{cause}` (a cause of evaluator.traces.validate.CAUSES).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from evaluator.errors import WireError
from evaluator.intake.enqueue import intake_key
from evaluator.intake.wire import MAX_ID_LENGTH, decode_entry
from evaluator.store.outbox import Intent, record_intents

log = logging.getLogger("evaluator.intake.parking")

PROCESSING_TTL_S = 120
QUARANTINE_MAX = 10_000  # newest kept; older bad entries are only counted


def processing_prefix(prefix: str) -> str:
    return f"{prefix}:intake:processing:"


def alive_prefix(prefix: str) -> str:
    return f"{prefix}:intake:alive:"


def quarantine_key(prefix: str) -> str:
    return f"{prefix}:intake:quarantine"


# KEYS: intake, processing, alive. The parked batch first (a failed drain's), else pop up to
# ARGV[1] entries and park them; the heartbeat is refreshed either way.
POP_TO_PROCESSING_LUA = """
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
local parked = redis.call('LRANGE', KEYS[2], 0, -1)
if #parked > 0 then return parked end
local items = redis.call('LPOP', KEYS[1], ARGV[1])
if not items then return {} end
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
return items
"""

# Give an abandoned processing list (its worker's heartbeat expired) back to the intake list.
_RECOVER_LUA = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #items, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('DEL', KEYS[2])
return #items
"""


async def recover_abandoned(redis: Redis, key_prefix: str) -> int:
    """Return entries parked by dead workers to the intake list; how many were returned."""
    script = redis.register_script(_RECOVER_LUA)
    returned = 0
    async for key in redis.scan_iter(match=f"{processing_prefix(key_prefix)}*"):
        worker_id = key.decode().rsplit(":", 1)[-1]
        returned += int(
            await script(
                keys=[intake_key(key_prefix), key, f"{alive_prefix(key_prefix)}{worker_id}"]
            )
        )
    return returned


def cause_of(entry: bytes) -> tuple[str, str]:
    """(cause, reason) of a quarantined entry; one that decodes was refused by the database."""
    try:
        decode_entry(entry)
    except WireError as exc:
        reason = str(exc)
        if "not UTF-8" in reason:
            return "format", reason
        trace_id = entry.partition(b"\x1f")[0]
        if b"\x00" in trace_id:
            return "nul", reason
        if len(trace_id.decode("utf-8", "replace")) > MAX_ID_LENGTH:
            return "oversize", reason
        return "format", reason
    except RecursionError:
        return "depth", "signals nested too deep"
    except Exception as exc:  # any bytes may be in the list
        return "format", f"{type(exc).__name__}: {exc}"
    return "refused", "refused by the database"


async def quarantine(redis: Redis, key_prefix: str, entries: Sequence[bytes]) -> None:
    """Keep entries that cannot be processed for inspection (bounded), out of the intake,
    and count each by cause (the caller counts them as `invalid` with its batch)."""
    key = quarantine_key(key_prefix)
    stats = f"{key_prefix}:stats"  # evaluator.intake.drain.stats_key
    pipe = redis.pipeline(transaction=False)
    pipe.rpush(key, *entries)
    pipe.ltrim(key, -QUARANTINE_MAX, -1)
    pipe.hincrby(stats, "quarantined", len(entries))
    for entry in entries:  # the drain logged each entry with its reason
        pipe.hincrby(stats, f"quarantined:intake:{cause_of(entry)[0]}", 1)
    await pipe.execute()


def _unreachable(exc: SQLAlchemyError) -> bool:
    # Connection-level failures are the database's, not an entry's: the batch must wait.
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def record_tolerantly(engine: Engine, intents: Sequence[Intent]) -> list[Intent]:
    """Record the intents; returns those the database refuses one by one (bad data).

    Raises when the database is unreachable, so the caller keeps the batch parked.
    """
    try:
        record_intents(engine, intents)
        return []
    except SQLAlchemyError as exc:
        if _unreachable(exc):
            raise
        log.warning("intake: a batch of %d intents was refused (%s); one by one", len(intents), exc)
    refused = []
    for intent in intents:
        try:
            record_intents(engine, [intent])
        except SQLAlchemyError as exc:
            if _unreachable(exc):
                raise
            log.error("intake: intent %s refused by the database: %s", intent.id, exc)
            refused.append(intent)
    return refused
