"""The combined RAG judge prompt: faithfulness, answer and context relevance in one call (pure).

The question, documents and answer are sent once; the reply carries the three verdict sets
in one JSON object. The instructions reuse the separate prompts' rules word for word, so a
verdict means the same thing whichever method asked for it. Everything that varies per
trace is in the user message, after a fixed system message: providers' prefix caches and
vLLM's automatic prefix caching reuse the system part across traces.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, Field, create_model, model_validator

from judges.prompts import DATA_RULES, case_blocks, chat
from judges.scorers.faithfulness_prompts import (
    CLAIM_RULES,
    VERDICT_RULES,
    ClaimCheck,
    claims_or_flag,
)
from judges.scorers.relevance import (
    ANSWER_VERDICT_RULES,
    AnswerRelevanceReply,
    DocumentVerdict,
    _DocumentVerdicts,
)
from judges.types import EvalCase

# Part of the shared-call key: a reply to an older prompt is never served to a newer one.
PROMPT_VERSION = "combined-1"

SYSTEM = (
    "You evaluate one answer of a retrieval-augmented AI app against the user's question and "
    "the retrieved documents, in three parts.\n"
    f"{DATA_RULES}\n"
    "1. documents: is each document useful for answering the question?\n"
    "2. answer_relevance: does the answer address the question? Judge relevance only, not "
    f"correctness. {ANSWER_VERDICT_RULES}\n"
    f"3. claims: {CLAIM_RULES}\n{VERDICT_RULES}\n"
    'Reply with JSON: {"documents": [{"id": document number, "reason": str, "relevant": bool}] '
    'one entry per document, "answer_relevance": {"reason": str, "verdict": '
    '"direct"|"partial"|"evasive"|"off_topic"}, "claims": [{"claim": str, "context_ids": '
    '[document numbers], "reason": str, "verdict": "supported"|"contradicted"|"not_found"}], '
    '"no_factual_claims": bool}. If the answer makes no factual claim, give an empty claims '
    "list and no_factual_claims true."
)


class CombinedReply(_DocumentVerdicts):
    """All three verdict sets, in the order the judge should think them through; each part
    keeps the validation its separate reply has."""

    documents: list[DocumentVerdict]
    answer_relevance: AnswerRelevanceReply
    claims: list[ClaimCheck] = Field(default_factory=list)
    no_factual_claims: bool = False

    @model_validator(mode="after")
    def _claims_or_flag(self) -> CombinedReply:
        return claims_or_flag(self)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Titles only restate property names: ~100 billed prompt tokens per call for nothing.
        schema: dict[str, Any] = untitled(super().model_json_schema(*args, **kwargs))
        return schema


def untitled(schema: Any, *, in_properties: bool = False) -> Any:
    """`schema` without its "title" keywords (a property that is named "title" stays)."""
    if isinstance(schema, list):
        return [untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: untitled(value, in_properties=key in ("properties", "$defs") and not in_properties)
        for key, value in schema.items()
        if in_properties or key != "title"
    }


@functools.lru_cache(maxsize=64)  # one class per document count: the schema cache hits
def combined_schema(n_documents: int) -> type[BaseModel]:
    """The reply for a case with `n_documents` documents (a short list is re-asked)."""
    return create_model(
        "CombinedVerdicts",
        __base__=CombinedReply,
        documents=(list[DocumentVerdict], Field(min_length=n_documents, max_length=n_documents)),
    )


def render_combined(case: EvalCase) -> list[dict[str, str]]:
    return chat(SYSTEM, case_blocks(case, question=True, documents=True, answer=True))
