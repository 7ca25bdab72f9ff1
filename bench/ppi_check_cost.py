"""What the prediction-powered test costs the regression check: a cascade rubric's check
reads its groups' raw cascade records (baseline and window, each capped at
`queries.MAX_STREAM`) for the PPI++ arm and the judge-only arm, where the judge-only check
alone (`options.ppi_regression = false`) reads SQL aggregates and the window's scores. Same
records (`bench.ppi_trends_cost.load`: 2 prompt versions over 7 days, the cascade's trail),
SQLite in a temporary file, the shipped policy (6 h window, 7 d baseline).

    python -m bench.ppi_check_cost --records 100000

Reported: the median of 5 runs of the whole check (`check_job.decide`) with and without the
PPI++ arm.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.ppi_trends_cost import NOW, load
from evaluator.analytics.check_job import decide
from evaluator.config.rubrics import RubricSet, parse_rubric
from evaluator.config.settings import AlertsSettings
from evaluator.store.store import Store

RUBRIC = """
name = "casc"
version = "1"
scorer = "faithfulness"
method = "cascade"
pass_threshold = 0.5
[options]
audit_rate = 0.1
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=100_000, help="records of the rubric")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'ppi.db'}")
        load(store, "casc", args.records, cascade=True, seed=2)
        for arm, body in (("on", RUBRIC), ("off", RUBRIC + "ppi_regression = false\n")):
            rubrics = RubricSet((parse_rubric(body, source=Path(tmp) / "casc.toml"),), Path(tmp))
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                report, _ = decide(store, rubrics, AlertsSettings(), NOW)
                times.append((time.perf_counter() - t0) * 1000)
            print(
                f"ppi_regression {arm}: {args.records} records, {report.groups} groups, check "
                f"median {statistics.median(times):.0f} ms (min {min(times):.0f}, "
                f"max {max(times):.0f})"
            )
        store.close()


if __name__ == "__main__":
    main()
