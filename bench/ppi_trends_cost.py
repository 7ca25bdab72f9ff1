"""What PPI++ costs a trend: a cascade rubric's trend reads its raw records of the window
(evaluator.analytics.ppi_trends; no rollup holds the PPI++ sums yet), any other rubric's
reads the hourly rollup. Same records, SQLite in a temporary file, 7 daily buckets by prompt
version (2 versions); each record carries the cascade's trail for the cascade rubric.

    python -m bench.ppi_trends_cost --records 100000

Reported: the median of 5 `trend` calls (rollup refreshed first) for the plain rubric and for
the cascade rubric.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlmodel import Session

from evaluator.analytics.rollups import refresh_rollups
from evaluator.analytics.trends import TrendQuery, trend
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


def load(store: Store, rubric: str, n: int, cascade: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = rng.random(n)
    calib = rng.random(n) < 0.1
    judged = (f < 0.7) | calib
    y = (rng.random(n) < 0.1 + 0.8 * f).astype(float)
    ages = rng.uniform(0, 7 * 86400, n)
    batch: list[EvalRecord] = []
    for i in range(n):
        trail = {"cheap_score": float(f[i]), "local_value": float(f[i]),
                 "calibration": bool(calib[i]), "audit_rate": 0.1, "certified_threshold": 0.7,
                 "decided_by": "judge" if judged[i] else "local_certified"}  # fmt: skip
        score = float(y[i]) if judged[i] else float(f[i])
        batch.append(EvalRecord.built(
            id=uuid.uuid4(), trace_id=f"t-{uuid.uuid4().hex}", span_id="", rubric=rubric,
            rubric_version="1", scorer="faithfulness", method="cascade" if cascade else "two_step",
            status="ok", score=score, passed=score >= 0.5, explanation="",
            details={"cascade": trail} if cascade else {}, prompt_version=f"v{i % 2}",
            created_at=NOW - timedelta(seconds=float(ages[i])), inclusion_probability=0.5,
        ))  # fmt: skip
        if len(batch) == 5000:
            _flush(store, batch)
    _flush(store, batch)


def _flush(store: Store, batch: list[EvalRecord]) -> None:
    with Session(store.engine) as session:
        session.add_all(batch)
        session.commit()
    batch.clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000, help="records per rubric")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'ppi.db'}")
        load(store, "plain", args.records, cascade=False, seed=1)
        load(store, "casc", args.records, cascade=True, seed=2)
        refresh_rollups(store, NOW)
        for rubric in ("plain", "casc"):
            q = TrendQuery.parse(rubric, by="prompt_version", since="7d", bucket="1d")
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                doc = trend(store, q, now=NOW)
                times.append((time.perf_counter() - t0) * 1000)
            est = doc["groups"][0]["total"].get("estimator", "(today's)")
            mid = statistics.median(times)
            print(
                f"{rubric}: {args.records} records, trend median {mid:.0f} ms "
                f"(min {min(times):.0f}, max {max(times):.0f}); total estimator {est}"
            )
        store.close()


if __name__ == "__main__":
    main()
