"""Rubrics are data: a frozen, validated description of what to score and how.

Parsed from TOML by the service (evaluator.config.rubrics); usable directly as a library:

    Rubric.model_validate({"name": "tone", "version": "1", "scorer": "llm_rubric",
                           "llm_rubric": {"criteria": "Is the answer polite?"}})
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from judges.anchors import AnchorSpec

ScorerKind = Literal[
    "llm_rubric",
    "faithfulness",
    "answer_relevance",
    "context_relevance",
    "self_consistency",
    "tool_use",
    "tool_selection",
]

# Which methods each scorer supports; the first one is the default.
METHODS: dict[str, tuple[str, ...]] = {
    "llm_rubric": ("judge",),
    "faithfulness": ("judge", "local", "cascade", "two_step", "ragas"),
    "answer_relevance": ("judge", "local", "ragas"),
    "context_relevance": ("judge", "local"),
    "self_consistency": ("embeddings", "judge"),
    "tool_use": ("local",),
    "tool_selection": ("judge",),
}

# cascade runs its local step without a judge and records that it could not escalate.
NEEDS_JUDGE = frozenset({"judge", "two_step", "ragas"})


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppliesTo(_Frozen):
    """Which traces the rubric evaluates; an empty list means any value."""

    features: tuple[str, ...] = ()
    prompt_versions: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        for allowed, key in (
            (self.features, "feature"),
            (self.prompt_versions, "prompt_version"),
            (self.models, "model"),
            (self.tenants, "tenant"),
        ):
            if allowed and labels.get(key) not in allowed:
                return False
        return True


class SamplingPolicy(_Frozen):
    rate: float | None = Field(None, ge=0, le=1)


class JudgeOverride(_Frozen):
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)


class Scale(_Frozen):
    min: int = 1
    max: int = 5

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if self.max <= self.min:
            raise ValueError(f"scale.max ({self.max}) must be greater than scale.min ({self.min})")
        return self

    def normalise(self, raw: float) -> float:
        return (raw - self.min) / (self.max - self.min)


class LLMRubricSpec(_Frozen):
    criteria: str = Field(min_length=1)
    steps: tuple[str, ...] = ()
    inputs: tuple[Literal["question", "answer", "contexts", "tool_calls"], ...] = (
        "question",
        "answer",
    )


class Rubric(_Frozen):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    version: str = Field(min_length=1, max_length=64)
    scorer: ScorerKind
    method: str | None = None
    description: str = ""
    pass_threshold: float = Field(0.7, ge=0, le=1)
    applies_to: AppliesTo = AppliesTo()
    sampling: SamplingPolicy = SamplingPolicy()
    judge: JudgeOverride = JudgeOverride()
    scale: Scale = Scale()
    llm_rubric: LLMRubricSpec | None = None
    # Scorer-specific knobs (e.g. samples for self_consistency); validated by the scorer.
    options: dict[str, Any] = Field(default_factory=dict)
    # Read by the regression check; kept as data here.
    regression: dict[str, Any] = Field(default_factory=dict)
    anchors: AnchorSpec | None = None  # labelled anchor set re-scored for drift (judges.anchors)

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        allowed = METHODS[self.scorer]
        if self.method is not None and self.method not in allowed:
            raise ValueError(
                f"method {self.method!r} is not available for scorer {self.scorer!r}; "
                f"use one of {', '.join(allowed)}"
            )
        if self.scorer == "llm_rubric" and self.llm_rubric is None:
            raise ValueError("scorer 'llm_rubric' needs an [llm_rubric] table with 'criteria'")
        return self

    @property
    def resolved_method(self) -> str:
        return self.method or METHODS[self.scorer][0]

    @property
    def needs_judge(self) -> bool:
        return self.resolved_method in NEEDS_JUDGE
