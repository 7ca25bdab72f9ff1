"""Run the test suite under a CPU hog, in a random order, several times; report each run.

A test that synchronises on the clock passes on an idle machine and fails on a busy one.
This starts `--hogs` busy processes (default 4, on a machine that may have 2 cores), then
runs pytest `--runs` times (default 5), each in a different seeded random order
(bench/random_order.py: modules shuffled, then the tests in each), without pytest's cache.
It prints one line per run (seed, outcome, duration, load average, failed tests) and writes
the same with each run's full log under `--out`. Not part of CI: a run of the whole suite
takes tens of minutes per pass on 2 busy cores.

    python -m bench.flaky_under_load                         # the whole suite, 5 runs
    python -m bench.flaky_under_load --runs 1 -- tests/test_enqueue.py tests/test_batch_mode.py

A failing order is replayed with `RANDOM_ORDER_SEED=<seed> python -m pytest -p
bench.random_order -p no:cacheprovider <same paths>` (under the same hog for the same load).
Exit status: 0 when every run passed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"


@dataclass
class Run:
    n: int
    seed: int
    code: int
    seconds: float
    load: float  # 1-minute load average at the end of the run
    summary: str  # pytest's last line: "N passed, M failed in …"
    failed: list[str]

    @property
    def passed(self) -> bool:
        return self.code == 0


def start_hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(n)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:  # only the processes this script started, by their handle
        hog.kill()
    for hog in hogs:
        hog.wait(timeout=10)


def run_once(n: int, seed: int, pytest_args: list[str], out: Path) -> Run:
    env = {**os.environ, "RANDOM_ORDER_SEED": str(seed), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
            "-p", "bench.random_order", *pytest_args]  # fmt: skip
    log = out / f"run-{n}-seed-{seed}.log"
    started = time.monotonic()
    with log.open("w") as fh:
        code = subprocess.run(
            argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT
        ).returncode
    seconds = time.monotonic() - started
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "(no output)"
    failed = sorted({m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", text, re.M)})
    return Run(n, seed, code, seconds, os.getloadavg()[0], summary, failed)


def describe(run: Run) -> str:
    head = (f"run {run.n}  seed {run.seed}  {'pass' if run.passed else 'FAIL'}  "
            f"{run.seconds:7.1f} s  load {run.load:4.1f}  {run.summary}")  # fmt: skip
    return "\n".join([head, *(f"    {name}" for name in run.failed)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--hogs", type=int, default=4, help="busy processes competing for the CPU")
    p.add_argument("--seed", type=int, default=None, help="first order's seed (then +1 per run)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flaky_under_load")
    p.add_argument("pytest_args", nargs="*", help="after --: paths and options for pytest")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    args.out.mkdir(parents=True, exist_ok=True)

    what = " ".join(args.pytest_args) or "(the whole suite)"
    print(f"{args.hogs} busy processes on {os.cpu_count()} CPUs; {args.runs} runs from seed "
          f"{seed}; pytest {what}", flush=True)  # fmt: skip
    hogs = start_hogs(args.hogs)
    runs: list[Run] = []
    try:
        for n in range(1, args.runs + 1):
            runs.append(run_once(n, seed + n - 1, args.pytest_args, args.out))
            print(describe(runs[-1]), flush=True)
    finally:
        stop_hogs(hogs)
    passed = sum(r.passed for r in runs)
    verdict = f"{passed} of {len(runs)} runs passed under {args.hogs} busy processes"
    print(verdict)
    report = [verdict, f"pytest args: {what}", ""]
    (args.out / "summary.txt").write_text("\n".join([*report, *map(describe, runs)]) + "\n")
    return 0 if passed == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
