"""Judge hygiene at worker start: is a rubric's judge the generator's own model or family?

Judges prefer their own family's answers, so a gpt judge grading a gpt application reads
high. At start the worker looks at the models of the most recently stored traces (one
bounded query, `Store.recent_models`) and logs a warning per LLM-judge rubric whose judge
model is one of them or of their family (judges/hygiene.py, the rules `evaluator
calibrate` uses). `evaluator health` shows the same warnings.

    >>> from pathlib import Path
    >>> rubric = Rubric(name="f", version="1", scorer="faithfulness", method="judge",
    ...                 description="d")
    >>> self_preference(RubricSet((rubric,), Path(".")), "gpt-4o-mini", ["gpt-4o"])["f"][0][:9]
    'the judge'
"""

from __future__ import annotations

import logging

from evaluator.config.rubrics import RubricSet
from evaluator.config.settings import Settings
from evaluator.store.store import Store
from judges.hygiene import self_preference_warnings
from judges.rubric import Rubric
from judges.scorers.registry import calls_judge

log = logging.getLogger("evaluator.worker.hygiene")
RECENT_TRACES = 1000  # how far back "the generator's models" looks


def judge_model_of(rubric: Rubric, default_model: str | None) -> str | None:
    """The model a rubric's judge calls, or None for a rubric that calls no judge
    (`default_model` None: no judge endpoint is configured, so no rubric calls one)."""
    if default_model is None or not calls_judge(rubric):
        return None
    return rubric.judge.model or default_model


def configured_judge_model(settings: Settings) -> str | None:
    """The judge model the deployment calls, or None when no judge endpoint is set."""
    return settings.judge.model if settings.judge.base_url else None


def self_preference(
    rubrics: RubricSet, default_model: str | None, generator_models: list[str]
) -> dict[str, list[str]]:
    """{rubric name: warnings} for the rubrics whose judge shares the generator's family."""
    out: dict[str, list[str]] = {}
    for rubric in rubrics.rubrics:
        warnings = self_preference_warnings(judge_model_of(rubric, default_model), generator_models)
        if warnings:
            out[rubric.name] = warnings
    return out


def check_judge_hygiene(
    store: Store, rubrics: RubricSet, default_model: str | None
) -> dict[str, list[str]]:
    """The start-up check: reads recent traces' models, logs and returns the warnings."""
    if default_model is None:  # no judge configured: nothing to prefer, no query
        return {}
    found = self_preference(rubrics, default_model, store.recent_models(RECENT_TRACES))
    for name, warnings in found.items():
        for warning in warnings:
            log.warning("rubric %s: %s", name, warning)
    return found
