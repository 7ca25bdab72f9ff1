"""What a failure inside a job means: retry it (infrastructure), defer it (judge outage), or
record it (the evaluation's own error, with its `ErrorKind`)."""

from __future__ import annotations

import socket
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError

from evaluator.errors import ErrorKind, SourceError
from judges.llm.backoff import backoff_s
from judges.types import Score, Status

# Redis, the database, DNS, sockets: none says anything about the trace. A job that meets one
# is retried (arq Retry; the intent stays pending for the sweeper), never recorded as final.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    redis.RedisError,
    SQLAlchemyError,
    SourceError,
    socket.gaierror,
    ConnectionError,
    TimeoutError,
)


def is_infrastructure(exc: BaseException) -> bool:
    return isinstance(exc, INFRASTRUCTURE)


def kind_of(score: Score) -> str | None:
    """The record's `details.error_kind`: the scorer's, else `input` for an error Score (a
    scorer that returns an error, rather than raising, found the case unusable)."""
    if score.status is not Status.ERROR:
        return None
    kind = score.details.get("error_kind")
    return str(kind) if kind else ErrorKind.INPUT.value


def judge_unavailable(score: Any) -> bool:
    return isinstance(score, Score) and kind_of(score) == ErrorKind.JUDGE_UNAVAILABLE.value


def outage_delay_s(job_try: int) -> float:
    """Within one job: 2 s, 4 s, 8 s ... (jittered, at most 5 min) between tries."""
    return backoff_s(job_try, base=2.0, cap=300.0)


def postpone_delay_s(age_s: float) -> float:
    """After a job's tries: grows with the outage's age (half to all of it), 2 s to 1 h."""
    return backoff_s(1, base=min(3600.0, max(2.0, age_s)), cap=3600.0)
