"""The whole demo against the real model server (issue 29's done-when), too long for CI.

    python -m bench.real_demo [--traces N] [--timeout-s 120] [--job-timeout-s 3600]
                              [--system-role user] [--json FILE]

Starts the real server of the tests (tests/real_model/server.py: llama.cpp through
llama-cpp-python, Gemma 3 270M Q4_K_M from the package registry, a base model; one request
at a time) and runs `evaluator demo` on all its sample traces (or the first N of them) in a
process of its own, as the README says, with the judge pointed at the server:

    EVALUATOR_JUDGE__BASE_URL=<server>/v1 EVALUATOR_JUDGE__MODEL=gemma-3-270m evaluator demo

plus what a CPU server needs (each printed with the results): replies and self-consistency
samples capped at 384 tokens (as the scenario tests), no reply cache (every verdict the
server's), a per-attempt timeout that covers a request queued behind one other at the
server (`--timeout-s`), a job timeout
that covers the queue a burst of ~40 traces builds behind one slot (`--job-timeout-s`: a
job's calls wait their turn until its timeout less one call's worst case), and Gemma's
missing system turn (`--system-role user`). The client's adaptive limit and everything else
keep the shipped defaults.

Measured: wall time; traces sampled and recorded; records by status and error_kind (each
checked against tests/real_model/honesty.py's invariant: ok with the server's real usage,
or an error with its cause, kind and raw reply); intents left pending (must be 0); judge
calls (the records' and the server's access log); tokens; and the adaptive limit over time
(the client logs each change). The model is a base model: nothing here is judge quality.
Results: BENCHMARKS.md §22.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.real_model.honesty import check_records
from tests.real_model.scenario import MAX_OUTPUT_TOKENS, intents_by_status, records_of
from tests.real_model.server import MODEL_ALIAS, RealServer, missing, start

CHANGE = "judge concurrency "  # the client's log line when its limit moves


def demo_env(server: RealServer, args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "EVALUATOR_JUDGE__BASE_URL": server.base_url,
        "EVALUATOR_JUDGE__MODEL": MODEL_ALIAS,
        "EVALUATOR_JUDGE__MAX_OUTPUT_TOKENS": str(args.max_output_tokens),
        "EVALUATOR_JUDGE__CACHE_TTL_S": "0",
        "EVALUATOR_JUDGE__TIMEOUT_S": str(args.timeout_s),
        "EVALUATOR_JUDGE__SYSTEM_ROLE": args.system_role,
        # Self-consistency samples the same server (the generator defaults to the judge's
        # endpoint and takes slots of its limit): its replies are longer than a verdict.
        "EVALUATOR_GENERATOR__TIMEOUT_S": str(args.timeout_s),
        "EVALUATOR_GENERATOR__MAX_OUTPUT_TOKENS": str(args.max_output_tokens),
        "EVALUATOR_WORKER__JOB_TIMEOUT_S": str(args.job_timeout_s),
        "EVALUATOR_REDIS__URL": args.redis_url,
        "HF_HUB_OFFLINE": "1",
    }


def first_traces(path: Path, n: int) -> Path:
    from evaluator.cli.demo import AGENT_TRACES, SAMPLE_TRACES

    lines = [*SAMPLE_TRACES.read_text().splitlines(), *AGENT_TRACES.read_text().splitlines()]
    path.write_text("".join(line + "\n" for line in lines[:n]))
    return path


def limit_changes(stderr: str, t0: float) -> list[tuple[float, str]]:
    """(seconds since the start, the change and where the limit went) for each change."""
    from datetime import datetime

    out = []
    for line in stderr.splitlines():
        if CHANGE not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        at = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp() - t0
        out.append((round(at, 1), doc["message"].removeprefix(CHANGE)))
    return out


def summarise(db: Path, server: RealServer, calls: int, wall_s: float) -> dict[str, Any]:
    records = records_of(db)
    outcomes = check_records(records)  # the invariant, on every record (raises if broken)
    by_rubric: dict[str, Counter[str]] = {}
    for r in records:
        kind = (r.details or {}).get("error_kind")
        by_rubric.setdefault(r.rubric, Counter())[f"{r.status}:{kind}" if kind else r.status] += 1
    return {
        "wall_s": round(wall_s, 1),
        "traces_recorded": len({r.trace_id for r in records}),
        "records": len(records),
        "outcomes": dict(outcomes),
        "by_rubric": {k: dict(v) for k, v in sorted(by_rubric.items())},
        "intents": intents_by_status(db),
        "judge_calls_in_records": sum(r.judge_calls for r in records),
        "server_requests": calls,
        "input_tokens": sum(r.judge_input_tokens for r in records),
        "output_tokens": sum(r.judge_output_tokens for r in records),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=int, default=0, help="the first N sample traces (0: all)")
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--job-timeout-s", type=int, default=3600)
    p.add_argument("--max-output-tokens", type=int, default=MAX_OUTPUT_TOKENS)
    p.add_argument("--system-role", choices=("system", "user"), default="user")
    p.add_argument(
        "--redis-url", default=os.environ.get("EVALUATOR_REDIS__URL", "redis://127.0.0.1:6379/0")
    )
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--workdir", type=Path, help="keep the database and logs here")
    args = p.parse_args(argv)
    if (why := missing()) is not None:
        print(why, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="real-demo-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        server = start(work / "server.log")
        try:
            db = work / "demo.db"
            command = [sys.executable, "-m", "evaluator.cli.main", "--log-level", "INFO",
                       "--log-format", "json", "demo", "--db", str(db)]  # fmt: skip
            if args.traces:
                command += ["--traces", str(first_traces(work / "traces.jsonl", args.traces))]
            before = server.completions()
            t0 = time.time()
            with (work / "demo.err").open("w+") as err:  # the worker's log, read as it runs
                proc = subprocess.run(
                    command, env=demo_env(server, args), cwd=work, stdout=subprocess.PIPE,
                    stderr=err, text=True,
                )  # fmt: skip
                err.seek(0)
                stderr = err.read()
            wall = time.time() - t0
            calls = server.completions() - before
            print(proc.stdout)
            if proc.returncode != 0:
                print(stderr[-4000:], file=sys.stderr)
                return proc.returncode
            result = summarise(db, server, calls, wall)
            result["limit_changes"] = limit_changes(stderr, t0)
            result["settings"] = {
                "timeout_s": args.timeout_s,
                "job_timeout_s": args.job_timeout_s,
                "max_output_tokens": args.max_output_tokens,
                "system_role": args.system_role,
                "cache_ttl_s": 0,
            }
        finally:
            server.stop()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
