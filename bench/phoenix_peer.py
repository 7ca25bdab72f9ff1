"""The phoenix-evals side of bench/throughput.py and bench/rag3_cost.py; runs in its own venv
(/work/venv-phoenix).

    python3 -m venv /work/venv-phoenix &&
        /work/venv-phoenix/bin/pip install arize-phoenix-evals openai
    PYTHONPATH=bench/peer_guard /work/venv-phoenix/bin/python bench/phoenix_peer.py CASES.json [SET]

Line protocol and loopback guard: bench/peer_protocol.py. Imports nothing from this project.
Each case is scored with phoenix-evals' own RAG metrics, both at once: FaithfulnessEvaluator
(question, answer, contexts joined) and RetrievalRelevanceEvaluator (question, contexts
joined — context relevance). phoenix-evals 3.x ships no answer-relevance metric, so its pair
differs from ours and ragas's; the table says so. Both metric sets of peer_protocol.py
(`pair`, `rag3`) score these two: its set for the three RAG rubrics lacks answer relevance
(its other evaluators — correctness, completeness of a conversation's requests, conciseness —
judge different things), and the ready line says so. Its `LLM(provider="openai")` wrapper builds
an AsyncOpenAI client (its own max_retries=0) pointed at the loopback judge; classification
goes through structured output (json_schema) with a tool-call fallback.
Its LLM wrapper also puts a client-side adaptive rate limiter in front of the client, starting
at 5 requests/s and rising slowly while no rate-limit error comes back: that, not CPU, bounds
its evaluations/s with defaults. PHOENIX_PEER_RATE=N sets `initial_per_second_request_rate`
(for a second, lifted run); unset = phoenix's default, what the side-by-side table uses.
Telemetry: phoenix-evals sends none of its own; spans go to OpenTelemetry's global tracer,
which is a no-op unless an app installs one; OTEL_SDK_DISABLED=true is set all the same.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from peer_protocol import ScoreCase, metric_set, serve


def make_scorer(base_url: str) -> tuple[ScoreCase, Callable[[], Awaitable[None]]]:
    from phoenix.evals import LLM
    from phoenix.evals.metrics import FaithfulnessEvaluator, RetrievalRelevanceEvaluator

    rate = os.environ.get("PHOENIX_PEER_RATE")
    limiter = {"initial_per_second_request_rate": float(rate)} if rate else {}
    llm = LLM(provider="openai", model="gpt-4o-mini", base_url=base_url, api_key="bench", **limiter)
    faithfulness = FaithfulnessEvaluator(llm=llm)
    relevance = RetrievalRelevanceEvaluator(llm=llm)

    async def value(pending: Awaitable[list[Any]]) -> float:
        scores = await pending
        if not scores or scores[0].score is None:
            raise ValueError(f"no score: {scores!r}"[:200])
        return float(scores[0].score)

    def score_case(case: dict[str, Any]) -> list[Awaitable[float]]:
        context = "\n\n".join(case["contexts"])
        return [
            value(
                faithfulness.async_evaluate(
                    {"input": case["question"], "output": case["answer"], "context": context}
                )
            ),
            value(relevance.async_evaluate({"input": case["question"], "context": context})),
        ]

    async def close() -> None:
        await llm._async_client.close()  # the AsyncOpenAI client behind phoenix's wrapper

    return score_case, close


def main() -> None:
    # Pay the import cost here, before any timed round.
    import openai  # noqa: F401  (phoenix imports its provider SDK lazily, at first use)
    import phoenix.evals
    import phoenix.evals.metrics

    rate = os.environ.get("PHOENIX_PEER_RATE")
    serve(
        {
            "version": phoenix.evals.__version__ + (f" (limiter from {rate}/s)" if rate else ""),
            "metrics": ["FaithfulnessEvaluator", "RetrievalRelevanceEvaluator"],
            "missing": ["answer relevance"] if metric_set() == "rag3" else [],
        },
        make_scorer,
    )


if __name__ == "__main__":
    main()
