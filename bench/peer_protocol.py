"""The line protocol between bench/throughput.py and a peer running in its own venv.

Stdlib only: the peer scripts (ragas_peer.py, phoenix_peer.py, deepeval_peer.py) import it
from their own folder, in interpreters that cannot import this project.

    PEER_PYTHON bench/NAME_peer.py CASES.json [SET]

SET picks the metrics (default `pair`): `pair` = faithfulness + answer relevance, the two
metrics of BENCHMARKS.md §2a; `rag3` = those plus context relevance, the three RAG rubrics
our combined call scores (§11). A peer without one of them says so in its ready line.
The peer prints one ready line, `{"ready": true, "version": ..., "metrics": [...]}`, then
answers each stdin command `{"base_url": ..., "concurrency": 16}` with one result line,
`{"cases": n, "elapsed_s": ..., "cpu_s": ..., "scores": ..., "errors": [...], ...}`.
`concurrency` bounds the cases in flight (0 = all at once); each case's metrics run
concurrently. CPU is the peer process's CPU time (all threads) for the round.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

# One case → one awaitable per metric, each returning a score (float) or raising.
ScoreCase = Callable[[dict[str, Any]], list[Awaitable[float]]]
# base_url → (score_case, close): built once per round, so a round owns its clients.
MakeScorer = Callable[[str], tuple[ScoreCase, Callable[[], Awaitable[None]]]]


METRIC_SETS = ("pair", "rag3")


def metric_set() -> str:
    """The metric set named on the peer's command line (argv[2]), `pair` when absent."""
    name = sys.argv[2] if len(sys.argv) > 2 else "pair"
    if name not in METRIC_SETS:
        raise SystemExit(f"unknown metric set {name!r}; one of {', '.join(METRIC_SETS)}")
    return name


def guard_attempts() -> list[dict[str, Any]]:
    """Non-loopback attempts refused so far; fails if the loopback guard is not installed."""
    try:
        import loopback_guard  # bench/peer_guard on PYTHONPATH; its sitecustomize installs it
    except ImportError:
        loopback_guard = None
    if loopback_guard is None or not loopback_guard.INSTALLED:
        raise SystemExit("loopback guard missing: put bench/peer_guard on PYTHONPATH")
    return list(loopback_guard.ATTEMPTS)


async def run_round(
    cases: list[dict[str, Any]], make_scorer: MakeScorer, base_url: str, concurrency: int
) -> dict[str, Any]:
    score_case, close = make_scorer(base_url)
    limit = asyncio.Semaphore(concurrency if concurrency > 0 else len(cases) or 1)
    errors: list[str] = []
    values: list[float] = []

    async def one(case: dict[str, Any]) -> None:
        async with limit:
            results = await asyncio.gather(*score_case(case), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                errors.append(f"{type(r).__name__}: {r}"[:300])
            else:
                values.append(float(r))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(c) for c in cases))
    elapsed, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await close()
    return {
        "cases": len(cases),
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "scores": len(values),
        "nan_scores": sum(math.isnan(v) for v in values),
        "errors": errors[:5],
        "error_count": len(errors),
        "blocked": len(guard_attempts()),
    }


def serve(ready: dict[str, Any], make_scorer: MakeScorer) -> None:
    """Announce `ready` (version, metrics), then run one round per stdin command."""
    guard_attempts()  # refuse to run unguarded
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    print(json.dumps({"ready": True, **ready}), flush=True)
    # One event loop for the session, as in a long-running evaluation process: clients a
    # peer caches per loop (deepeval does) live across rounds instead of dying with each.
    with asyncio.Runner() as runner:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            result = runner.run(
                run_round(cases, make_scorer, command["base_url"], int(command["concurrency"]))
            )
            print(json.dumps(result), flush=True)
