"""Retention on PostgreSQL: time and rows/s of deleting a month of eval records, and what it
does to concurrent inserts (p50/p99 latency of single-record inserts before and during).

    python bench/retention.py [--rows 1000000] [--days 60] [--batch 5000]

A private cluster (tests/services.py PostgresCluster, fsync off like the test harness, so
absolute times are optimistic for a disk-bound server; the ratio during/before is the point).
The records are spread evenly over --days; retention keeps 30 days, so about half go.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from evaluator.config.settings import Settings
from evaluator.store.models import utcnow
from evaluator.store.retention import apply_retention
from evaluator.store.store import Store
from tests.services import PostgresCluster

FILL = """
INSERT INTO eval_records (id, trace_id, span_id, rubric, rubric_version, scorer, method,
  status, score, explanation, details, judge_calls, judge_input_tokens, judge_output_tokens,
  judge_cost_usd, latency_ms, prompt_version, model, feature, tenant, created_at)
SELECT md5(g::text || 'x')::uuid, 't' || g, '', 'faithfulness', '1', 'faithfulness', 'judge',
  'ok', random(), 'The answer is supported by the second document.', '{"claims": 3}'::json,
  1, 800, 120, 0.0002, 900, 'v' || (g % 5), 'gpt-4o-mini', 'qa', 'acme',
  now() - (g::float / :rows) * (:days || ' days')::interval
FROM generate_series(1, :rows) AS g
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def insert_latencies(store: Store, stop: threading.Event, out: list[float]) -> None:
    stmt = text(
        "INSERT INTO eval_records (id, trace_id, span_id, rubric, rubric_version, scorer, "
        "method, status, explanation, details, judge_calls, judge_input_tokens, "
        "judge_output_tokens, judge_cost_usd, latency_ms, created_at) VALUES (:id, :t, '', "
        "'faithfulness', '1', 'faithfulness', 'judge', 'ok', '', '{}', 0, 0, 0, 0, 0, now())"
    )
    while not stop.is_set():
        t0 = time.perf_counter()
        with store.engine.begin() as conn:
            conn.execute(stmt, {"id": uuid.uuid4(), "t": f"live-{uuid.uuid4().hex}"})
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.002)  # ~400 inserts/s: a busy worker fleet's write rate


def measure_retention(store: Store, *, batch: int, records_days: int = 30) -> dict[str, object]:
    """One retention pass over the records (keep `records_days`) timed, with single-record
    inserts running 3 s before it and throughout it; the report's insert latencies say what
    the delete does to the writers."""
    settings = Settings.model_validate(
        {
            "database": {
                "url": store.url,
                "retention": {"records_days": records_days, "batch_rows": batch},
            },
            "alerts": {"policy": {"window": "6h", "baseline": "7d"}},
        }
    )
    before: list[float] = []
    stop = threading.Event()
    th = threading.Thread(target=insert_latencies, args=(store, stop, before))
    th.start()
    time.sleep(3)
    stop.set()
    th.join()
    during: list[float] = []
    stop = threading.Event()
    th = threading.Thread(target=insert_latencies, args=(store, stop, during))
    th.start()
    try:
        result = apply_retention(store, settings, utcnow() + timedelta(seconds=1))
    finally:
        stop.set()
        th.join()
    deleted = result.deleted["eval_records"]
    return {
        "batch_rows": batch,
        "deleted": deleted,
        "delete_s": round(result.seconds, 2),
        "rows_per_s": round(deleted / result.seconds),
        "insert_ms_before": {
            "n": len(before),
            "p50": round(statistics.median(before), 2),
            "p99": round(percentile(before, 0.99), 2),
        },
        "insert_ms_during": {
            "n": len(during),
            "p50": round(statistics.median(during), 2),
            "p99": round(percentile(during, 0.99), 2),
            "max": round(max(during), 2),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    with PostgresCluster() as pg:
        store = Store(pg.url)
        t0 = time.perf_counter()
        with store.engine.begin() as conn:
            conn.execute(text(FILL), {"rows": args.rows, "days": str(args.days)})
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE eval_records"))
        fill_s = time.perf_counter() - t0
        report = {"rows": args.rows, "fill_s": round(fill_s, 1)}
        report |= measure_retention(store, batch=args.batch)
        store.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
