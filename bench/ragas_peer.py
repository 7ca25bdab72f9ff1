"""The ragas side of bench/throughput.py and bench/rag3_cost.py; runs in its own venv
(/work/venv-ragas).

ragas 0.4.3 pins openai<2 and langchain-community<0.4, which conflict with this project's
openai 2.x, so it cannot share the interpreter. Imports nothing from this project.

    PYTHONPATH=bench/peer_guard /work/venv-ragas/bin/python bench/ragas_peer.py CASES.json [SET]

Line protocol, metric sets and loopback guard: bench/peer_protocol.py. Each case is scored
with ragas's modern collections metrics, all at once: Faithfulness and AnswerRelevancy
(strictness 3) — set `pair` — plus, in set `rag3`, ContextRelevance. ContextRelevance is
ragas's metric for "are the retrieved contexts relevant to the question", judged without a
reference or the response (NVIDIA's two-judge prompt, 0/1/2 each, averaged: two calls), which
is what our context_relevance rubric judges. Not ContextPrecisionWithoutReference: that one
(= ContextUtilization) asks, per context, whether it was useful for the *response*, not the
question.
Embeddings go to the bench judge server's /embeddings (deterministic fake vectors).
Telemetry: RAGAS_DO_NOT_TRACK=true (set by throughput.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from peer_protocol import ScoreCase, metric_set, serve

METRICS = {
    "pair": ["Faithfulness", "AnswerRelevancy(3)"],
    "rag3": ["Faithfulness", "AnswerRelevancy(3)", "ContextRelevance"],
}


def make_scorer(base_url: str) -> tuple[ScoreCase, Callable[[], Awaitable[None]]]:
    from openai import AsyncOpenAI
    from ragas.embeddings.base import embedding_factory
    from ragas.llms.base import llm_factory
    from ragas.metrics.collections import AnswerRelevancy, ContextRelevance, Faithfulness

    # The openai SDK's own retries stay on (2, its default), as a ragas user would have them.
    client = AsyncOpenAI(base_url=base_url, api_key="bench", timeout=60.0)
    llm = llm_factory("gpt-4o-mini", client=client)
    embeddings = embedding_factory("openai", model="text-embedding-3-small", client=client)
    faithfulness = Faithfulness(llm=llm)
    relevancy = AnswerRelevancy(llm=llm, embeddings=embeddings)
    contexts = ContextRelevance(llm=llm) if metric_set() == "rag3" else None

    async def value(pending: Awaitable[Any]) -> float:
        return float((await pending).value)

    def score_case(case: dict[str, Any]) -> list[Awaitable[float]]:
        pending = [
            value(
                faithfulness.ascore(
                    user_input=case["question"],
                    response=case["answer"],
                    retrieved_contexts=case["contexts"],
                )
            ),
            value(relevancy.ascore(user_input=case["question"], response=case["answer"])),
        ]
        if contexts is not None:
            pending.append(
                value(
                    contexts.ascore(
                        user_input=case["question"], retrieved_contexts=case["contexts"]
                    )
                )
            )
        return pending

    return score_case, client.close


def main() -> None:
    # Pay the import cost here, before any timed round.
    import ragas
    import ragas.metrics.collections

    serve({"version": ragas.__version__, "metrics": METRICS[metric_set()]}, make_scorer)


if __name__ == "__main__":
    main()
