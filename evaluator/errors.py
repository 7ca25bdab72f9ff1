"""The service's exceptions: one tree, so callers catch by meaning and the CLI maps each
branch to one exit code and a one-line message.

EvaluatorError
├── ConfigError                 settings, rubrics, policies, unsafe URLs: fix the file
│   ├── SettingsError           settings.toml / EVALUATOR_* invalid
│   ├── RubricError             a rubric file invalid
│   └── UnsafeURL               a webhook target refused (configuration or send time)
├── InputError                  one trace, line, span or request refused; the rest go on
│   ├── TraceFormatError        a trace document does not match the trace format
│   ├── CaseBuildError          a trace has no span a rubric can evaluate
│   ├── WireError               an intake entry cannot be decoded
│   └── OtlpError               an OTLP/HTTP request cannot be decoded
├── StoreError                  the database is unreachable or its schema is not ours
│   └── SchemaError             migrations cannot run, or the schema is behind the code
├── SourceError                 a trace source (Langfuse) failed
└── BackfillError               a backfill cannot be planned

Error records carry an `ErrorKind`: what a failed evaluation means for a retry, not the
Python class that raised it.

    >>> issubclass(SettingsError, ConfigError), issubclass(OtlpError, ValueError)
    (True, True)
"""

from __future__ import annotations

from enum import StrEnum


class EvaluatorError(Exception):
    """Base of every error raised by `evaluator`."""


class ConfigError(EvaluatorError):
    """Configuration is invalid; the message names the file, the key and the fix."""


class SettingsError(ConfigError):
    """Settings could not be loaded or are invalid; the message names the key and the fix."""


class RubricError(ConfigError):
    """One or more rubric files are invalid; `problems` lists each one (file, key, fix)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class UnsafeURL(ConfigError, ValueError):
    """A webhook target that must not be called; the message says why."""


class InputError(EvaluatorError, ValueError):
    """One input item is refused with its reason; the others are unaffected."""


class TraceFormatError(InputError):
    """A trace document does not match the trace format; `cause` is one of
    evaluator.traces.validate.CAUSES (what a quarantine metric counts it under)."""

    def __init__(self, message: str, *, cause: str = "format") -> None:
        super().__init__(message)
        self.cause = cause


class CaseBuildError(InputError):
    """A trace holds no span that a rubric can evaluate."""


class WireError(InputError):
    """An intake entry cannot be decoded."""


class OtlpError(InputError):
    """A request the receiver refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class StoreError(EvaluatorError):
    """The database is unreachable, or its schema is not one this version can use."""


class SchemaError(StoreError):
    """Migrations cannot run, or the database's schema differs from what they expect."""


class SourceError(EvaluatorError, RuntimeError):
    """A trace source outside the service (Langfuse) failed."""


class BackfillError(EvaluatorError, ValueError):
    """A backfill cannot be planned (bad --since, unknown rubric)."""


class ErrorKind(StrEnum):
    """Why an evaluation ended in an error record (`details.error_kind`)."""

    INPUT = "input"  # the trace cannot be evaluated as stored; retrying changes nothing
    CONFIG = "config"  # the rubric asks for something the scorer cannot do
    JUDGE_OUTPUT = "judge_output"  # the judge replied, but not in the schema
    JUDGE_UNAVAILABLE = "judge_unavailable"  # connection, timeout, 5xx after retries
    INFRASTRUCTURE = "infrastructure"  # Redis, database, DNS: the job is retried
    SCORER = "scorer"  # a bug: the scorer raised something unexpected
    # A batched request whose rubric version is no longer loaded (changed or removed while it
    # waited): re-run with `evaluator retry --errors --kind rubric_changed`.
    RUBRIC_CHANGED = "rubric_changed"
