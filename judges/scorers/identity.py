"""The `VerdictIdentity` of a rubric run: which code, prompts, schemas and judge decide it.

Prompt templates are hashed by rendering each prompt a method sends on one fixed probe case:
the hash then covers exactly the text a template contributes (instructions, data rules,
reply format) and nothing of any real trace, and it changes whenever a template does,
without a list of template constants to keep in sync by hand. Which prompts a method sends
and which code version it runs are declared in its row of the (scorer, method) registry
(judges.scorers.registry), whose `identity_for` calls `verdict_identity`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from judges.llm.client import JudgeClient
from judges.provenance import VerdictIdentity, digest, endpoint_of
from judges.rubric import Rubric
from judges.types import Context, EvalCase

# The prompts and reply schemas a method sends a judge, rendered for a case.
Templates = tuple[list[Any], list[type[BaseModel]]]
TemplatesOf = Callable[[EvalCase, Rubric], Templates]

PROBE = EvalCase(
    trace_id="probe",
    span_id="probe",
    question="probe question",
    answer="Probe answer.",
    contexts=(Context("d1", "probe document"),),
)
# Rubric fields that only decide which traces are scored or how alerts page, not a verdict:
# changing them must not start a new epoch.
# "mode" (online or batch) sends the same request: the same verdict.
_NOT_VERDICT = {"description", "applies_to", "sampling", "regression", "mode"}
# Cascade options that decide which traces the judge labels and which certification applies,
# never the judge's verdict: changing them must keep the certifications and labels of the
# epoch (evaluator.worker.cascade_routing keys certifications by the epoch). alpha and delta
# reach a certification through its own row (evaluator.analytics.certification_plan).
_NOT_VERDICT_OPTIONS = {"audit_rate", "alpha", "delta", "ppi_regression", "judge_rate"}
# local_threshold is the local score's own pass mark: with a judge, a cascade's verdicts are
# the judge's or a certified pass (its threshold is the certification's), never that mark; it
# shapes only the advisory verdicts recorded when no judge is configured.
_LOCAL_MARK = "local_threshold"


def rubric_hash(rubric: Rubric, judged: bool = True) -> str:
    """A content hash of the parts of a rubric that shape a verdict (`judged`: a judge
    decides the rubric's verdicts in this run, so a cascade's local pass mark does not)."""
    data = rubric.model_dump(mode="json", exclude=_NOT_VERDICT)
    if rubric.resolved_method == "cascade":
        skip = _NOT_VERDICT_OPTIONS | ({_LOCAL_MARK} if judged else set())
        data["options"] = {k: v for k, v in data["options"].items() if k not in skip}
    # Keys added after epochs existed, hashed only when set: an unchanged rubric keeps its
    # epoch. The anchor floor only decides alerts, never a verdict.
    if data["judge"].get("max_output_tokens") is None:
        data["judge"].pop("max_output_tokens", None)
    for key in ("min_agreement", "floor_alpha"):
        (data.get("anchors") or {}).pop(key, None)
    return digest(data)[:16]


_CACHE: dict[tuple[Any, ...], VerdictIdentity] = {}
_CACHE_MAX = 256  # rubrics x judge settings one process sees; cleared when exceeded


def verdict_identity(
    rubric: Rubric, judge: JudgeClient | None, *, implementation: str, templates: TemplatesOf
) -> VerdictIdentity:
    """The identity of `rubric` run by the code `implementation` names, decided by `judge`
    (None: no judge decides it, so no judge field is set) with the prompts `templates`
    renders."""
    if judge is None:
        endpoint, model, temperature, response_format = None, None, None, None
    else:
        temp = rubric.judge.temperature
        endpoint, model = endpoint_of(judge.endpoint), rubric.judge.model or judge.model
        temperature = judge.temperature if temp is None else temp
        response_format = judge.response_format
    # Keyed by the rubric's JSON: a Rubric with an options dict is not hashable. Rendering
    # the probe prompts costs ~1 ms, dumping the rubric ~20 us. The scorer and method (in the
    # JSON) fix `implementation` and `templates`.
    key = (rubric.model_dump_json(), endpoint, model, temperature, response_format)
    found = _CACHE.get(key)
    if found is not None:
        return found
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    judged = endpoint is not None
    prompts, schemas = templates(PROBE, rubric) if judged else ([], [])
    found = _CACHE[key] = VerdictIdentity(
        scorer=rubric.scorer,
        method=rubric.resolved_method,
        rubric=rubric.name,
        rubric_version=rubric.version,
        rubric_hash=rubric_hash(rubric, judged),
        implementation=implementation,
        endpoint=endpoint,
        model=model,
        temperature=temperature,
        response_format=response_format,
        prompt_hash=digest(prompts)[:16] if judged else None,
        schema_hash=digest([s.model_json_schema() for s in schemas])[:16] if judged else None,
    )
    return found
