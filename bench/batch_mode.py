"""Batch vs online mode for one llm_rubric: HTTP requests and judge calls per trace, and the
latency from enqueue to the last record, against the loopback Batch API (bench/batch_server.py).

    python -m bench.batch_mode --traces 200 --batch-delay 2 --poll-s 0.5

Both modes run the real worker path in this process: ingest, enqueue, a burst worker
(evaluate_trace), and in batch mode the batch cron job (`run_batches`) every `--poll-s`
seconds (the deployed worker runs it once a minute: add up to two minutes to the batch
latency, one to submit and one to collect). Redis is the real one (db 0, a fresh key prefix
per run), the database a temporary SQLite file. The server answers online calls after
`--latency` ms and a batch `--batch-delay` s after it was created.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from evaluator.config.settings import Settings, load_settings
from evaluator.intake.enqueue import TraceEnqueuer
from evaluator.sources.ingest import ingest_traces
from evaluator.store.store import Store
from evaluator.worker.app import run_burst
from evaluator.worker.batch import run_batches
from evaluator.worker.runtime import build_runtime

from .batch_server import BatchBehaviour, BatchJudgeServer
from .judge_server import ServerConfig
from .report import command_line, machine, table

RUBRIC = """mode = "{mode}"
name = "tone"
version = "1"
scorer = "llm_rubric"
[sampling]
rate = 1.0
[llm_rubric]
criteria = "Is the answer polite and direct?"
inputs = ["question", "answer"]
"""


def trace(trace_id: str) -> dict[str, Any]:
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "app-model",
        "gen_ai.input.messages": [
            {"role": "user", "parts": [{"type": "text", "content": f"Question {trace_id}?"}]}
        ],
        "gen_ai.output.messages": [
            {"role": "assistant", "parts": [{"type": "text", "content": f"Answer {trace_id}."}]}
        ],
    }
    span = {
        "span_id": f"{trace_id}-c",
        "name": "chat",
        "start_time": "2026-01-01T00:00:00Z",
        "end_time": "2026-01-01T00:00:01Z",
        "attributes": chat,
    }
    return {"trace_id": trace_id, "attributes": {}, "spans": [span]}


def settings_for(root: Path, mode: str, url: str, redis_url: str) -> Settings:
    (root / "rubrics").mkdir()
    (root / "rubrics" / "tone.toml").write_text(RUBRIC.format(mode=mode))
    prefix = f"bench-batch-{mode}-{int(time.time() * 1000)}"
    path = root / "settings.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\nkey_prefix = "{prefix}"\nqueue_name = "{prefix}:q"\n'
        f'[database]\nurl = "sqlite:///{root / "evals.db"}"\n'
        f'[rubrics]\ndir = "{root / "rubrics"}"\n'
        f'[judge]\nbase_url = "{url}"\ncache_ttl_s = 0\n'
    )
    return load_settings(path, environ={})


def count_records(settings: Settings) -> int:
    store = Store(settings.database.url)
    try:
        return len(store.records(limit=1_000_000))
    finally:
        store.close()


async def one_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    server = BatchJudgeServer(
        ServerConfig(latency=str(args.latency)), BatchBehaviour(delay_s=args.batch_delay)
    )
    url = await server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_for(Path(tmp), mode, url, args.redis_url)
            ids = [f"{settings.redis.key_prefix}-{i}" for i in range(args.traces)]
            store = Store(settings.database.url)
            ingest_traces(store, [trace(t) for t in ids])
            store.close()
            requests_before = server.stats.requests
            started = time.perf_counter()
            enq = TraceEnqueuer(settings.redis.url, key_prefix=settings.redis.key_prefix)
            for trace_id in ids:
                enq.enqueue(trace_id)
            await enq.flush()
            await enq.aclose()
            await run_burst(settings)
            if mode == "batch":
                runtime = await asyncio.to_thread(build_runtime, settings)
                try:
                    while count_records(settings) < len(ids):
                        await run_batches(runtime)
                        await asyncio.sleep(args.poll_s)
                finally:
                    await runtime.aclose()
            elapsed = time.perf_counter() - started
            written = count_records(settings)
    finally:
        await server.close()
    b = server.batch_stats
    # JudgeServer counts every HTTP request it routes itself; the batch routes are counted
    # in batch_stats (uploads, lists, creates, polls, downloads).
    http = server.stats.requests - requests_before
    http += b.files_uploaded + b.lists + b.batches_created + b.polls + b.downloads
    return {
        "mode": mode,
        "records": written,
        "http": http,
        "judge_calls": server.stats.chat_calls,
        "prompt_tokens": server.stats.prompt_tokens,
        "batches": b.batches_created,
        "polls": b.polls,
        "elapsed_s": elapsed,
    }


async def main_async(args: argparse.Namespace) -> None:
    rows = [await one_mode(mode, args) for mode in ("online", "batch")]
    n = args.traces
    print(command_line())
    print(machine())
    print(
        table(
            [
                "mode",
                "records",
                "HTTP requests / trace",
                "judge completions / trace",
                "batches",
                "polls",
                "enqueue → last record (s)",
            ],
            [
                [
                    r["mode"],
                    str(r["records"]),
                    f"{r['http'] / n:.3f}",
                    f"{r['judge_calls'] / n:.2f}",
                    str(r["batches"]),
                    str(r["polls"]),
                    f"{r['elapsed_s']:.2f}",
                ]
                for r in rows
            ],
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--traces", type=int, default=200)
    p.add_argument("--latency", type=float, default=300.0, help="online judge ms per call")
    p.add_argument("--batch-delay", type=float, default=2.0, help="s until a batch completes")
    p.add_argument("--poll-s", type=float, default=0.5, help="s between batch cron runs")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    main()
