"""The judge library's exceptions.

EvalError
├── JudgeDeferred              the judge said to come back later than a job may wait
├── EscalationRefused          a judge budget refused the judge call a cascade needed
├── JudgeError                 a call to the judge/generator failed
│   ├── JudgeTransientError    timeouts, 429, 5xx after the client's retries
│   └── JudgeOutputError       the reply could not be parsed/validated (keeps raw output)
│       └── JudgeTruncatedError  cut at the token limit (finish_reason "length"), also
│                                after one retry with a larger budget
└── ScorerConfigError          a rubric asks a scorer for something it cannot do
"""

from __future__ import annotations

from typing import Any

from judges.types import Score, Usage


class EvalError(Exception):
    """Base of every error raised by `judges`."""


class JudgeError(EvalError):
    """A judge or generator call did not produce a usable reply.

    `usage` is what the failed attempts still cost, so that error records carry it too.
    """

    usage: Usage

    def __init__(self, message: str, *, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.usage = usage or Usage()


class JudgeTransientError(JudgeError):
    """The endpoint failed in a way that may succeed later (timeout, 429, 5xx)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        rate_limited: bool = False,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message, usage=usage)
        self.retry_after_s = retry_after_s
        self.rate_limited = rate_limited


class JudgeOutputError(JudgeError):
    """The reply was not valid for the requested schema, even after one re-ask."""

    def __init__(self, message: str, *, raw_output: str | None, usage: Usage | None = None) -> None:
        super().__init__(message, usage=usage)
        self.raw_output = raw_output


class JudgeTruncatedError(JudgeOutputError):
    """The reply was cut at its token limit (`finish_reason == "length"`) on the first try
    and again on the one retry with a larger budget and a request to be brief.

    Its own kind (`judge_truncated`): the fix is a larger reply budget (the rubric's
    `[judge] max_output_tokens`) or a faster judge, not a re-ask. `max_tokens` is the budget
    of the last attempt; `raw_output` the cut reply.
    """

    def __init__(
        self, message: str, *, raw_output: str | None, max_tokens: int, usage: Usage | None = None
    ) -> None:
        super().__init__(message, raw_output=raw_output, usage=usage)
        self.max_tokens = max_tokens


class JudgeDeferred(EvalError):
    """The endpoint said to retry after longer than a job may wait (`Retry-After`).

    Deliberately not a JudgeError: scorers let it through, so the job can be deferred by
    `retry_after_s` instead of recording an error or sleeping inside the job.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float,
        usage: Usage | None = None,
        budget: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.usage = usage or Usage()
        # A judge budget's window, not the endpoint: it ends (a UTC day at most), so the
        # wait is not an outage and never turns into an error record.
        self.budget = budget
        # What the scorer knew before the call (a cascade's trail), kept on the error record
        # written when the job runs out of tries: a calibration draw's error is still a label.
        self.details: dict[str, Any] = {}


class EscalationRefused(EvalError):
    """`Clients.escalation_gate` refused the judge call a cascade needed (a judge budget's
    cap). Not a JudgeError: scorers let it through and the caller decides (no record, or
    wait for the next window); the local score alone is not a verdict the cascade stands by.
    """


class ScorerConfigError(EvalError):
    """The rubric's scorer settings are invalid for this scorer."""


# `details.error_kind` of error records (the service's ErrorKind values): what a failure
# means for a retry. judges cannot import the service, so the strings are the contract.
KIND_JUDGE_UNAVAILABLE = "judge_unavailable"
KIND_JUDGE_OUTPUT = "judge_output"
KIND_JUDGE_TRUNCATED = "judge_truncated"
KIND_CONFIG = "config"


def error_kind(exc: EvalError) -> str:
    if isinstance(exc, JudgeTransientError | JudgeDeferred):
        return KIND_JUDGE_UNAVAILABLE
    if isinstance(exc, ScorerConfigError):
        return KIND_CONFIG
    if isinstance(exc, JudgeTruncatedError):
        return KIND_JUDGE_TRUNCATED
    return KIND_JUDGE_OUTPUT


def config_failure(exc: ScorerConfigError, *, method: str) -> Score:
    """The error Score for a rubric that asks the scorer for something it cannot do."""
    return Score.error(str(exc), method=method, details={"error_kind": KIND_CONFIG})


def judge_failure(
    exc: JudgeError,
    *,
    method: str,
    judge_model: str | None,
    details: dict[str, Any] | None = None,
    usage: Usage | None = None,
) -> Score:
    """The error Score for a failed judge call: its cause, raw output and what it cost."""
    details = dict(details or {})
    details["error_kind"] = error_kind(exc)
    raw = getattr(exc, "raw_output", None)
    if raw is not None:
        details["raw_output"] = raw
    if isinstance(exc, JudgeTruncatedError):
        details["reply_budget"] = exc.max_tokens
    return Score.error(
        str(exc), method=method, details=details, judge_model=judge_model, usage=usage or exc.usage
    )
