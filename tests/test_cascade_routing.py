"""The certified cascade's routing (issue 28): who decides each trace, the calibration draw,
and the router's certification lookup. The local scorer is real; only the judge is respx."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from evaluator.worker.cascade_routing import (
    CascadeRouter,
    calibration_point,
    cluster_key,
    key_of,
)
from judges.errors import EscalationRefused
from judges.llm.client import JudgeClient
from judges.rubric import Rubric
from judges.scorers.faithfulness import cheap_stage, decide
from judges.scorers.registry import run_scorer
from judges.types import (
    CascadeRoute,
    CertifiedThreshold,
    Clients,
    Context,
    EvalCase,
    Score,
    Status,
)
from tests.conftest import FIXTURES, JUDGE_URL, chat_completion

pytest.importorskip("judges.scorers.local")

FIXTURE = json.loads((FIXTURES / "faithfulness_case.json").read_text())
CONTEXTS = tuple(Context(**c) for c in FIXTURE["contexts"])
GROUNDED = EvalCase(
    "t-g", "s", FIXTURE["question"],
    "The Pro plan costs $20 per user per month, billed annually. "
    "Pro includes unlimited projects, 100 GB of storage and priority email support.",
    CONTEXTS,
)  # fmt: skip
INVENTED = dataclasses.replace(
    GROUNDED, trace_id="t-x",
    answer="The Pro plan costs $45 per month through Stripe Billing. "
    "It ships with a dedicated Oracle database cluster in Frankfurt.",
)  # fmt: skip
CERT = CertifiedThreshold("cert-qa", 0.5, 0.05, 0.1)


def cascade(**options: Any) -> Rubric:
    return Rubric(name="faithfulness", version="1", scorer="faithfulness", method="cascade",
                  pass_threshold=0.8, options=options)  # fmt: skip


def fixed(route: CascadeRoute, asked: list[tuple[str, str]] | None = None) -> Any:
    async def ask(rubric: str, stratum: str) -> CascadeRoute:
        if asked is not None:
            asked.append((rubric, stratum))
        return route

    return ask


@pytest.fixture
async def judge() -> AsyncIterator[JudgeClient]:
    client = JudgeClient(base_url=JUDGE_URL, model="judge-model", max_retries=0)
    yield client
    await client.aclose()


@pytest.fixture
def judge_api() -> Any:
    body = json.dumps(FIXTURE["judge_reply"])
    with respx.mock(base_url=JUDGE_URL, assert_all_called=False) as router:
        yield router.post("/chat/completions").mock(
            return_value=httpx.Response(200, json=chat_completion(body))
        )


# --- decide: each rule, pure -------------------------------------------------------------


def local(value: float | None, hard: bool = False, task: str = "qa") -> Score:
    if value is None:
        return Score.error("input too large", method="local")
    return Score(Status.OK, value, "grounded", value >= 0.5, "x",
                 {"hard_evidence": hard, "task": task}, "local")  # fmt: skip


def test_decide_rules_in_order() -> None:
    certified = CascadeRoute(certification=CERT, audit_rate=0.1)
    assert decide(local(0.9), certified, judge_configured=True)[0] == "local_certified"
    assert decide(local(0.5), certified, judge_configured=True)[0] == "local_certified"  # >=
    below = decide(local(0.49), certified, judge_configured=True)
    assert below[0] == "judge" and "below the certified threshold" in below[1]
    # Cold start: no certification, the judge decides however high the local score.
    cold = decide(local(1.0), CascadeRoute(), judge_configured=True)
    assert cold == ("judge", "no certification for this stratum: the judge decides")
    hard = decide(local(0.99, hard=True), certified, judge_configured=True)
    assert hard[0] == "judge" and hard[1].startswith("hard evidence")
    none = decide(local(None), certified, judge_configured=True)
    assert none[0] == "judge" and none[1].startswith("local scorer gave no score")
    drawn = dataclasses.replace(certified, calibration=True)
    assert decide(local(0.99), drawn, judge_configured=True)[0] == "judge"
    assert "calibration draw" in decide(local(0.99), drawn, judge_configured=True)[1]
    # No judge: advisory whatever the route says, never certified.
    for route in (certified, drawn, CascadeRoute()):
        assert decide(local(0.99), route, judge_configured=False)[0] == "local_advisory"


# --- the scorer with a respx judge ---------------------------------------------------------


async def test_cold_start_sends_a_confident_answer_to_the_judge(
    judge: JudgeClient, judge_api: respx.Route
) -> None:
    asked: list[tuple[str, str]] = []
    result = await run_scorer(GROUNDED, cascade(), Clients(judge=judge, cascade_route=fixed(
        CascadeRoute(audit_rate=0.1, cluster="c1"), asked)))  # fmt: skip
    assert judge_api.call_count == 1 and asked == [("faithfulness", "qa")]
    trail = result.details["cascade"]
    assert trail["decided_by"] == "judge" and trail["certification"] is None
    assert trail["local_value"] >= 0.9 and trail["cheap_score"] == trail["local_value"]
    assert (trail["stratum"], trail["cluster"], trail["stage"]) == ("qa", "c1", cheap_stage())
    assert result.value == pytest.approx(0.6)  # the judge's verdict, not the local one


async def test_a_certified_pass_is_local_and_names_its_certification(
    judge: JudgeClient, judge_api: respx.Route
) -> None:
    result = await run_scorer(GROUNDED, cascade(), Clients(judge=judge, cascade_route=fixed(
        CascadeRoute(CERT, audit_rate=0.1, cluster="c1"))))  # fmt: skip
    assert judge_api.call_count == 0 and result.usage.calls == 0
    assert result.passed is True and result.method == "cascade"
    trail = result.details["cascade"]
    assert trail["decided_by"] == "local_certified" and trail["certification"] == "cert-qa"
    assert trail["certified_threshold"] == 0.5 and trail["calibration"] is False
    assert "certification cert-qa" in result.explanation


async def test_a_certified_threshold_below_the_local_pass_mark_still_passes(
    judge: JudgeClient, judge_api: respx.Route
) -> None:
    """The certification decides the pass, not the local verdict's own mark."""
    low = CertifiedThreshold("cert-low", 0.2, 0.05, 0.1)
    rubric = cascade(local_threshold=0.999)  # the local verdict alone would fail it
    result = await run_scorer(GROUNDED, rubric, Clients(judge=judge, cascade_route=fixed(
        CascadeRoute(low))))  # fmt: skip
    assert judge_api.call_count == 0 and result.passed is True


async def test_below_the_certified_threshold_the_judge_decides(
    judge: JudgeClient, judge_api: respx.Route
) -> None:
    strict = CertifiedThreshold("cert-strict", 1.0, 0.05, 0.1)
    result = await run_scorer(GROUNDED, cascade(), Clients(judge=judge, cascade_route=fixed(
        CascadeRoute(strict))))  # fmt: skip
    assert judge_api.call_count == 1
    trail = result.details["cascade"]
    assert trail["decided_by"] == "judge" and trail["certification"] == "cert-strict"


async def test_hard_evidence_and_no_score_go_to_the_judge_under_any_certification(
    judge: JudgeClient, judge_api: respx.Route
) -> None:
    from judges.scorers.local import MAX_ANSWER_CHARS

    anything = CertifiedThreshold("cert-all", 0.0, 0.05, 0.1)
    clients = Clients(judge=judge, cascade_route=fixed(CascadeRoute(anything)))
    hard = await run_scorer(INVENTED, cascade(), clients)
    assert hard.details["cascade"]["reason"].startswith("hard evidence")
    assert hard.details["cascade"]["cheap_score"] is None
    big = dataclasses.replace(GROUNDED, answer=GROUNDED.answer * (MAX_ANSWER_CHARS // 100))
    refused = await run_scorer(big, cascade(), clients)
    assert "too large" in refused.details["cascade"]["reason"]
    assert refused.details["cascade"]["stratum"] == "unknown"
    assert judge_api.call_count == 2


async def test_a_calibration_draw_is_judged_without_asking_the_budget(
    judge: JudgeClient, judge_api: respx.Route
) -> None:
    gate_asked: list[str] = []

    async def refusing_gate(trace_id: str, rubric: str) -> bool:
        gate_asked.append(trace_id)
        return False

    drawn = CascadeRoute(CERT, calibration=True, audit_rate=0.1, cluster="c9")
    clients = Clients(judge=judge, escalation_gate=refusing_gate, cascade_route=fixed(drawn))
    result = await run_scorer(GROUNDED, cascade(), clients)  # a certified pass, judged anyway
    assert judge_api.call_count == 1 and gate_asked == []
    trail = result.details["cascade"]
    assert trail["calibration"] is True and trail["decided_by"] == "judge"
    assert trail["audit_rate"] == 0.1 and trail["certification"] == "cert-qa"
    # Not drawn: the same refusing gate stops the escalation (the budget path is unchanged).
    with pytest.raises(EscalationRefused):
        await run_scorer(INVENTED, cascade(), dataclasses.replace(
            clients, cascade_route=fixed(CascadeRoute(CERT))))  # fmt: skip
    assert gate_asked == ["t-x"] and judge_api.call_count == 1


async def test_a_deferred_calibration_draw_keeps_its_trail_on_the_error_record(
    judge: JudgeClient,
) -> None:
    """A judge that says "retry in an hour" on a calibration draw: the job is deferred, and if
    it runs out of tries its error record still carries the cascade trail (calibration,
    cheap score, cluster), so the certification job counts it as a label against the cheap
    stage instead of losing it."""
    from evaluator.worker.pipeline import _settle
    from judges.errors import JudgeDeferred

    drawn = CascadeRoute(None, calibration=True, audit_rate=0.1, cluster="c7")
    clients = Clients(judge=judge, cascade_route=fixed(drawn))
    with respx.mock(base_url=JUDGE_URL) as router:
        router.post("/chat/completions").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "3600"}, json={})
        )
        with pytest.raises(JudgeDeferred) as raised:
            await run_scorer(GROUNDED, cascade(), clients)
    trail = raised.value.details["cascade"]
    assert trail["calibration"] is True and trail["cluster"] == "c7"
    assert trail["cheap_score"] is not None and trail["decided_by"] == "judge"
    record = _settle(raised.value, job_try=5)
    assert record.status is Status.ERROR and record.details["cascade"] == trail
    assert record.details["error_kind"] == "judge_unavailable"


async def test_without_a_judge_the_local_verdict_is_advisory() -> None:
    asked: list[tuple[str, str]] = []
    result = await run_scorer(GROUNDED, cascade(), Clients(cascade_route=fixed(
        CascadeRoute(CERT), asked)))  # fmt: skip
    assert asked == []  # no judge: no certification can be acted on or audited
    assert result.status is Status.OK and result.explanation.startswith("advisory")
    trail = result.details["cascade"]
    assert trail["decided_by"] == "local_advisory" and trail["certification"] is None


# --- the calibration draw ----------------------------------------------------------------


def test_the_draw_rate_is_audit_rate_within_binomial_tolerance() -> None:
    n = 20_000
    for rate in (0.02, 0.1, 0.5):
        drawn = sum(calibration_point(f"session:{i}", "faithfulness") < rate for i in range(n))
        sd = math.sqrt(n * rate * (1 - rate))
        assert abs(drawn - n * rate) <= 4 * sd, (rate, drawn)
    # Two rubrics draw independently: the overlap is about rate², not rate.
    both = sum(
        calibration_point(f"s{i}", "a") < 0.1 and calibration_point(f"s{i}", "b") < 0.1
        for i in range(n)
    )
    assert abs(both - n * 0.01) <= 4 * math.sqrt(n * 0.01)


def test_the_cluster_is_the_session_else_the_documents() -> None:
    other_docs = dataclasses.replace(GROUNDED, trace_id="t2", contexts=(Context("d", "other"),))
    assert cluster_key("sess-1", GROUNDED) == cluster_key("sess-1", other_docs)
    assert cluster_key(None, GROUNDED) == cluster_key(None, INVENTED)  # the same documents
    assert cluster_key(None, GROUNDED) != cluster_key(None, other_docs)
    no_docs = dataclasses.replace(GROUNDED, contexts=())
    assert cluster_key(None, no_docs).startswith("trace:")


@dataclass(frozen=True)
class Cert:
    id: str
    rubric: str
    stage: str
    judge_epoch: str
    prompt_version: str
    stratum: str
    threshold: float
    alpha: float
    delta: float


class Source:
    """An in-memory certification source that counts its reads."""

    def __init__(self, rows: Sequence[Cert] = ()) -> None:
        self.rows, self.reads = list(rows), 0

    async def __call__(self) -> list[Cert]:
        self.reads += 1
        return list(self.rows)


def router(source: Source, rubric: Rubric, clients: Clients, **kw: Any) -> CascadeRouter:
    return CascadeRouter(source, {rubric.name: rubric}.get, clients, **kw)


async def test_a_cluster_is_drawn_all_or_none_whatever_its_scores(judge: JudgeClient) -> None:
    """Every trace of a session gets the same draw, whatever its stratum (the only thing of
    the local score the route sees) or documents; across sessions the share is the rate."""
    rubric = cascade(audit_rate=0.3)
    r = router(Source(), rubric, Clients(judge=judge))
    drawn = 0
    for s in range(400):
        routes = [
            await r.for_trace(dataclasses.replace(GROUNDED, trace_id=f"t{s}.{k}",
                              contexts=(Context("d", f"doc {s}.{k}"),)), f"sess-{s}")(
                "faithfulness", stratum)
            for k, stratum in enumerate(("qa", "summary", "unknown"))
        ]  # fmt: skip
        assert len({x.calibration for x in routes}) == 1 and len({x.cluster for x in routes}) == 1
        drawn += routes[0].calibration
    assert abs(drawn - 120) <= 4 * math.sqrt(400 * 0.3 * 0.7)


async def test_the_router_finds_the_certification_of_its_key_only(judge: JudgeClient) -> None:
    rubric = cascade(audit_rate=0.0)
    clients = Clients(judge=judge)
    _, stage, epoch, _, _ = key_of(rubric, clients, "v1", "qa")
    good = Cert("c-qa", "faithfulness", stage, epoch, "v1", "qa", 0.7, 0.05, 0.1)
    rows = [
        good,
        dataclasses.replace(good, id="c-old-stage", stratum="summary", stage="local:0.9"),
        dataclasses.replace(good, id="c-old-epoch", stratum="dialogue", judge_epoch="e0"),
        dataclasses.replace(good, id="c-loose", stratum="data2text", alpha=0.2),
    ]
    r = router(Source(rows), rubric, clients)
    case = dataclasses.replace(GROUNDED, labels={"prompt_version": "v1"})
    ask = r.for_trace(case, None)
    route = await ask("faithfulness", "qa")
    assert route.certification == CertifiedThreshold("c-qa", 0.7, 0.05, 0.1)
    assert route.audit_rate == 0.0 and route.calibration is False
    for stratum in ("summary", "dialogue", "data2text", "other"):
        assert (await ask("faithfulness", stratum)).certification is None, stratum
    # Another prompt version (or none) is another key: the judge decides it.
    for labels in ({"prompt_version": "v2"}, {}):
        other = r.for_trace(dataclasses.replace(GROUNDED, labels=labels), None)
        assert (await other("faithfulness", "qa")).certification is None
    assert (await ask("unknown-rubric", "qa")).certification is None


SHIPPED = FIXTURES.parents[1] / "rubrics" / "faithfulness.toml"


@pytest.mark.parametrize(
    ("option", "before", "after"),
    [
        ("audit_rate", "0.1", "0.2"),
        ("alpha", "0.05", "0.02"),
        ("delta", "0.1", "0.05"),
        ("local_threshold", "0.5", "0.7"),
    ],
)
def test_an_option_that_shapes_no_judge_verdict_keeps_the_certification_key(
    option: str, before: str, after: str
) -> None:
    """Regression (issue 28 review): raising the shipped rubric's audit_rate ("higher
    certifies sooner") gave it a new epoch, so every certification and label of the rubric
    stopped applying. The draw rate, alpha, delta and (with a judge) the local pass mark
    decide no judge verdict: the key stays; alpha and delta reach the certification rows."""
    from evaluator.config.rubrics import parse_rubric

    text = SHIPPED.read_text()
    assert f"{option} = {before}\n" in text
    old = parse_rubric(text, source=SHIPPED)
    new = parse_rubric(text.replace(f"{option} = {before}\n", f"{option} = {after}\n"),
                       source=SHIPPED)  # fmt: skip
    assert new.options[option] == float(after)
    clients = Clients(judge=JudgeClient(base_url=JUDGE_URL, model="m"))
    assert key_of(new, clients, "v1", "qa") == key_of(old, clients, "v1", "qa")
    # Without a judge the local pass mark decides the (advisory) verdicts: a new epoch.
    changed = key_of(new, Clients(), "v1", "qa") != key_of(old, Clients(), "v1", "qa")
    assert changed == (option == "local_threshold")
    # What does shape the judge's verdict still starts a new epoch.
    stricter = old.model_copy(update={"pass_threshold": 0.9})
    assert key_of(stricter, clients, "v1", "qa") != key_of(old, clients, "v1", "qa")


async def test_a_tightened_alpha_or_delta_leaves_a_looser_certification_unused(
    judge: JudgeClient,
) -> None:
    """The key survives an alpha/delta change, so the router itself refuses a certification
    looser than the rubric (the job then writes one at the new values) and keeps a tighter."""
    clients = Clients(judge=judge)
    _, stage, epoch, _, _ = key_of(cascade(audit_rate=0.0), clients, None, "qa")
    source = Source([Cert("c1", "faithfulness", stage, epoch, "", "qa", 0.7, 0.05, 0.1)])
    for options, used in [
        ({}, True),
        ({"alpha": 0.1, "delta": 0.2}, True),
        ({"alpha": 0.02}, False),
        ({"delta": 0.05}, False),
    ]:
        rubric = cascade(audit_rate=0.0, **options)
        assert key_of(rubric, clients, None, "qa")[2] == epoch, options
        route = await router(source, rubric, clients).for_trace(GROUNDED, "s")("faithfulness", "qa")
        assert (route.certification is not None) == used, options


async def test_certifications_are_read_again_after_the_ttl(judge: JudgeClient) -> None:
    rubric = cascade()
    clients = Clients(judge=judge)
    _, stage, epoch, _, _ = key_of(rubric, clients, None, "qa")
    source = Source([Cert("c1", "faithfulness", stage, epoch, "", "qa", 0.7, 0.05, 0.1)])
    now = [1000.0]
    r = router(source, rubric, clients, ttl_s=30.0, clock=lambda: now[0])
    ask = r.for_trace(GROUNDED, "s")
    assert (await ask("faithfulness", "qa")).certification is not None
    source.rows = []  # withdrawn
    now[0] += 29.0
    assert (await ask("faithfulness", "qa")).certification is not None  # cached
    assert source.reads == 1
    now[0] += 1.0
    assert (await ask("faithfulness", "qa")).certification is None  # within the ttl
    assert source.reads == 2


def test_a_trace_with_an_unknown_task_has_a_stratum_of_its_own() -> None:
    from judges.scorers.faithfulness import stratum_of

    assert stratum_of(Score.skipped("no contexts")) == "unknown"
    assert stratum_of(local(0.9, task="summary")) == "summary"
