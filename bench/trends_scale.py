"""Benchmark: a 30-day daily trend over 1,000,000 eval records, SQLite and PostgreSQL.

Target ≤ 100 ms per trend. Records: one rubric, 30 days, prompt versions rolling over
(v1..v4), 2 models, 3 features, continuous scores. The first trend call backfills the
hourly rollup (timed separately); then each call refreshes it (a no-op check plus the
last two hours) and reads rollup rows + the live hour's raw rows. Reported: the backfill,
the median and p90 of `trend(...)` calls, and a raw-scan baseline (the GROUP BY over raw
records that the rollup replaces).

    python bench/trends_scale.py --records 1000000

At scale on a private PostgreSQL cluster it starts and removes (bench/private_postgres.py),
with the tables partitioned (migration 0006) and the path a database takes to get there:

    python bench/trends_scale.py --only postgres --private-postgres --records 10000000 \
        --days 60 --retention

loads the records by COPY into the plain 0005 table, times the upgrade that partitions it
(the conversion, per million rows), then measures on the partitioned table: COPY rate, the
worker's write path (Store.upsert_records, one transaction per job of 3 verdicts, each an
INSERT ... ON CONFLICT after the span-less-error delete) at that size, the trend, and with
--retention one retention pass keeping 30 days (bench/retention.py's measure, with
concurrent single-record inserts). With --days 60 the trend's 30 days hold half the rows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluator.analytics.rollups import refresh_rollups
from evaluator.analytics.trends import TrendQuery, trend
from evaluator.store.models import EvalRecord
from evaluator.store.schema import upgrade
from evaluator.store.store import Store, make_engine

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
COLUMNS = (
    "id",
    "trace_id",
    "span_id",
    "rubric",
    "rubric_version",
    "scorer",
    "method",
    "status",
    "score",
    "passed",
    "explanation",
    "details",
    "judge_calls",
    "judge_input_tokens",
    "judge_output_tokens",
    "judge_cost_usd",
    "latency_ms",
    "prompt_version",
    "model",
    "feature",
    "created_at",
)


def rows(n: int, now: datetime, seed: int = 0, days: int = 30, first: int = 0):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    span = timedelta(days=days).total_seconds()
    for i in range(first, first + n):
        age = span * (i - first) / n
        at = now - timedelta(seconds=span - age)
        pv = f"v{1 + int(age / span * 4)}"
        score = min(1.0, max(0.0, rng.gauss(0.9 - 0.05 * (pv == "v3"), 0.1)))
        yield (
            uuid.uuid4().hex,
            f"t{i}",
            "",
            "faithfulness",
            "1",
            "faithfulness",
            "judge",
            "ok",
            score,
            score >= 0.7,
            "",
            "{}",
            1,
            800,
            40,
            0.0001,
            900.0,
            pv,
            rng.choice(("gpt-4o", "gpt-4o-mini")),
            rng.choice(("qa", "search", "chat")),
            at,
        )


def load_sqlite(store: Store, n: int, now: datetime) -> None:
    raw = store.engine.raw_connection()
    cur = raw.cursor()
    marks = ",".join("?" * len(COLUMNS))
    batch: list[tuple[object, ...]] = []
    for r in rows(n, now):
        batch.append((*r[:-1], r[-1].strftime("%Y-%m-%d %H:%M:%S.%f")))
        if len(batch) == 50_000:
            cur.executemany(
                f"INSERT INTO eval_records ({','.join(COLUMNS)}) VALUES ({marks})", batch
            )
            batch.clear()
    if batch:
        cur.executemany(f"INSERT INTO eval_records ({','.join(COLUMNS)}) VALUES ({marks})", batch)
    raw.commit()
    raw.close()


def load_postgres(store: Store, n: int, now: datetime) -> None:
    copy_rows(store.engine, rows(n, now))


def copy_rows(engine, source) -> None:  # type: ignore[no-untyped-def]
    raw = engine.raw_connection()
    sql = f"COPY eval_records ({','.join(COLUMNS)}) FROM STDIN"
    with raw.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[attr-defined]
        for r in source:
            copy.write_row(r)
    raw.commit()
    raw.close()


def worker_path_rate(store: Store, n: int, now: datetime) -> float:
    """Records/s through Store.upsert_records in jobs of 3 verdicts (the worker's path)."""
    verdicts = [
        EvalRecord(
            trace_id=f"w{i // 3}", span_id="s1", rubric=f"r{i % 3}", rubric_version="1",
            scorer="faithfulness", method="judge", status="ok", score=0.9, passed=True,
            prompt_version="v4", model="gpt-4o", feature="qa", created_at=now,
        )
        for i in range(n - n % 3)
    ]  # fmt: skip
    t = time.perf_counter()
    for start in range(0, len(verdicts), 3):
        store.upsert_records(verdicts[start : start + 3])
    return len(verdicts) / (time.perf_counter() - t)


def private_bench(args: argparse.Namespace) -> None:
    """The 10 M path: private cluster, load at 0005, convert, measure (module docstring)."""
    from bench.private_postgres import BENCH_SETTINGS, private_postgres
    from bench.retention import measure_retention

    now = datetime.now(UTC)
    n = args.records
    print(f"private cluster, {BENCH_SETTINGS}")
    with private_postgres() as url:
        engine = make_engine(url)
        upgrade(engine, "0005_trace_signals")
        t = time.perf_counter()
        copy_rows(engine, rows(n, now, days=args.days))
        load_s = time.perf_counter() - t
        with engine.begin() as conn:
            conn.execute(text("ANALYZE eval_records"))
        engine.dispose()
        t = time.perf_counter()
        store = Store(url)  # upgrades to head: 0006 partitions the loaded table
        convert_s = time.perf_counter() - t
        print(f"COPY into the plain table: {n:,} records in {load_s:.1f} s ({n / load_s:,.0f}/s)")
        print(
            f"conversion to {partition_count(store)} hash partitions (upgrade 0005 -> head): "
            f"{convert_s:.1f} s, {convert_s / (n / 1e6):.1f} s per million rows"
        )
        # The samples go 40 days back: in the live hour they would be raw rows every trend
        # reads (it reads rollups plus the live hour), a load the trend figure must not carry.
        extra, past = args.copy_sample, now - timedelta(days=40)
        t = time.perf_counter()
        copy_rows(store.engine, rows(extra, past, seed=1, days=1, first=n))
        copy_s = time.perf_counter() - t
        print(f"COPY into the partitioned table at {n:,}: {extra / copy_s:,.0f} records/s")
        rate = worker_path_rate(store, args.upsert_sample, past)
        print(
            f"worker path (upsert_records, jobs of 3) at {n + extra:,}: {rate:,.0f} records/s "
            f"({args.upsert_sample:,} records)"
        )
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE eval_records"))
        measure_trends(store, "postgres (partitioned)", n, args.repeat, now, load_s)
        if args.retention:
            report = measure_retention(store, batch=args.batch)
            print("retention keeping 30 days:", report)
        store.close()


def partition_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM pg_inherits WHERE inhparent = 'eval_records'::regclass")
            ).scalar_one()
        )


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def bench(name: str, url: str, n: int, repeat: int) -> None:
    store = Store(url)
    now = datetime.now(UTC)
    t = time.perf_counter()
    (load_sqlite if name == "sqlite" else load_postgres)(store, n, now)
    load_s = time.perf_counter() - t
    if name == "postgres":
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE eval_records"))
    measure_trends(store, name, n, repeat, now, load_s)
    store.close()


def measure_trends(  # type: ignore[no-untyped-def]
    store: Store, name: str, n: int, repeat: int, now: datetime, load_s: float
):
    t = time.perf_counter()
    cells = refresh_rollups(store, now)
    backfill_s = time.perf_counter() - t
    q = TrendQuery.parse("faithfulness", "prompt_version", "30d", "1d")
    doc = trend(store, q)
    ms = timed(lambda: trend(store, q), repeat)
    by_model = timed(
        lambda: trend(store, TrendQuery.parse("faithfulness", "model", "30d", "1d")), repeat
    )
    lo = now - timedelta(days=30)
    raw_sql = text(
        "SELECT prompt_version, COUNT(*), AVG(score) FROM eval_records "
        "WHERE rubric = 'faithfulness' AND status = 'ok' AND created_at >= :lo "
        "GROUP BY prompt_version"
    )
    with store.engine.connect() as conn:
        raw = timed(lambda: conn.execute(raw_sql, {"lo": lo}).all(), max(3, repeat // 5))
    buckets = sum(len(g["buckets"]) for g in doc["groups"])
    print(
        f"{name:<9} records={n:>9,}  load {load_s:6.1f} s  rollup backfill {backfill_s:5.1f} s "
        f"({cells} hourly cells)"
    )
    print(
        f"{'':<9} trend 30d/1d by prompt_version: median {statistics.median(ms):6.1f} ms  "
        f"p90 {sorted(ms)[int(0.9 * len(ms))]:6.1f} ms  ({len(doc['groups'])} groups, "
        f"{buckets} buckets)"
    )
    print(f"{'':<9} trend 30d/1d by model:          median {statistics.median(by_model):6.1f} ms")
    print(f"{'':<9} raw GROUP BY, no rollup (reference): median {statistics.median(raw):6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--postgres-url", default=PG_URL)
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    parser.add_argument(
        "--private-postgres",
        action="store_true",
        help="PostgreSQL on a private cluster started and removed here (not --postgres-url)",
    )
    parser.add_argument("--days", type=int, default=30, help="records spread over (private)")
    parser.add_argument("--copy-sample", type=int, default=200_000)
    parser.add_argument("--upsert-sample", type=int, default=6_000)
    parser.add_argument("--retention", action="store_true", help="then delete past 30 days")
    parser.add_argument("--batch", type=int, default=5000, help="retention batch rows")
    args = parser.parse_args()
    print("$ python bench/trends_scale.py " + " ".join(sys.argv[1:]))
    if args.private_postgres:
        if args.only != "postgres":
            with tempfile.TemporaryDirectory() as tmp:
                bench("sqlite", f"sqlite:///{tmp}/trends.db", args.records, args.repeat)
        private_bench(args)
        return
    if args.only != "postgres":
        with tempfile.TemporaryDirectory() as tmp:
            bench("sqlite", f"sqlite:///{tmp}/trends.db", args.records, args.repeat)
    if args.only != "sqlite":
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        engine = create_engine(args.postgres_url)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            sep = "&" if "?" in args.postgres_url else "?"
            bench(
                "postgres",
                f"{args.postgres_url}{sep}options=-csearch_path%3D{schema}",
                args.records,
                args.repeat,
            )
        finally:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()


if __name__ == "__main__":
    main()
