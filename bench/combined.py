"""Combined vs separate RAG judge calls: calls, tokens, client CPU and verdict agreement.

    python -m bench.combined --cases 240 --p-correct 0.9

RAGTruth QA answers (bench.throughput.load_traces) are scored by the real scorers, in this
process, with faithfulness + answer relevance + context relevance as one trace's rubric set
(run concurrently, as the worker does), once with method "judge" (three calls) and once with
"combined" (one call), and also with faithfulness + answer relevance only (the two metrics
of BENCHMARKS.md §2). The judge is bench/judge_server.py in a subprocess with `--labels`, so
faithfulness verdicts follow each answer's human label with probability p (independently per
request); relevance verdicts are the schema's plain instance in both methods. Calls and
tokens are the server's counts (tokens = characters / 4, schema included); CPU is this
process's (scorers, prompts, client, HTTP; no queue or database: see bench/profile_worker.py).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from evaluator.traces.cases import build_case
from evaluator.traces.model import parse_trace
from judges.llm.client import JudgeClient, sdk_http_client
from judges.rubric import Rubric
from judges.scorers.registry import run_scorer
from judges.types import Clients, EvalCase, Score, Status

from .report import command_line, machine, table
from .throughput import DATA, REPO, judge_stats, load_traces

SETS = {
    "3 rubrics": ("faithfulness", "answer_relevance", "context_relevance"),
    "2 rubrics (§2)": ("faithfulness", "answer_relevance"),
}


def start_labelled_judge(p: float, seed: int) -> tuple[subprocess.Popen[str], str]:
    args = ["--port", "0", "--labels", str(DATA), "--p-correct", str(p), "--seed", str(seed)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.judge_server", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"judge server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def rubrics(scorers: tuple[str, ...], method: str) -> list[Rubric]:
    return [Rubric(name=s, version="b", scorer=s, method=method) for s in scorers]  # type: ignore[arg-type]


async def run_set(
    cases: list[EvalCase], rubric_set: list[Rubric], url: str, concurrency: int
) -> tuple[list[list[Score]], dict[str, Any], float]:
    judge = JudgeClient(
        base_url=url,
        model="bench",
        max_concurrency=concurrency,
        http_client=sdk_http_client("aiohttp"),
    )
    clients = Clients(judge=judge)
    gate = asyncio.Semaphore(concurrency)

    async def one(case: EvalCase) -> list[Score]:
        async with gate:
            return list(await asyncio.gather(*(run_scorer(case, r, clients) for r in rubric_set)))

    judge_stats(url, reset=True)
    cpu0 = time.process_time()
    out = await asyncio.gather(*(one(c) for c in cases))
    cpu_ms = (time.process_time() - cpu0) * 1000 / len(cases)
    await judge.aclose()
    assert len(clients.shared) <= len(cases)
    return out, judge_stats(url), cpu_ms


def hallucinated(score: Score) -> bool | None:
    return None if score.status is not Status.OK or score.value is None else score.value < 1.0


def agreement(a: list[list[Score]], b: list[list[Score]], i: int, key: Any) -> str:
    pairs = [(key(x[i]), key(y[i])) for x, y in zip(a, b, strict=True)]
    both = [(u, v) for u, v in pairs if u is not None and v is not None]
    return f"{sum(u == v for u, v in both) / len(both):.1%} of {len(both)}" if both else "n/a"


def accuracy(scores: list[list[Score]], labels: list[bool]) -> str:
    got = [(hallucinated(s[0]), y) for s, y in zip(scores, labels, strict=True)]
    known = [(h, y) for h, y in got if h is not None]
    return f"{sum(h == y for h, y in known) / len(known):.1%}" if known else "n/a"


async def main_async(args: argparse.Namespace) -> None:
    traces = load_traces(args.cases)
    cases = [build_case(parse_trace(t)) for t in traces]
    labels = [bool(t["attributes"]["ragtruth.hallucinated"]) for t in traces]
    proc, url = start_labelled_judge(args.p_correct, args.seed)
    rows, agree_rows = [], []
    try:
        for name, scorers in SETS.items():
            res = {}
            for method in ("judge", "combined"):
                await run_set(cases[:8], rubrics(scorers, method), url, args.concurrency)  # warm
                res[method] = await run_set(cases, rubrics(scorers, method), url, args.concurrency)
            for method, (scores, stats, cpu) in res.items():
                n = len(cases)
                ok = sum(s.status is Status.OK for row in scores for s in row)
                rows.append([
                    name, method, f"{stats['chat_calls'] / n:.2f}",
                    f"{stats['prompt_tokens'] / n:,.0f}",
                    f"{stats['completion_tokens'] / n:,.0f}", f"{cpu:.2f}",
                    f"{ok}/{n * len(scorers)}", accuracy(scores, labels),
                    str(sum(s.usage.calls for row in scores for s in row)),
                ])  # fmt: skip
            (sep, _, _), (comb, _, _) = res["judge"], res["combined"]
            keys = {
                "faithfulness: hallucinated?": hallucinated,
                "answer relevance: label": lambda s: s.label,
                "context relevance: value": lambda s: s.value,
            }
            for i, (what, key) in enumerate(list(keys.items())[: len(scorers)]):
                agree_rows.append([name, what, agreement(sep, comb, i, key)])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"$ {command_line()}\nmachine: {machine()}\n")
    header = ["rubric set", "method", "judge calls / trace", "prompt tokens / trace",
              "completion tokens / trace", "client CPU ms / trace", "ok scores",
              "faithfulness accuracy vs label", "calls on records"]  # fmt: skip
    print(table(header, rows))
    print(
        f"\n{len(cases)} traces, judge p_correct {args.p_correct}, {args.concurrency} in flight\n"
    )
    print(table(["rubric set", "verdict", "separate = combined"], agree_rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=240)
    p.add_argument("--p-correct", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
