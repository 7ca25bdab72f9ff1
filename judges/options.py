"""Typed `[options]` of a rubric: one pydantic model per scorer, and which methods read each key.

A rubric's options used to be an untyped dict read at score time, so a wrong value failed
every evaluation and a misspelt key was silently ignored. Here each scorer declares its
keys (extra="forbid", strict types, bounds); `options_problems` lists every problem of a
table at once, with the allowed keys and a "did you mean" for near misspellings, so
`evaluator rubrics check` and worker start-up refuse it before any trace is scored.

    >>> options_problems("faithfulness", "local", {"local_treshold": 0.4})
    [('local_treshold', "unknown key; did you mean 'local_threshold'? allowed: ...")]
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_SAMPLES = 20  # self_consistency: each sample is one generator call per evaluation


class _Options(BaseModel):
    # strict: "three" is not 3 and true is not 1; ints are still accepted for floats.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoOptions(_Options):
    """llm_rubric: everything is in [llm_rubric]."""


class FaithfulnessOptions(_Options):
    # None: the local method's own documented pass mark (scorers/faithfulness.py).
    local_threshold: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    no_claims: Literal["pass", "skip"] = "pass"
    local_embeddings: bool = False
    # cascade: the guarantee a certification must give before the local step passes anything
    # (miss rate <= alpha with confidence 1 - delta, evalcore.certification), and the share
    # of clusters judged whatever the local score, for labels (the calibration draw).
    alpha: float = Field(0.05, gt=0, lt=1, allow_inf_nan=False)
    delta: float = Field(0.1, gt=0, lt=1, allow_inf_nan=False)
    audit_rate: float = Field(0.1, ge=0, le=1, allow_inf_nan=False)
    # Stage 2 (evaluator.worker.two_stage): the mean share of the certified-pass region the
    # judge sees, drawn more where the cheap score is uncertain; None = audit_rate alone.
    judge_rate: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    # The regression check and the gate of a cascade with an audit rate run two tests at
    # alpha/2 each — on the judged scores, and on PPI++ pseudo-outcomes (evaluator.analytics.
    # ppi_regression) — and decide when either does. false turns the PPI++ arm off: the
    # judged-score test alone at the full alpha. Not part of the verdict's identity.
    ppi_regression: bool = True


class AnswerRelevanceOptions(_Options):
    strictness: int = Field(3, ge=1, le=10)  # ragas: questions generated per answer


class ContextRelevanceOptions(_Options):
    # None: the default of the basis used (embedding or lexical similarity).
    relevance_threshold: float | None = Field(None, ge=-1, le=1, allow_inf_nan=False)


class SelfConsistencyOptions(_Options):
    samples: int = Field(3, ge=1, le=MAX_SAMPLES)


class ToolUseOptions(_Options):
    max_calls: int = Field(20, ge=1, le=10_000)  # calls past this many count as over budget


MODELS: dict[str, type[_Options]] = {
    "llm_rubric": NoOptions,
    "faithfulness": FaithfulnessOptions,
    "answer_relevance": AnswerRelevanceOptions,
    "context_relevance": ContextRelevanceOptions,
    "self_consistency": SelfConsistencyOptions,
    "tool_use": ToolUseOptions,
    "tool_selection": NoOptions,
}

# Keys read only by some methods; a key not listed here is read by every method.
ONLY_FOR: dict[tuple[str, str], tuple[str, ...]] = {
    ("faithfulness", "local_threshold"): ("local", "cascade"),
    ("faithfulness", "alpha"): ("cascade",),
    ("faithfulness", "delta"): ("cascade",),
    ("faithfulness", "audit_rate"): ("cascade",),
    ("faithfulness", "judge_rate"): ("cascade",),
    ("faithfulness", "ppi_regression"): ("cascade",),
    ("faithfulness", "local_embeddings"): ("local", "cascade"),
    ("answer_relevance", "strictness"): ("ragas",),
    ("context_relevance", "relevance_threshold"): ("local",),
}


# Keys that existed and were removed: named with their replacement, not as a misspelling.
REMOVED: dict[tuple[str, str], str] = {
    ("faithfulness", "cascade_margin"): (
        "removed: the cascade no longer passes answers on an uncertified margin; a local pass "
        "now needs a certification of the trace's stratum (options alpha, delta, audit_rate; "
        "`evaluator certify`); delete the key"
    ),
}


def _allowed(model: type[_Options]) -> str:
    return ", ".join(model.model_fields) or "none (this scorer takes no options)"


def _describe(model: type[_Options], key: str, err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key; {hint}allowed: {_allowed(model)}"
    field = model.model_fields[key]
    msg = str(err["msg"])
    expected = err.get("ctx", {}).get("expected")
    if expected:  # a Literal: name the allowed values
        msg = f"must be one of {expected}"
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    above = next((m.gt for m in field.metadata if hasattr(m, "gt")), None)
    below = next((m.lt for m in field.metadata if hasattr(m, "lt")), None)
    kind = "an integer" if field.annotation is int else "a number"
    if low is not None and high is not None and not expected:
        msg = f"must be {kind} from {low} to {high}"
    elif above is not None and below is not None and not expected:
        msg = f"must be {kind} strictly between {above} and {below}"
    return f"{msg}; got {err.get('input')!r}"


def options_problems(scorer: str, method: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem of one rubric's [options] table, as (key, message); [] when valid."""
    model = MODELS[scorer]
    problems = [(k, REMOVED[scorer, k]) for k in options if (scorer, k) in REMOVED]
    rest = {k: v for k, v in options.items() if (scorer, k) not in REMOVED}
    try:
        model.model_validate(rest)
    except ValidationError as exc:
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            problems.append((key, _describe(model, key, err)))
    bad = {k for k, _ in problems}
    for key in rest:
        methods = ONLY_FOR.get((scorer, key))
        if key not in bad and methods and method not in methods:
            problems.append(
                (key, f"is read only by method {' or '.join(methods)}, not {method!r}; remove it")
            )
    return problems


def parse_options(scorer: str, method: str, options: Mapping[str, Any]) -> _Options:
    """The typed options; ValueError lists every problem (key: message)."""
    problems = options_problems(scorer, method, options)
    if problems:
        raise ValueError("; ".join(f"options.{k}: {m}" for k, m in problems))
    return MODELS[scorer].model_validate(dict(options))
