"""Start-up cost an app and a CLI user pay: wall and CPU time of a fresh process.

    python bench/startup.py [--runs 15]

Each command runs `--runs` times in a fresh interpreter; the table gives the median and
p90 of wall time and of user+system CPU, beside `python -c "import redis"` (the floor: the
app-side API needs the Redis client anyway) and a bare interpreter. Targets (issue:
layering): app import <= 0.3 s, `evaluator --help` <= 0.5 s CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import redis"': [sys.executable, "-c", "import redis"],
    "from evaluator import enqueue_trace": [
        sys.executable,
        "-c",
        "from evaluator import enqueue_trace",
    ],
    "evaluator --help": [shutil.which("evaluator") or "evaluator", "--help"],
}


def run_once(
    cmd: list[str], *, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process (bench/paired.py runs it in a worktree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        cmd, stdout=subprocess.DEVNULL, check=True, cwd=cwd, env=env or os.environ.copy()
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.9 * len(xs)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"| command | wall median | wall p90 | CPU median | CPU p90 | (n={args.runs}) |")
    print("|---|---|---|---|---|---|")
    for name, cmd in COMMANDS.items():
        run_once(cmd)  # warm the page cache and .pyc files
        samples = [run_once(cmd) for _ in range(args.runs)]
        walls, cpus = [w for w, _ in samples], [c for _, c in samples]
        print(
            f"| `{name}` | {statistics.median(walls) * 1000:.0f} ms | {p90(walls) * 1000:.0f} ms"
            f" | {statistics.median(cpus) * 1000:.0f} ms | {p90(cpus) * 1000:.0f} ms | |"
        )


if __name__ == "__main__":
    main()
