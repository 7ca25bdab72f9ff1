"""The (scorer, method) registry: one row per method, and what each needs as the service asks it."""

from __future__ import annotations

from typing import Any

import pytest

from judges.llm.client import JudgeClient
from judges.rubric import METHODS, Rubric
from judges.scorers.registry import (
    REGISTRY,
    calls_judge,
    escalates,
    missing_needs,
    needs,
    needs_judge,
    precheck,
    wants_embeddings,
)
from judges.types import Clients, Context, EvalCase, Status


def rubric(scorer: str, method: str, **extra: Any) -> Rubric:
    if scorer == "llm_rubric":
        extra.setdefault("llm_rubric", {"criteria": "Is it polite?"})
    return Rubric.model_validate(
        {"name": "r", "version": "1", "scorer": scorer, "method": method, **extra}
    )


def test_every_method_has_one_row() -> None:
    assert set(REGISTRY) == {(s, m) for s, methods in METHODS.items() for m in methods}


@pytest.mark.parametrize(("scorer", "method"), sorted(REGISTRY))
def test_what_a_method_needs_of_the_judge(scorer: str, method: str) -> None:
    r = rubric(scorer, method)
    # A cascade asks the judge only when unsure; local and embedding methods never do.
    assert needs_judge(r) == (method in {"judge", "two_step", "ragas", "combined"})
    assert escalates(r) == (method == "cascade")
    assert calls_judge(r) == (needs_judge(r) or method == "cascade")


def test_rubric_dependent_needs() -> None:
    plain = rubric("llm_rubric", "judge")
    agentic = rubric("llm_rubric", "judge", llm_rubric={"criteria": "c", "inputs": ["tool_calls"]})
    assert "tool_calls" not in needs(plain) and "tool_calls" in needs(agentic)
    # The local faithfulness step uses embeddings only when the rubric opts in.
    assert not wants_embeddings(rubric("faithfulness", "cascade"))
    assert wants_embeddings(rubric("faithfulness", "cascade", options={"local_embeddings": True}))
    assert wants_embeddings(rubric("context_relevance", "local"))


def test_missing_clients_are_named_and_skip_the_case() -> None:
    case = EvalCase("t", "s", "What does Pro cost?", "$20.", contexts=(Context("d", "Pro: $20"),))
    ragas = rubric("answer_relevance", "ragas")
    assert missing_needs(ragas, Clients()) == ["judge", "embeddings"]
    judge = JudgeClient(base_url="http://127.0.0.1:9/v1", model="m")
    assert missing_needs(ragas, Clients(judge=judge)) == ["embeddings"]
    skipped = precheck(case, rubric("self_consistency", "embeddings"), Clients())
    assert skipped is not None and skipped.status is Status.SKIPPED
    assert "[embeddings]" in skipped.explanation
    no_judge = precheck(case, rubric("faithfulness", "judge"), Clients())
    assert no_judge is not None and "needs a judge" in no_judge.explanation
    assert precheck(case, rubric("faithfulness", "cascade"), Clients()) is None
