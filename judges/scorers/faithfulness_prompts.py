"""What the faithfulness judge is asked, and the shape its replies must have (pure, no calls).

Holds the prompts for the one-call judge and for the two-step extract/verify recipe, and the
pydantic schemas each reply is validated against. Sending them and scoring the verdicts is
``judges.scorers.faithfulness``'s job.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, create_model, model_validator

from judges.prompts import DATA_RULES, case_blocks, chat, fence, numbered, render_documents
from judges.rubric import Rubric
from judges.types import EvalCase

Verdict = Literal["supported", "contradicted", "not_found"]

# --- reply schemas ---------------------------------------------------------------------


class ClaimCheck(BaseModel):
    claim: str = Field(min_length=1)
    context_ids: list[int] = Field(
        default_factory=list, description="numbers of the documents used"
    )
    reason: str = Field("", description="a few words")
    verdict: Verdict


class _ClaimsOrNone(BaseModel):
    no_factual_claims: bool = False

    @model_validator(mode="after")
    def _claims_or_flag(self) -> _ClaimsOrNone:
        return claims_or_flag(self)


_M = TypeVar("_M", bound=BaseModel)


def claims_or_flag(reply: _M) -> _M:
    # An empty list is only credible when the judge says so: otherwise it is a lazy reply
    # and the client re-asks, instead of us scoring an answer nobody read.
    if not getattr(reply, "claims", None) and not getattr(reply, "no_factual_claims", False):
        raise ValueError(
            "claims is empty: list the answer's claims, or set no_factual_claims to true"
        )
    return reply


class FaithfulnessReply(_ClaimsOrNone):
    claims: list[ClaimCheck] = Field(default_factory=list)


class ClaimList(_ClaimsOrNone):
    claims: list[str] = Field(default_factory=list)


class _Check(BaseModel):
    context_ids: list[int] = Field(default_factory=list)
    reason: str = ""
    verdict: Verdict


class _Checks(BaseModel):
    """The type of every `verification_schema` (which adds the length bounds)."""

    checks: list[_Check]


@functools.lru_cache(maxsize=64)  # one class per length, so the client's schema cache hits
def verification_schema(n_claims: int) -> type[_Checks]:
    """Step-2 reply: exactly one check per claim, in order (a short list is re-asked)."""
    return create_model(
        "ClaimVerdicts",
        __base__=_Checks,
        checks=(list[_Check], Field(min_length=n_claims, max_length=n_claims)),
    )


# --- prompts (pure) --------------------------------------------------------------------

VERDICT_RULES = (
    "Verdicts, using the documents only (not your own knowledge): supported = a document "
    "states or directly implies it; contradicted = a document says otherwise; not_found = "
    "the documents do not settle it."
)
CLAIM_RULES = (
    "Claims: the answer's atomic factual statements, each self-contained (resolve pronouns), "
    "one fact each; skip greetings, questions, opinions and offers of help."
)


def render_judge(case: EvalCase) -> list[dict[str, str]]:
    system = (
        "You check whether an AI answer is grounded in retrieved documents.\n"
        f"{DATA_RULES}\n{CLAIM_RULES}\n{VERDICT_RULES}\n"
        'Reply with JSON: {"claims": [{"claim": str, "context_ids": [document numbers], '
        '"reason": str, "verdict": "supported"|"contradicted"|"not_found"}], '
        '"no_factual_claims": bool}. If the answer makes no factual claim, give an empty '
        "list and no_factual_claims true."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": _inputs(case)}]


def render_extract(case: EvalCase) -> list[dict[str, str]]:
    system = (
        "You split an AI answer into claims.\n"
        f"{DATA_RULES}\n{CLAIM_RULES}\n"
        'Reply with JSON: {"claims": [str], "no_factual_claims": bool}. If the answer makes '
        "no factual claim, give an empty list and no_factual_claims true."
    )
    return chat(system, case_blocks(case, question=True, answer=True))


def render_verify(case: EvalCase, claims: Sequence[str]) -> list[dict[str, str]]:
    system = (
        "You verify claims against retrieved documents.\n"
        f"{DATA_RULES}\n{VERDICT_RULES}\n"
        'Reply with JSON: {"checks": [{"context_ids": [document numbers], "reason": str, '
        '"verdict": ...}]}: one check per claim, in the order given.'
    )
    user = (
        "Documents:\n"
        + render_documents(case.contexts)
        + "\n\nClaims:\n"
        + fence("claims", numbered(claims))
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _inputs(case: EvalCase) -> str:
    return case_blocks(case, question=True, documents=True, answer=True)


def no_claims_policy(rubric: Rubric) -> str:
    return str(rubric.typed_options.no_claims)  # validated with the rubric (judges/options.py)
