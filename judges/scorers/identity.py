"""The `VerdictIdentity` of a rubric run: which code, prompts, schemas and judge decide it.

Prompt templates are hashed by rendering each prompt a method sends on one fixed probe case:
the hash then covers exactly the text a template contributes (instructions, data rules,
reply format) and nothing of any real trace, and it changes whenever a template does,
without a list of template constants to keep in sync by hand.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from typing import Any

from pydantic import BaseModel

from judges.provenance import VerdictIdentity, digest, endpoint_of
from judges.rubric import Rubric
from judges.types import Clients, Context, EvalCase, ToolCall

_PROBE = EvalCase(
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
_NOT_VERDICT_OPTIONS = {"audit_rate", "alpha", "delta", "ppi_regression"}
# local_threshold is the local score's own pass mark: with a judge, a cascade's verdicts are
# the judge's or a certified pass (its threshold is the certification's), never that mark; it
# shapes only the advisory verdicts recorded when no judge is configured.
_LOCAL_MARK = "local_threshold"
# Methods that ask the judge (cascade only when its local step is unsure).
_JUDGED = {
    ("llm_rubric", "judge"),
    ("faithfulness", "judge"),
    ("faithfulness", "two_step"),
    ("faithfulness", "cascade"),
    ("faithfulness", "ragas"),
    ("answer_relevance", "judge"),
    ("answer_relevance", "ragas"),
    ("context_relevance", "judge"),
    ("self_consistency", "judge"),
    ("tool_selection", "judge"),
}
_MODULES = {
    "llm_rubric": "llm_rubric",
    "faithfulness": "faithfulness",
    "answer_relevance": "relevance",
    "context_relevance": "relevance",
    "self_consistency": "self_consistency",
    "tool_use": "agent",
    "tool_selection": "agent",
}


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


def _templates(scorer: str, method: str, rubric: Rubric) -> tuple[list[Any], list[type[BaseModel]]]:
    """The probe-rendered prompts and reply schemas one method sends to a judge."""
    if method == "ragas":
        return [], []  # ragas owns its prompts: its version stands in for them
    if scorer == "llm_rubric":
        from judges.scorers import llm_rubric

        return [llm_rubric.render(_PROBE, rubric)], [llm_rubric.verdict_schema(rubric.scale)]
    if scorer == "faithfulness":
        from judges.scorers import faithfulness_prompts as fp

        if method == "two_step":
            return (
                [fp.render_extract(_PROBE), fp.render_verify(_PROBE, ["probe claim"])],
                [fp.ClaimList, fp.verification_schema(1)],
            )
        return [fp.render_judge(_PROBE)], [fp.FaithfulnessReply]
    if scorer in ("answer_relevance", "context_relevance"):
        from judges.scorers import relevance

        if scorer == "answer_relevance":
            return [relevance.render_answer(_PROBE)], [relevance.AnswerRelevanceReply]
        return [relevance.render_contexts_check(_PROBE)], [relevance.documents_schema(1)]
    if scorer == "tool_selection":
        from judges.scorers import agent

        probe = dataclasses.replace(_PROBE, tool_calls=(ToolCall("probe_tool", "{}", "probe"),))
        return [agent.render_selection(probe)], [agent.SelectionReply]
    from judges.scorers import self_consistency

    return (
        [self_consistency.render_check(["Probe sentence."], "probe sample")],
        [self_consistency.verdicts_schema(1)],
    )


def implementation_version(scorer: str, method: str) -> str:
    """ "<module>:<IMPLEMENTATION_VERSION>", plus the local method's or ragas's version."""
    module = _MODULES[scorer]
    impl = importlib.import_module(f"judges.scorers.{module}")
    if method == "ragas":
        impl = importlib.import_module("judges.scorers.ragas_method")
    parts = [f"{module}:{impl.IMPLEMENTATION_VERSION}"]
    if method in ("local", "cascade"):
        from judges.scorers.local_model import LOCAL_METHOD_VERSION

        parts.append(f"local:{LOCAL_METHOD_VERSION}")
    if method == "ragas":
        try:
            parts.append(f"ragas:{importlib.metadata.version('ragas')}")
        except importlib.metadata.PackageNotFoundError:
            parts.append("ragas:absent")
    return "+".join(parts)


_CACHE: dict[tuple[Any, ...], VerdictIdentity] = {}
_CACHE_MAX = 256  # rubrics x judge settings one process sees; cleared when exceeded


def _identity(
    rubric: Rubric,
    endpoint: str | None,
    model: str | None,
    temperature: float | None,
    response_format: str | None,
) -> VerdictIdentity:
    scorer, method = rubric.scorer, rubric.resolved_method
    judged = endpoint is not None
    prompts, schemas = _templates(scorer, method, rubric) if judged else ([], [])
    return VerdictIdentity(
        scorer=scorer,
        method=method,
        rubric=rubric.name,
        rubric_version=rubric.version,
        rubric_hash=rubric_hash(rubric, judged),
        implementation=implementation_version(scorer, method),
        endpoint=endpoint,
        model=model,
        temperature=temperature,
        response_format=response_format,
        prompt_hash=digest(prompts)[:16] if judged else None,
        schema_hash=digest([s.model_json_schema() for s in schemas])[:16] if judged else None,
    )


def identity_for(rubric: Rubric, clients: Clients) -> VerdictIdentity:
    """The identity of `rubric` run with `clients`; judge fields only when a judge decides."""
    judge = clients.judge if (rubric.scorer, rubric.resolved_method) in _JUDGED else None
    if judge is None:
        args: tuple[str | None, str | None, float | None, str | None] = (None, None, None, None)
    else:
        temp = rubric.judge.temperature
        args = (
            endpoint_of(judge.endpoint),
            rubric.judge.model or judge.model,
            judge.temperature if temp is None else temp,
            judge.response_format,
        )
    # Keyed by the rubric's JSON: a Rubric with an options dict is not hashable. Rendering
    # the probe prompts costs ~1 ms, dumping the rubric ~20 us.
    key = (rubric.model_dump_json(), *args)
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        found = _CACHE[key] = _identity(rubric, *args)
    return found
