"""Faithfulness: share of the answer's atomic claims that the retrieved documents support.

Methods (rubric.method):

- ``judge`` (default): ONE call extracts the claims and verifies each against the fenced,
  numbered documents; the reply lists ``{claim, context_ids, reason, verdict}`` per claim.
- ``two_step``: call 1 extracts claims, call 2 verifies all of them at once (closer to the
  ragas recipe; costs a second call, helps small judges that mix the two tasks up).
- ``local``: no LLM, delegated to ``judges.scorers.local``.
- ``ragas`` and ``combined``: in ``judges.scorers.ragas_method`` and ``judges.scorers.combined``.
- ``cascade``: local first; it passes an answer without the judge only under a certification
  of the trace's stratum (``Clients.cascade_route``; see ``decide`` for the rules and the
  guarantee). Everything else goes to the judge: cold start (no certification) judges every
  sampled trace. With ``Clients.escalation_gate`` (a judge budget) the gate is asked first;
  if it refuses, ``EscalationRefused`` is raised. Without a judge the local verdict is
  recorded as advisory, never as certified.

score = supported / total claims. An answer with no factual claim (a refusal, a greeting) is
reported explicitly, never as NaN: by default ok with value 1.0 and label ``no_claims``
(nothing it said is unsupported; whether it *answered* is answer relevance's job), or
``skipped`` with ``options.no_claims = "skip"`` for teams that do not want it in the mean.

The prompts and reply schemas are in ``judges.scorers.faithfulness_prompts``; which method
runs (and what it needs: a judge, the retrieved documents) is the registry's
(``judges.scorers.registry``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from judges.errors import (
    EscalationRefused,
    JudgeDeferred,
    JudgeError,
    judge_failure,
)
from judges.llm.client import JudgeClient, JudgeReply
from judges.rubric import Rubric
from judges.scorers.faithfulness_prompts import (
    ClaimCheck,
    ClaimList,
    FaithfulnessReply,
    no_claims_policy,
    render_extract,
    render_judge,
    render_verify,
    verification_schema,
)
from judges.scorers.local import score_faithfulness_local
from judges.scorers.local_model import LOCAL_METHOD_VERSION
from judges.types import (
    CascadeRoute,
    Clients,
    Context,
    EvalCase,
    Score,
    StageOne,
    Status,
    Usage,
)

# Bump when a change here or in faithfulness_prompts can change a verdict (a new epoch).
IMPLEMENTATION_VERSION = "1"

# The local method's pass mark: its score is P(faithful) under equal priors (local_model).
LOCAL_PASS_MARK = 0.5

# --- arithmetic (pure) -----------------------------------------------------------------


def faithfulness_value(verdicts: Sequence[str]) -> float | None:
    """supported / total, or None when there is nothing to divide (never NaN)."""
    return sum(v == "supported" for v in verdicts) / len(verdicts) if verdicts else None


def claim_details(
    checks: Sequence[ClaimCheck], contexts: Sequence[Context]
) -> list[dict[str, Any]]:
    """Per-claim verdicts with document numbers mapped back to the trace's document ids."""
    out = []
    for check in checks:
        known = [i for i in check.context_ids if 1 <= i <= len(contexts)]
        row: dict[str, Any] = {
            "claim": check.claim,
            "verdict": check.verdict,
            "context_ids": [contexts[i - 1].id for i in known],
            "reason": check.reason,
        }
        if len(known) != len(check.context_ids):
            row["unknown_refs"] = [i for i in check.context_ids if i not in known]
        out.append(row)
    return out


def build_score(
    checks: Sequence[ClaimCheck],
    case: EvalCase,
    rubric: Rubric,
    *,
    method: str,
    judge_model: str,
    usage: Usage,
) -> Score:
    """The Score for a list of verified claims (pure)."""
    details: dict[str, Any] = {"claims": claim_details(checks, case.contexts)}
    common: dict[str, Any] = {"method": method, "judge_model": judge_model, "usage": usage}
    value = faithfulness_value([c.verdict for c in checks])
    if value is None:
        if no_claims_policy(rubric) == "skip":
            return Score(
                Status.SKIPPED,
                explanation="the answer makes no factual claim",
                details=details,
                **common,
            )
        return Score(
            Status.OK,
            1.0,
            "no_claims",
            True,
            details=details,
            **common,
            explanation="the answer makes no factual claim, so none is unsupported",
        )
    counts = Counter(c.verdict for c in checks)
    details["counts"] = {v: counts.get(v, 0) for v in ("supported", "contradicted", "not_found")}
    passed = value >= rubric.pass_threshold
    return Score(
        Status.OK, value, "pass" if passed else "fail", passed, explain(checks), details, **common
    )


def explain(checks: Sequence[ClaimCheck], limit: int = 3) -> str:
    supported = sum(c.verdict == "supported" for c in checks)
    text = f"{supported} of {len(checks)} claims supported"
    bad = [c for c in checks if c.verdict != "supported"][:limit]
    if bad:
        text += "; " + "; ".join(f"{c.verdict}: {c.claim!r}" for c in bad)
    return text


def local_threshold(rubric: Rubric) -> float:
    """Pass mark of the local score (1 - P(hallucinated) under equal priors), which is not on
    the judge's supported-claims scale: options.local_threshold, else the local method's own
    documented mark (0.5), never the judge's pass_threshold."""
    value = rubric.typed_options.local_threshold  # validated with the rubric (judges/options.py)
    return LOCAL_PASS_MARK if value is None else float(value)


def cheap_stage() -> str:
    """The cascade's cheap stage as certifications name it: the local method's version."""
    return f"local:{LOCAL_METHOD_VERSION}"


def stratum_of(local: Score) -> str:
    """The stratum a certification covers: the local step's detected task, else "unknown"."""
    task = local.details.get("task")
    return task if isinstance(task, str) and task else "unknown"


def cheap_score(local: Score) -> float | None:
    """The score a certification compares with its threshold, or None when the local step may
    not pass this trace whatever the certification: it gave no score, or a sentence asserts
    a value or name the contexts contradict or lack (``details.hard_evidence``)."""
    if local.status is not Status.OK or local.value is None or local.details.get("hard_evidence"):
        return None
    return local.value


def advisory_note(rubrics: Sequence[str]) -> str:
    """What cascade `rubrics` record when no judge is configured (said by `evaluator health`,
    the worker at start-up and `evaluator certify`)."""
    return (
        f"cascade rubric(s) {', '.join(rubrics)} have no judge configured: their verdicts are "
        "the local step's, recorded as advisory (decided_by local_advisory), never certified, "
        "and no calibration label accrues, so nothing can be certified; set judge.base_url "
        "(EVALUATOR_JUDGE__BASE_URL)"
    )


def stage_two(local: Score, route: CascadeRoute) -> tuple[float, bool]:
    """p2|1 and the draw (evalcore.routing): (1, True) outside the certified-pass region (no
    certification, no cheap score, or below the certified threshold); inside it, the route's
    `sample` — else the calibration draw alone, (audit_rate, calibration). Call once a trace."""
    value, cert = cheap_score(local), route.certification
    if value is None or cert is None or value < cert.threshold:
        return 1.0, True
    if route.sample is None:
        return route.audit_rate, route.calibration
    return route.sample(value)


def decide(
    local: Score, route: CascadeRoute, judge_configured: bool, sampled: bool = False
) -> tuple[str, str]:
    """Who decides this trace, ``judge`` | ``local_certified`` | ``local_advisory``, and why.

    Rules, in order: no judge configured → the local verdict, recorded as advisory (never as
    certified: no audit could ever check it); the trace's cluster is in the calibration draw
    → the judge, whatever the local score (its verdict is a label); the local step may not
    pass it (``cheap_score`` is None) → the judge; a certification covers the stratum and
    the cheap score is ≥ its threshold → a local pass, unless stage 2 drew it (`sampled`,
    from `stage_two`: then the judge, for the estimate); otherwise → the judge.

    Guarantee: a local pass happens only under a certification, so on a certified stratum
    P(an answer the top judge fails is passed locally) ≤ alpha with probability ≥ 1 − delta
    over the calibration draw (evalcore.certification), for traffic exchangeable at cluster
    level with that draw — the same cheap stage, top-judge epoch, prompt version and stratum
    (the service keys certifications by them). Nothing is passed locally without one.
    Checked with the router's own draw on seeded traffic in
    tests/statistics/test_cascade_draw_calibration.py (113 of 2,000 replicates above alpha).
    """
    if not judge_configured:
        return "local_advisory", "no judge configured: the local verdict is advisory"
    if route.calibration:
        return "judge", f"calibration draw (audit_rate {route.audit_rate}): judged as a label"
    value = cheap_score(local)
    if value is None:
        if local.status is not Status.OK or local.value is None:
            why = f"{local.status.value}: {local.explanation}"
            return "judge", f"local scorer gave no score ({why})"
        return "judge", f"hard evidence: {local.explanation}"
    cert = route.certification
    if cert is None:
        return "judge", "no certification for this stratum: the judge decides"
    if value >= cert.threshold and sampled:
        return "judge", f"local score {value:.3f} passes, drawn for the judge (stage 2)"
    if value >= cert.threshold:
        return "local_certified", (
            f"local score {value:.3f} >= certified threshold {cert.threshold} "
            f"(certification {cert.id}: miss rate <= {cert.alpha} at confidence {1 - cert.delta:g})"
        )
    return "judge", f"local score {value:.3f} is below the certified threshold {cert.threshold}"


# --- calls -----------------------------------------------------------------------------


async def score_judge(
    case: EvalCase, rubric: Rubric, judge: JudgeClient, method: str = "judge"
) -> Score:
    try:
        reply: JudgeReply[FaithfulnessReply] = await judge.complete(
            render_judge(case),
            FaithfulnessReply,
            model=rubric.judge.model,
            temperature=rubric.judge.temperature,
        )
    except JudgeError as exc:
        return _error(exc, method, rubric.judge.model or judge.model)
    return build_score(
        reply.parsed.claims, case, rubric, method=method, judge_model=reply.model, usage=reply.usage
    )


async def score_two_step(case: EvalCase, rubric: Rubric, judge: JudgeClient) -> Score:
    model, temperature = rubric.judge.model, rubric.judge.temperature
    try:
        extracted: JudgeReply[ClaimList] = await judge.complete(
            render_extract(case), ClaimList, model=model, temperature=temperature
        )
    except JudgeError as exc:
        return _error(exc, "two_step", model or judge.model, step="extract")
    claims = [c for c in extracted.parsed.claims if c.strip()]
    if not claims:
        return build_score(
            [], case, rubric, method="two_step", judge_model=extracted.model, usage=extracted.usage
        )
    try:
        verified = await judge.complete(
            render_verify(case, claims),
            verification_schema(len(claims)),
            model=model,
            temperature=temperature,
        )
    except JudgeError as exc:
        return _error(
            exc, "two_step", model or judge.model, step="verify", usage=extracted.usage + exc.usage
        )
    checks = [
        ClaimCheck(claim=claim, context_ids=c.context_ids, reason=c.reason, verdict=c.verdict)
        for claim, c in zip(claims, verified.parsed.checks, strict=True)
    ]
    return build_score(
        checks,
        case,
        rubric,
        method="two_step",
        judge_model=verified.model,
        usage=extracted.usage + verified.usage,
    )


async def score_local(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    return (await _local_timed(case, rubric, clients))[0]


async def _local_timed(case: EvalCase, rubric: Rubric, clients: Clients) -> tuple[Score, float]:
    """The local score and the CPU seconds it took (its thread's: other jobs not counted)."""
    # Embeddings are opt-in (options.local_embeddings = true): v1 measured no gain on RAGTruth
    # QA at 30-100x the CPU, and v2's similarity weight is not fitted yet (local_model.py).
    embedder = clients.embedder if rubric.options.get("local_embeddings") is True else None

    def timed() -> tuple[Score, float]:
        started = time.thread_time()
        got = score_faithfulness_local(case, embedder, threshold=local_threshold(rubric))
        return got, time.thread_time() - started

    # CPU-bound: keep it off the event loop that serves other jobs.
    return await asyncio.to_thread(timed)


async def score_cascade(case: EvalCase, rubric: Rubric, clients: Clients) -> Score:
    one = clients.stage_one(rubric.name) if clients.stage_one is not None else StageOne()
    if not one.admitted:  # over the cheap stage's CPU budget: recorded, never silent
        out = {"stage": cheap_stage(), "p1": one.p1, "decided_by": "none"}
        return Score(
            Status.SKIPPED,
            explanation=f"cheap stage over its CPU budget (drawn out with p1 = {one.p1:.3g})",
            method="cascade",
            details={"cascade": out},
        )
    local, cpu_s = await _local_timed(case, rubric, clients)
    if one.spend is not None:
        one.spend(cpu_s)
    stratum = stratum_of(local)
    has_judge = clients.judge is not None
    ask = clients.cascade_route
    route = await ask(rubric.name, stratum) if has_judge and ask is not None else CascadeRoute()
    p2, sampled = stage_two(local, route) if has_judge else (0.0, False)
    decided_by, reason = decide(local, route, has_judge, sampled)
    cert = route.certification
    trail: dict[str, Any] = {
        "local_value": local.value,
        "local_status": local.status.value,
        "local_threshold": local_threshold(rubric),  # the local verdict's own pass mark
        "cheap_score": cheap_score(local),
        "stage": cheap_stage(),
        "stratum": stratum,
        "cluster": route.cluster,
        "calibration": route.calibration,
        "audit_rate": route.audit_rate,
        # The certification covering the stratum (decided_by says whether it decided).
        "certification": cert.id if cert else None,
        "certified_threshold": cert.threshold if cert else None,
        "decided_by": decided_by,
        "reason": reason,
        # The two stages' realised probabilities (the record's inclusion probability is the
        # intake's times p1): the judge was asked with probability p2 given the cheap score.
        "p1": one.p1,
        "p2": p2,
        "cpu_ms": round(cpu_s * 1000, 3),
    }
    judge = clients.judge
    if decided_by == "local_advisory" or judge is None:
        if local.status is not Status.OK:
            return local
        return dataclasses.replace(
            local,
            method="cascade",
            explanation=f"advisory, not confirmed by a judge: {local.explanation}",
            details={**local.details, "cascade": trail},
        )
    if decided_by == "local_certified":
        return dataclasses.replace(
            local,
            method="cascade",
            label="grounded",
            passed=True,
            explanation=f"passed locally under certification {trail['certification']}: "
            f"{local.explanation}",
            details={**local.details, "cascade": trail},
        )
    gate = clients.escalation_gate
    # Only an escalation (p2 = 1) asks the budget: a calibration draw is not charged (up to
    # audit_rate of the draws) and a stage-2 draw was planned within its allowance in advance
    # (a refusal in arrival order would make its p2 a lie).
    if (
        p2 >= 1
        and not route.calibration
        and gate is not None
        and not await gate(case.trace_id, rubric.name)
    ):
        raise EscalationRefused(f"the judge budget refused the escalation ({reason})")
    try:
        judged = await score_judge(case, rubric, judge, method="cascade")
    except JudgeDeferred as exc:  # the job may record it as an error: keep the trail on it
        exc.details = {**exc.details, "cascade": trail}
        raise
    trail["local_details"] = local.details
    return dataclasses.replace(
        judged, details={**judged.details, "cascade": trail}, usage=local.usage + judged.usage
    )


def _error(
    exc: JudgeError,
    method: str,
    judge_model: str,
    *,
    step: str | None = None,
    usage: Usage | None = None,
) -> Score:
    details = {"step": step} if step else {}
    return judge_failure(exc, method=method, judge_model=judge_model, details=details, usage=usage)
