"""The ragas side of bench/throughput.py; runs in its own venv (/work/venv-ragas).

ragas 0.4.3 pins openai<2 and langchain-community<0.4, which conflict with this project's
openai 2.x, so it cannot share the interpreter. Imports nothing from this project.

    /work/venv-ragas/bin/python bench/ragas_peer.py CASES.json

Protocol (so ragas is imported once and rounds can interleave with ours): one JSON command
per stdin line, `{"base_url": ..., "concurrency": 16}`; one JSON result per stdout line,
`{"cases": n, "elapsed_s": ..., "cpu_s": ..., "errors": [...]}`. Each case is scored with
ragas's modern collections metrics, Faithfulness and AnswerRelevancy (strictness 3), both
at once; `concurrency` bounds the cases in flight (0 = all at once, as `abatch_score` does).
Embeddings go to the bench judge server's /embeddings (deterministic fake vectors).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from typing import Any


async def run_round(cases: list[dict[str, Any]], base_url: str, concurrency: int) -> dict[str, Any]:
    from openai import AsyncOpenAI
    from ragas.embeddings.base import embedding_factory
    from ragas.llms.base import llm_factory
    from ragas.metrics.collections import AnswerRelevancy, Faithfulness

    # The openai SDK's own retries stay on (2, its default), as a ragas user would have them.
    client = AsyncOpenAI(base_url=base_url, api_key="bench", timeout=60.0)
    llm = llm_factory("gpt-4o-mini", client=client)
    embeddings = embedding_factory("openai", model="text-embedding-3-small", client=client)
    faithfulness = Faithfulness(llm=llm)
    relevancy = AnswerRelevancy(llm=llm, embeddings=embeddings)
    limit = asyncio.Semaphore(concurrency if concurrency > 0 else len(cases) or 1)
    errors: list[str] = []
    values: list[float] = []

    async def one(case: dict[str, Any]) -> None:
        async with limit:
            results = await asyncio.gather(
                faithfulness.ascore(
                    user_input=case["question"],
                    response=case["answer"],
                    retrieved_contexts=case["contexts"],
                ),
                relevancy.ascore(user_input=case["question"], response=case["answer"]),
                return_exceptions=True,
            )
        for r in results:
            if isinstance(r, BaseException):
                errors.append(f"{type(r).__name__}: {r}"[:300])
            else:
                values.append(float(r.value))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(c) for c in cases))
    elapsed, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await client.close()
    return {
        "cases": len(cases),
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "scores": len(values),
        "nan_scores": sum(math.isnan(v) for v in values),
        "errors": errors[:5],
        "error_count": len(errors),
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    # Pay the import cost here, before any timed round.
    import ragas
    import ragas.metrics.collections

    print(json.dumps({"ready": True, "ragas": ragas.__version__}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        result = asyncio.run(run_round(cases, command["base_url"], int(command["concurrency"])))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
