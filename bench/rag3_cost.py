"""Judge cost of the three RAG rubrics per trace: ours (combined and separate) beside ragas,
phoenix-evals and deepeval scoring the same three metrics (issue 16, "Measured").

    python -m bench.rag3_cost --cases 120 --reps 2
    python -m bench.rag3_cost --peers ragas      # one peer only (--peers alone: none)

Every side scores the same RAGTruth QA traces (bench.throughput.load_traces) for
faithfulness, answer relevance and context relevance against one plain bench/judge_server.py
(latency 0; schema-valid replies; calls and tokens from its /stats, tokens = characters / 4
with the schema billed). Ours: the real scorers and JudgeClient in this process, as in
bench/combined.py (its `run_set`), once with method "combined" (one call for the three) and
once with "judge" (one call per rubric). Peers: bench/NAME_peer.py with metric set `rag3`
(bench/peer_protocol.py), each in its own venv behind bench/peer_guard — ragas 0.4.3
Faithfulness + AnswerRelevancy(3) + ContextRelevance; deepeval FaithfulnessMetric +
AnswerRelevancyMetric + ContextualRelevancyMetric; phoenix-evals FaithfulnessEvaluator +
RetrievalRelevanceEvaluator (it has no answer relevance: the table names what is missing).
CPU is each side's process CPU per trace — a library call scoring in memory on every side
(ours without queue or database here; the worker's CPU is bench/profile_worker.py's).
Calls and tokens do not depend on machine load; CPU does. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evaluator.traces.cases import build_case
from evaluator.traces.model import parse_trace
from judges.types import Status

from .combined import SETS, rubrics, run_set
from .report import Summary, command_line, fmt, machine, table
from .throughput import (
    PEERS,
    Peer,
    PeerUnavailable,
    load_traces,
    peer_cases,
    peer_round,
    start_judge,
)

RAG3 = SETS["3 rubrics"]
OURS = {
    "ours-combined": ("combined", "faithfulness + answer_relevance + context_relevance, 1 call"),
    "ours-separate": ("judge", "faithfulness + answer_relevance + context_relevance, 3 calls"),
}
GOAL_SHARE = 0.25  # issue 16: ≤ 25 % of ragas's prompt tokens for the same three metrics


async def ours_round(cases: list[Any], method: str, url: str, concurrency: int) -> dict[str, float]:
    scores, stats, cpu_ms = await run_set(cases, rubrics(RAG3, method), url, concurrency)
    n = len(cases)
    ok = sum(s.status is Status.OK for row in scores for s in row)
    return {
        "calls": stats["chat_calls"] / n,
        "embedding_calls": stats["embedding_calls"] / n,
        "prompt_tokens": stats["prompt_tokens"] / n,
        "completion_tokens": stats["completion_tokens"] / n,
        "cpu_ms": cpu_ms,
        "ok_share": ok / (len(RAG3) * n),
        "nan_share": 0.0,
    }


def run(args: argparse.Namespace) -> tuple[dict[str, dict[str, Summary]], dict[str, Any]]:
    traces = load_traces(args.cases)
    cases = [build_case(parse_trace(t)) for t in traces]
    proc, url = start_judge("0")
    workdir = Path(tempfile.mkdtemp(prefix="bench-rag3-"))
    cases_file = workdir / "cases.json"
    cases_file.write_text(json.dumps(peer_cases(traces)))
    info: dict[str, Any] = {}
    peers: dict[str, Peer] = {}
    for name in args.peers:
        try:
            peers[name] = Peer(name, cases_file, workdir, metric_set="rag3")
        except PeerUnavailable as exc:
            info[name] = {"label": PEERS[name].label, "skipped": str(exc)}
            print(f"  {name}: skipped — {exc}", file=sys.stderr)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for method in ("combined", "judge"):  # warm our client and schema caches, untimed
            asyncio.run(run_set(cases[:8], rubrics(RAG3, method), url, args.concurrency))
        for rep in range(args.reps):
            sides = [*OURS, *peers]
            sides = sides[rep % len(sides) :] + sides[: rep % len(sides)]
            for side in sides:
                if side in OURS:
                    r = asyncio.run(ours_round(cases, OURS[side][0], url, args.concurrency))
                else:
                    r = peer_round(peers[side], url, len(cases), args.peer_concurrency)
                bucket = results.setdefault(side, {})
                for key, value in r.items():
                    bucket.setdefault(key, []).append(value)
                print(f"  round {rep + 1} {side:14s}: {fmt(r['calls'])} calls", file=sys.stderr)
    finally:
        for name, peer in peers.items():
            peer.close()
            info[name] = {
                "label": f"{peer.spec.label} {peer.version}",
                "metrics": " + ".join(peer.metrics)
                + (f" (no {', '.join(peer.missing)})" if peer.missing else ""),
                "blocked": len(peer.blocked()),
            }
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    summaries = {k: {m: Summary.of(v) for m, v in d.items()} for k, d in results.items()}
    return summaries, info


def render(
    res: dict[str, dict[str, Summary]], info: dict[str, Any], args: argparse.Namespace
) -> str:
    ran = [name for name in args.peers if name in res]
    sides = [*OURS, *ran]
    ragas_tokens = res["ragas"]["prompt_tokens"].median if "ragas" in res else None

    def med(side: str, metric: str) -> str:
        return fmt(res[side][metric].median)

    rows = []
    for side in sides:
        label = side if side in OURS else info[side]["label"]
        metrics = OURS[side][1] if side in OURS else info[side]["metrics"]
        tokens, cpu = res[side]["prompt_tokens"].median, res[side]["cpu_ms"]
        share = f"{tokens / ragas_tokens:.1%}" if ragas_tokens else "—"
        guard = "(not guarded)" if side in OURS else str(info[side]["blocked"])
        rows.append([
            label, metrics, med(side, "calls"), med(side, "embedding_calls"),
            f"{tokens:,.0f}", med(side, "completion_tokens"), share,
            f"{med(side, 'cpu_ms')} ({fmt(cpu.low)}–{fmt(cpu.high)})",
            f"{res[side]['ok_share'].median:.2f}", f"{res[side]['nan_share'].median:.2f}", guard,
        ])  # fmt: skip
    head = ["side", "metrics per trace", "judge calls / trace", "embedding calls / trace",
            "prompt tokens / trace", "completion tokens / trace", "prompt tokens ÷ ragas",
            "process CPU ms / trace (median, min–max)", "scores ok", "of which NaN",
            "non-loopback refused"]  # fmt: skip
    lines = [table(head, rows), ""]
    lines.append(
        f"{args.cases} traces × {args.reps} rounds, judge latency 0 ms; ours: "
        f"{args.concurrency} traces in flight, a trace's rubrics concurrently; peers: "
        f"{args.peer_concurrency or 'all'} traces in flight, each running its metrics concurrently"
    )
    if ragas_tokens and "ours-combined" in res:
        ours = res["ours-combined"]
        share = ours["prompt_tokens"].median / ragas_tokens
        calls = ours["calls"].median
        verdict = {True: "met", False: "not met"}
        lines.append(
            f"goal (issue 16): ≤ 1 call — {fmt(calls)} calls: {verdict[calls <= 1]}; "
            f"≤ {GOAL_SHARE:.0%} of ragas's prompt tokens for the same three metrics — "
            f"{share:.1%}: {verdict[share <= GOAL_SHARE]}"
        )
    lines += [
        f"- {info[name]['label']}: skipped — {info[name]['skipped']}"
        for name in args.peers
        if name not in ran
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=120)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=32, help="our traces in flight")
    p.add_argument("--peer-concurrency", type=int, default=16, help="peer traces in flight")
    p.add_argument("--peers", nargs="*", choices=sorted(PEERS), default=list(PEERS))
    p.add_argument("--json", help="write the summaries to this file")
    args = p.parse_args(argv)
    print(f"$ {command_line()}\nmachine: {machine()}\n")
    res, info = run(args)
    print(render(res, info, args))
    if args.json:
        with open(args.json, "w") as f:
            out = {k: {m: asdict(s) for m, s in d.items()} for k, d in res.items()}
            json.dump({**out, "peers": info}, f, indent=2)


if __name__ == "__main__":
    main()
