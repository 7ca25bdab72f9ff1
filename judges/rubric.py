"""Rubrics are data: a frozen, validated description of what to score and how.

Parsed from TOML by the service (evaluator.config.rubrics); usable directly as a library:

    Rubric.model_validate({"name": "tone", "version": "1", "scorer": "llm_rubric",
                           "llm_rubric": {"criteria": "Is the answer polite?"}})
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from judges.anchors import AnchorSpec
from judges.options import parse_options

ScorerKind = Literal[
    "llm_rubric",
    "faithfulness",
    "answer_relevance",
    "context_relevance",
    "self_consistency",
    "tool_use",
    "tool_selection",
]

# Which methods each scorer supports; the first one is the default. What each method needs
# and runs is its row in judges/scorers/registry.py (which checks it has one for each).
METHODS: dict[str, tuple[str, ...]] = {
    "llm_rubric": ("judge",),
    "faithfulness": ("judge", "local", "cascade", "two_step", "ragas", "combined"),
    "answer_relevance": ("judge", "local", "ragas", "combined"),
    "context_relevance": ("judge", "local", "combined"),
    "self_consistency": ("embeddings", "judge"),
    "tool_use": ("local",),
    "tool_selection": ("judge",),
}

# Scorers whose verdict is one judge call, so it can wait in a Batch API file.
BATCHABLE = frozenset({"llm_rubric"})


def _storable(limit: int) -> Callable[[str], str]:
    """Text the service stores in a column `limit` characters wide (evaluator/store/models.py):
    NUL breaks every PostgreSQL insert and a lone surrogate cannot be encoded as UTF-8."""

    def check(value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain a NUL character (\\u0000)")
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            raise ValueError("must not contain a lone surrogate (\\ud800-\\udfff)")
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("must not contain control characters (tab, newline, ...)")
        if len(value) > limit:
            raise ValueError(
                f"at most {limit} characters (database column width), got {len(value)}"
            )
        return value

    return check


Version = Annotated[str, AfterValidator(_storable(64))]
Label = Annotated[str, AfterValidator(_storable(256))]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AppliesTo(_Frozen):
    """Which traces the rubric evaluates; an empty list means any value."""

    features: tuple[Label, ...] = ()
    prompt_versions: tuple[Label, ...] = ()
    models: tuple[Label, ...] = ()
    tenants: tuple[Label, ...] = ()

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


class RubricBudget(_Frozen):
    """This rubric's own cap on evaluations (the worker's [budget] keeps the other knobs);
    0 = no cap of its own."""

    usd_per_day: float = Field(0.0, ge=0)
    calls_per_minute: int = Field(0, ge=0)


class JudgeOverride(_Frozen):
    """The rubric's `[judge]` table: what this rubric's judge calls use instead of the
    worker's `[judge]` settings."""

    model: Label | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    # The reply budget (max_tokens) of this rubric's judge calls; None = estimated from the
    # reply schema (judges.llm.budget), capped by judge.max_output_tokens. A reply cut at
    # its budget is retried once with twice the budget.
    max_output_tokens: int | None = Field(None, ge=16, le=65_536)


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
    version: Version = Field(min_length=1)
    scorer: ScorerKind
    method: str | None = None
    description: str = ""
    pass_threshold: float = Field(0.7, ge=0, le=1)
    applies_to: AppliesTo = AppliesTo()
    sampling: SamplingPolicy = SamplingPolicy()
    budget: RubricBudget = RubricBudget()
    judge: JudgeOverride = JudgeOverride()
    scale: Scale = Scale()
    llm_rubric: LLMRubricSpec | None = None
    # Scorer-specific knobs, validated against the scorer's model (judges/options.py).
    options: dict[str, Any] = Field(default_factory=dict)
    # Read by the regression check; validated by evaluator.config.policy when loaded.
    regression: dict[str, Any] = Field(default_factory=dict)
    anchors: AnchorSpec | None = None  # labelled anchor set re-scored for drift (judges.anchors)
    # "batch": the judge call goes through the provider's Batch API (half the price, results
    # within the completion window) instead of inside the job. Same prompt, same verdict.
    mode: Literal["online", "batch"] = "online"

    @field_validator("options")
    @classmethod
    def _typed_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        scorer, method = info.data.get("scorer"), info.data.get("method")
        if scorer is None or (method is not None and method not in METHODS[scorer]):
            return value  # the scorer or method error is reported on its own key
        parse_options(scorer, method or METHODS[scorer][0], value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        allowed = METHODS[self.scorer]
        if self.method is not None and self.method not in allowed:
            raise ValueError(
                f"method {self.method!r} is not available for scorer {self.scorer!r}; "
                f"use one of {', '.join(allowed)}"
            )
        if self.mode == "batch" and self.scorer not in BATCHABLE:
            raise ValueError(
                f"mode 'batch' is available for scorer {', '.join(sorted(BATCHABLE))} only "
                f"(one judge call per trace); scorer {self.scorer!r} makes dependent calls"
            )
        if self.scorer == "llm_rubric" and self.llm_rubric is None:
            raise ValueError("scorer 'llm_rubric' needs an [llm_rubric] table with 'criteria'")
        return self

    @cached_property
    def typed_options(self) -> Any:
        """The options as the scorer's model (judges/options.py), defaults filled in."""
        return parse_options(self.scorer, self.resolved_method, self.options)

    @property
    def resolved_method(self) -> str:
        return self.method or METHODS[self.scorer][0]
