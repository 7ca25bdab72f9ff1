"""Value objects a scorer works with: what it sees (`EvalCase`) and what it returns (`Score`).

They are frozen dataclasses with no I/O so that scorers stay pure functions of their input
plus their clients, and can be used as a library without the service around them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from judges.memo import SharedCalls
from judges.provenance import VerdictIdentity

if TYPE_CHECKING:
    from judges.llm.client import JudgeClient
    from judges.llm.embedder import Embedder
    from judges.llm.generator import Generator


@dataclass(frozen=True, slots=True)
class Context:
    """One retrieved document the answer may be grounded in."""

    id: str
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One `execute_tool` span of an agent run, in start order.

    `arguments` and `result` are the raw strings the span carried (JSON as text, usually);
    `start_s`/`end_s` are seconds since the epoch when the span had times.
    """

    name: str
    arguments: str = ""
    result: str = ""
    error: bool = False
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True, slots=True)
class EvalCase:
    """Everything a scorer may look at for one evaluated span.

    `messages` and `generation` are the original request, kept so that self-consistency
    scorers can re-sample the generator; `samples` are extra answers the trace already carries.
    `labels` are what scores are grouped by (prompt_version, model, feature, tenant).
    """

    trace_id: str
    span_id: str
    question: str
    answer: str
    contexts: tuple[Context, ...] = ()
    messages: tuple[dict[str, Any], ...] = ()
    model: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    samples: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    # Agent runs: the tool calls in order, the tools the model was offered, and when the
    # final answer was produced (seconds since the epoch), to spot calls made after it.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_definitions: tuple[dict[str, Any], ...] = ()
    answered_at_s: float | None = None


class Status(StrEnum):
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens and money a scorer spent on judge/generator calls."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


@dataclass(frozen=True, slots=True)
class Score:
    """The outcome of one scorer on one case.

    `value` is normalised to [0, 1] with higher = better, so trends are comparable across
    rubrics; the rubric's raw scale value (if any) lives in `details["raw_score"]`.
    A score with status ERROR or SKIPPED has `value=None` and says why in `explanation`:
    a scorer never invents a number it did not compute. `identity` says what produced it
    (judges.provenance; set by `run_scorer`), `judge_model_reported` what the provider said
    it ran.
    """

    status: Status
    value: float | None = None
    label: str | None = None
    passed: bool | None = None
    explanation: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    judge_model: str | None = None
    usage: Usage = field(default_factory=Usage)
    identity: VerdictIdentity | None = None
    judge_model_reported: str | None = None

    def __post_init__(self) -> None:
        if self.status is Status.OK:
            if self.value is None or not (0.0 <= self.value <= 1.0):
                raise ValueError(f"an ok score needs a value in [0, 1], got {self.value!r}")
        elif self.value is not None:
            raise ValueError(f"a {self.status.value} score carries no value")

    @classmethod
    def skipped(cls, reason: str, *, method: str = "") -> Score:
        return cls(status=Status.SKIPPED, explanation=reason, method=method)

    @classmethod
    def error(
        cls,
        cause: str,
        *,
        method: str = "",
        details: dict[str, Any] | None = None,
        judge_model: str | None = None,
        usage: Usage | None = None,
    ) -> Score:
        return cls(
            status=Status.ERROR,
            explanation=cause,
            method=method,
            details=details or {},
            judge_model=judge_model,
            usage=usage or Usage(),
        )


@dataclass(frozen=True, slots=True)
class CertifiedThreshold:
    """A certification a cascade's cheap stage may act on (`evalcore.certification`): on its
    stratum, passing answers whose cheap score is >= `threshold` misses a failing answer with
    probability <= `alpha`, at confidence 1 - `delta`. `id` names it in the verdict's record."""

    id: str
    threshold: float
    alpha: float
    delta: float


@dataclass(frozen=True, slots=True)
class CascadeRoute:
    """What a cascade's cheap stage may do for one trace, decided by the service.

    `certification`: the one covering this trace's stratum (cheap-stage version, top-judge
    epoch, prompt version, stratum), or None — then the judge decides. `calibration`: the trace's
    cluster fell in the calibration draw (hash below `audit_rate`): it is judged whatever the
    cheap score, its verdict becomes a label, and its judge call is not charged to the budget.
    `cluster` is the hash key the draw used (session id, else the contexts).
    """

    certification: CertifiedThreshold | None = None
    calibration: bool = False
    audit_rate: float = 0.0
    cluster: str = ""
    # Stage 2 in the certified-pass region (evaluator.worker.two_stage): given the cheap
    # score, (p2|1, judged) — the judge's probability, fixed before the draw, and the draw.
    # None: p2|1 = audit_rate, judged = calibration (the calibration draw alone).
    sample: Callable[[float], tuple[float, bool]] | None = None


@dataclass(frozen=True, slots=True)
class StageOne:
    """Stage 1 of a cascade: whether its cheap stage scores this trace, drawn with the known
    probability `p1` its CPU budget allows (evaluator.worker.two_stage); `spend` is told the
    CPU seconds the cheap stage took."""

    p1: float = 1.0
    admitted: bool = True
    spend: Callable[[float], None] | None = None


@dataclass(frozen=True, slots=True)
class Clients:
    """What scorers may call. Any of them may be absent; scorers that need one skip."""

    judge: JudgeClient | None = None
    generator: Generator | None = None
    embedder: Embedder | None = None
    # Calls several scorers of one case share (the combined RAG method): see judges.memo.
    shared: SharedCalls = field(default_factory=SharedCalls)
    # Asked (trace id, rubric name) before a cascade escalates to the judge: False = a judge
    # budget refused the call, and the scorer raises EscalationRefused. None = always ask.
    escalation_gate: Callable[[str, str], Awaitable[bool]] | None = None
    # Asked (rubric name, stratum) by a cascade once its cheap stage has scored: what the cheap
    # stage may decide for this trace. None = no certification source: the judge decides.
    cascade_route: Callable[[str, str], Awaitable[CascadeRoute]] | None = None
    # Asked (rubric name) by a cascade before its cheap stage: None = always run it (p1 = 1).
    stage_one: Callable[[str], StageOne] | None = None
