"""The deepeval side of bench/throughput.py and bench/rag3_cost.py; runs in its own venv
(/work/venv-deepeval).

    python3 -m venv /work/venv-deepeval && /work/venv-deepeval/bin/pip install deepeval
    PYTHONPATH=bench/peer_guard /work/venv-deepeval/bin/python \
        bench/deepeval_peer.py CASES.json [SET]

Line protocol, metric sets and loopback guard: bench/peer_protocol.py. Imports nothing from
this project. Each case is scored with deepeval's FaithfulnessMetric (retrieval_context = the
contexts) and AnswerRelevancyMetric — set `pair`, the same pair as ours and ragas's — plus,
in set `rag3`, ContextualRelevancyMetric (statements per retrieved context judged relevant to
the input, no reference), all at once, through `metric.a_measure`, with deepeval's defaults
(include_reason=True: one more judge call per metric for the explanation) on an
`OpenAIModel` pointed at the loopback judge (structured output through
`beta.chat.completions.parse`). The peer runs in a scratch working directory because deepeval
writes a `.deepeval/` folder there.
Telemetry: DEEPEVAL_TELEMETRY_OPT_OUT=1 (its PostHog client), DEEPEVAL_UPDATE_WARNING_OPT_IN
unset (no PyPI version check), CONFIDENT_API_KEY unset (no upload), set by throughput.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # peer_protocol, after chdir
from peer_protocol import ScoreCase, metric_set, serve

METRICS = {
    "pair": ["FaithfulnessMetric", "AnswerRelevancyMetric"],
    "rag3": ["FaithfulnessMetric", "AnswerRelevancyMetric", "ContextualRelevancyMetric"],
}


def make_scorer(base_url: str) -> tuple[ScoreCase, Callable[[], Awaitable[None]]]:
    from deepeval.metrics import (
        AnswerRelevancyMetric,
        ContextualRelevancyMetric,
        FaithfulnessMetric,
    )
    from deepeval.models import OpenAIModel
    from deepeval.test_case import LLMTestCase

    rag3 = metric_set() == "rag3"
    model = OpenAIModel(model="gpt-4o-mini", base_url=base_url, api_key="bench", temperature=0)

    def score_case(case: dict[str, Any]) -> list[Awaitable[float]]:
        test_case = LLMTestCase(
            input=case["question"],
            actual_output=case["answer"],
            retrieval_context=case["contexts"],
        )
        # A metric object keeps the last result on itself: one per case and metric.
        metrics = [FaithfulnessMetric(model=model), AnswerRelevancyMetric(model=model)]
        if rag3:
            metrics.append(ContextualRelevancyMetric(model=model))
        return [m.a_measure(test_case, _show_indicator=False) for m in metrics]

    async def close() -> None:
        return None  # OpenAIModel opens a client per call; nothing is left open

    return score_case, close


def main() -> None:
    os.chdir(tempfile.mkdtemp(prefix="bench-deepeval-"))
    # Pay the import cost here, before any timed round.
    import deepeval
    import deepeval.metrics

    serve(
        {
            "version": deepeval.__version__,
            "metrics": METRICS[metric_set()],
        },
        make_scorer,
    )


if __name__ == "__main__":
    main()
