"""A private PostgreSQL cluster for a benchmark: tests/services.py's PostgresCluster (initdb
into a temp dir, a free loopback port, run as `postgres`, removed afterwards), with memory
and WAL settings for tens of millions of rows instead of the test harness's small ones.

    with private_postgres() as url:
        store = Store(url)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import PostgresCluster

# The harness keeps 16 MB of shared buffers and 64 MB of WAL so tests start fast; at 10 M
# rows that would measure checkpoints, not the schema. fsync stays off (the harness's).
BENCH_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "maintenance_work_mem": "512MB",
    "work_mem": "32MB",
}


@contextmanager
def private_postgres(settings: dict[str, str] | None = None) -> Iterator[str]:
    """Start a cluster, apply `settings` (BENCH_SETTINGS by default) and yield its URL."""
    with PostgresCluster() as pg:
        with pg.connect(autocommit=True) as conn:
            for name, value in (BENCH_SETTINGS if settings is None else settings).items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        pg.stop()  # shared_buffers needs a restart
        pg.start()
        yield pg.url
