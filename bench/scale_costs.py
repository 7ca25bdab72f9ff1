"""Per-trace costs for capacity planning (docs/scaling.md): SQL statements per evaluation
and Redis bytes per queued intake ID and per queued arq job.

    python bench/scale_costs.py [--traces 500] [--rubrics 3]

Real PostgreSQL (EVALUATOR_TEST_POSTGRES_URL or 127.0.0.1:5432/test, a schema of its own)
and real Redis (db 14 of 127.0.0.1:6379, flushed). Rubrics: local faithfulness copies
(no judge), rate 1.0. Statements are counted with SQLAlchemy's before_cursor_execute hook
(an executemany counts once, its rows separately).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from evaluator.config.settings import load_settings
from evaluator.intake.enqueue import SyncTraceEnqueuer, intake_key
from evaluator.sources.ingest import ingest_traces
from evaluator.store.store import Store
from evaluator.worker.app import run_burst
from tests.conftest import rag_trace

PG = os.environ.get(
    "EVALUATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS = "redis://127.0.0.1:6379/14"
COUNTS: dict[str, int] = {"statements": 0, "rows": 0}


@event.listens_for(Engine, "before_cursor_execute")
def _count(_c: Any, _cur: Any, _stmt: str, params: Any, _ctx: Any, many: bool) -> None:
    COUNTS["statements"] += 1
    # An executemany's parameters are a list (one entry per row); a multi-row INSERT … VALUES
    # (the group commit's upsert) arrives as one dict of every row's values: one statement.
    COUNTS["rows"] += len(params) if many and isinstance(params, list | tuple) else 1


def snapshot() -> dict[str, int]:
    return dict(COUNTS)


def delta(before: dict[str, int]) -> dict[str, int]:
    return {k: COUNTS[k] - before[k] for k in COUNTS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=500)
    ap.add_argument("--rubrics", type=int, default=3)
    args = ap.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG}?options=-csearch_path%3D{schema}"
    tmp = Path(tempfile.mkdtemp())
    rubrics = tmp / "rubrics"
    rubrics.mkdir()
    for i in range(args.rubrics):
        (rubrics / f"f{i}.toml").write_text(
            f'name = "faith{i}"\nversion = "1"\nscorer = "faithfulness"\nmethod = "local"\n'
            "[sampling]\nrate = 1.0\n"
        )
    (tmp / "s.toml").write_text(
        f'[redis]\nurl = "{REDIS}"\nkey_prefix = "capb"\nqueue_name = "capb:queue"\n'
        f'[database]\nurl = "{url}"\n[rubrics]\ndir = "{rubrics}"\n[alerts]\nenabled = false\n'
    )
    settings = load_settings(tmp / "s.toml", environ={})
    r = redis.Redis.from_url(REDIS)
    r.flushdb()
    ids = [uuid.uuid4().hex for _ in range(args.traces)]
    out: dict[str, Any] = {"traces": args.traces, "rubrics": args.rubrics}
    try:
        store = Store(url)
        before = snapshot()
        ingest_traces(store, [rag_trace(t) for t in ids])
        out["sql_ingest_per_trace"] = {k: round(v / len(ids), 3) for k, v in delta(before).items()}
        store.close()
        enq = SyncTraceEnqueuer(settings.redis, key_prefix="capb", batch_size=500)
        enq.enqueue_many(ids)
        enq.close()
        key = intake_key("capb")
        out["redis_bytes_per_intake_id"] = round(
            (r.memory_usage(key, samples=0) or 0) / r.llen(key), 1
        )
        used0 = int(r.info("memory")["used_memory"])
        before = snapshot()
        # Drain only (no jobs run): intents to SQL, arq jobs created in Redis.
        from evaluator.config.rubrics import load_rubrics
        from evaluator.intake.drain import build_intake
        from evaluator.worker.runtime import sampling_config

        async def drain() -> None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(REDIS)
            s = Store(url)
            sampling = sampling_config(settings, load_rubrics(rubrics))
            intake = build_intake(client, settings, sampling=sampling, engine=s.engine)
            await intake.drain_all(10_000)
            s.close()
            await client.aclose()

        asyncio.run(drain())
        out["sql_intake_per_trace"] = {k: round(v / len(ids), 3) for k, v in delta(before).items()}
        jobs = [k for k in r.scan_iter(match="arq:job:*", count=1000)]
        per_job = sum(r.memory_usage(k, samples=0) or 0 for k in jobs) / max(len(jobs), 1)
        zset = (r.memory_usage("capb:queue", samples=0) or 0) / max(r.zcard("capb:queue"), 1)
        grown = int(r.info("memory")["used_memory"]) - used0
        out["redis_bytes_per_queued_job"] = {
            "job_key": round(per_job, 1),
            "queue_zset": round(zset, 1),
            "used_memory_delta": round(grown / len(ids), 1),
        }
        before = snapshot()
        asyncio.run(run_burst(settings))
        d = delta(before)
        out["sql_jobs_per_trace"] = {k: round(v / len(ids), 3) for k, v in d.items()}
        out["sql_jobs_per_evaluation"] = {
            k: round(v / (len(ids) * args.rubrics), 3) for k, v in d.items()
        }
    finally:
        r.flushdb()
        r.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
