"""Cap windows: rate draws wait for their window to close and are admitted by random key.

With a database, a budgeted drain (evaluator.intake.drain) records in ONE transaction the
intents of the tail traces the cap admitted now, their admission rows, and the rate draws
as offers to the current cap window (evaluator.store.admissions). When a window has ended,
the next drain of any worker closes it (`close_due`), once, in one transaction:

1. claim the window and read its offers;
2. the room the caps leave now (the admission script's own rules, BudgetGate.room);
3. split it over the window's strata and pick, per stratum, the offers of lowest random key
   (evaluator.budget.allocation.window_quotas: the guarantee is stated there);
4. charge the admitted evaluations through the admission script, all or none (a concurrent
   tail admission that took room in between: the transaction is rolled back and the close
   tried again with the new room);
5. write their intents — each carries the REALISED inclusion probability p_draw × q_s / n_s
   under `pi` — and their admission rows, checked against the day's caps in SQL;
6. drop the window's offers; the jobs are created after the commit (the sweeper re-creates
   any that are not).

So every record of a rate draw is written after its window closed, with a probability that
no later event changes: trends and e-processes see it at most one window (plus the judge's
time) after its trace arrived. A worker's drain closes due windows before it pops, looking
at the first drain of each window and then once a second (CHECK_EVERY_S), so the lag is at
most one window plus a second (plus a drain period and the judge's time).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from sqlalchemy.engine import Connection, Engine

from evaluator.budget.admission import BudgetGate
from evaluator.budget.allocation import window_quotas
from evaluator.budget.source import ledger_field, rebuild
from evaluator.sampling import hash_point
from evaluator.store import admissions, outbox
from evaluator.store.admissions import SHARED, Admission, Offer, OverCap

log = logging.getLogger("evaluator.budget.windows")

CLOSE_TRIES = 3
CHECK_EVERY_S = 1.0  # how often a worker asks SQL whether a window is due, within a window


class _Raced(Exception):
    """The admission script refused the window's pick: a concurrent admission took room."""


def window_of(gate: BudgetGate, now_s: float) -> int:
    return int(now_s // gate.plan.window_s)


def priority_key(trace_id: str, rubric: str, window: int) -> float:
    """The random key that orders a stratum's offers (lowest first): a hash independent of
    the draw's (hash_point of the trace ID alone)."""
    text = "\x1f".join(("budget-key", trace_id, rubric, str(window)))
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


async def record_drain(
    engine: Engine,
    gate: BudgetGate,
    intents: Sequence[outbox.Intent],
    rows: Sequence[Admission],
    offers: Sequence[Offer],
    now_s: float,
) -> None:
    """The drain's writes in one transaction: tail intents, their admission rows, offers.
    Raises (the drain keeps its batch parked) when the database refuses; on OverCap (Redis
    was behind SQL) after forgetting the counters' source, so the retry is admitted against
    counters rebuilt from SQL."""

    def write() -> None:
        with engine.begin() as conn:
            outbox.insert_intents(conn, intents)
            admissions.admit(conn, rows, gate.day_caps)
            admissions.offer(conn, offers, window_of(gate, now_s))

    try:
        await asyncio.to_thread(write)
    except OverCap:
        await gate.resync()
        raise


async def close_due(gate: BudgetGate, engine: Engine, now_s: float) -> list[outbox.Intent]:
    """Close every window that has ended and still holds offers; returns the intents of the
    admitted traces (their jobs are the caller's to create). Asks SQL at the first drain of
    each window and then at most every CHECK_EVERY_S (an idle worker drains many times a
    second): a window closes at most that long after its end (plus a drain period)."""
    current = window_of(gate, now_s)
    last_window, last_at = gate.windows_checked
    if current == last_window and 0 <= now_s - last_at < min(CHECK_EVERY_S, gate.plan.window_s):
        return []
    gate.windows_checked = (current, now_s)
    due = await asyncio.to_thread(admissions.due_windows, engine, current)
    out: list[outbox.Intent] = []
    for window in due:
        out.extend(await _close(gate, engine, window, now_s))
    return out


async def _close(
    gate: BudgetGate, engine: Engine, window: int, now_s: float
) -> list[outbox.Intent]:
    loop = asyncio.get_running_loop()

    def wait(coro: Any) -> Any:  # run a coroutine on the loop from the closing thread
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, loop)
        return future.result(timeout=60)

    for _ in range(CLOSE_TRIES):
        try:
            decided = await asyncio.to_thread(_close_sync, gate, engine, window, now_s, wait)
        except _Raced:
            continue
        except OverCap:
            await gate.resync()  # Redis was behind SQL: rebuilt before the next admission
            continue
        if decided is None:
            return []
        intents, counts = decided
        pipe = gate.redis.pipeline(transaction=False)
        for name, n in counts.items():
            if n:
                pipe.hincrby(f"{gate.key_prefix}:stats", name, n)
        await pipe.execute()
        return intents
    log.warning("budget: window %d not closed after %d tries; the next drain tries", window, 3)
    return []


def _close_sync(
    gate: BudgetGate, engine: Engine, window: int, now_s: float, wait: Any
) -> tuple[list[outbox.Intent], Counter[str]] | None:
    with engine.begin() as conn:
        offers = admissions.claim_window(conn, window)
        if offers is None:
            return None  # another worker closed it
        picked = _pick(gate, offers, window, wait(_rooms(gate, now_s)))
        return _admit(gate, conn, window, offers, picked, now_s, wait)


async def _rooms(gate: BudgetGate, now_s: float) -> dict[str, int | None]:
    """Each scope's room now (None: no cap), from the counters the script checks (rebuilt
    from SQL first when Redis lost them)."""
    if await gate.redis.get(gate.source_key) is None:
        await rebuild(gate, now_s)
    scopes = [SHARED, *(r.name for r in gate.plan.rubrics)]
    day, minute = int(now_s // admissions.DAY_S), int(now_s // 60)
    pipe = gate.redis.pipeline(transaction=False)
    pipe.mget([f"{gate.prefix}:used:{s}:d:{day}" for s in scopes])
    pipe.mget([f"{gate.prefix}:used:{s}:m:{minute}" for s in scopes])
    used_day, used_minute = await pipe.execute()
    return {
        s: gate.room(s, int(d or 0), int(m or 0), now_s)
        for s, d, m in zip(scopes, used_day, used_minute, strict=True)
    }


def _pick(
    gate: BudgetGate,
    offers: Sequence[admissions.BudgetOffer],
    window: int,
    rooms: dict[str, int | None],
) -> dict[tuple[str, str], float]:
    """{(trace, rubric): realised p} of the offers the window admits (charged rubrics by
    quota; escalating ones, charged when they escalate, with their drawn p)."""
    by_stratum: dict[str, dict[str, list[tuple[float, str, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    picked: dict[tuple[str, str], float] = {}
    for o in offers:
        for rubric, (stratum, p, escalates) in o.draws.items():
            if rubric not in gate.scope_index:
                continue  # the rubric left the plan since it was drawn: refused
            if escalates:
                picked[o.trace_id, rubric] = float(p)
            else:
                key = priority_key(o.trace_id, rubric, window)
                by_stratum[rubric][stratum].append((key, o.trace_id, float(p)))
    counts = {r: {s: len(v) for s, v in by.items()} for r, by in by_stratum.items()}
    rubric_rooms = {r: rooms.get(r) for r in counts}
    u = hash_point(f"{gate.key_prefix}\x1fbudget-window\x1f{window}")
    quotas = window_quotas(counts, rubric_rooms, rooms.get(SHARED), u)
    for rubric, by in by_stratum.items():
        for stratum, members in by.items():
            quota = quotas[rubric][stratum]
            for _, trace_id, p in sorted(members)[: quota.admit]:
                picked[trace_id, rubric] = p * quota.probability
    return picked


def _admit(
    gate: BudgetGate,
    conn: Connection,
    window: int,
    offers: Sequence[admissions.BudgetOffer],
    picked: dict[tuple[str, str], float],
    now_s: float,
    wait: Any,
) -> tuple[list[outbox.Intent], Counter[str]]:
    charged = [(t, r) for (t, r) in picked if r not in gate.escalating]
    group = [
        (ledger_field("rate", t, r), repr(picked[t, r]), gate.scope_index[r]) for t, r in charged
    ]
    if group and wait(gate.run_admit([group], now_s, honour_ledger=True)) != [0]:
        raise _Raced
    intents: list[outbox.Intent] = []
    rows: list[Admission] = []
    counts: Counter[str] = Counter()
    offered = 0
    for o in offers:
        pi = {r: picked[o.trace_id, r] for r in o.draws if (o.trace_id, r) in picked}
        offered += len(o.draws)
        counts["budget_refused_evaluations"] += len(o.draws) - len(pi)
        if not pi:
            counts["not_sampled_budget"] += 1
            continue
        counts["rate"] += 1
        # pi: the realised inclusion probabilities (stored on the records); pd: the drawn ones
        drawn = {r: float(o.draws[r][1]) for r in pi}
        signals: dict[str, Any] = {**o.signals, "pi": pi, "pd": drawn}
        uncharged = sorted(r for r in pi if r in gate.escalating)
        if uncharged:
            signals["escalate"] = uncharged
        intents.append(outbox.Intent(trace_id=o.trace_id, kind=o.kind, signals=signals))
        rows.extend(gate.admissions(o.kind, o.trace_id, list(pi), now_s))
    outbox.insert_intents(conn, intents)
    admissions.admit(conn, rows, gate.day_caps)
    admissions.finish_window(conn, window, offered=offered, admitted=len(rows))
    return intents, counts
