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
│   ├── RequestError            an HTTP request refused with its own status (framing, OTLP)
│   │   └── OtlpError           an OTLP/HTTP request cannot be decoded
│   └── NotFound                a rubric, trace, alert or version the request names is unknown
├── StoreError                  the database is unreachable or its schema is not ours
│   ├── SchemaError             migrations cannot run, or the schema is behind the code
│   └── NoDatabase              a read found no database at the URL (reads never create one)
├── SourceError                 a trace source (Langfuse) failed
│   └── LangfuseError           the Langfuse API refused or failed a call (trace or score)
└── BackfillError               a backfill cannot be planned

`ExitCode` is the one exit-code table: every command and the HTTP API take their codes (and
the statuses they answer with) from it, and `exit_code_for` maps this tree onto it. Decision
exits (0, 1, 6: the command ran and this is its answer) never overlap error exits (2-5: the
command could not answer).

Error records carry an `ErrorKind`: what a failed evaluation means for a retry, not the
Python class that raised it.

    >>> issubclass(SettingsError, ConfigError), issubclass(OtlpError, ValueError)
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """Every exit code a command returns. 0, 1 and 6 are answers; 2-5 say why there is none."""

    OK = 0  # done; `gate`: the candidate is no worse
    FAIL = 1  # ran, and the answer is "no": unhealthy, rejected lines; `gate`: worse
    USAGE = 2  # fix the command line, a file it names, an ID, the settings or a rubric
    UNAVAILABLE = 3  # Redis, the database or the judge cannot be reached
    SCHEMA = 4  # the database schema is behind this version: run `evaluator db upgrade`
    BUDGET = 5  # done in part: the judge budget's cap has no room for the rest now
    UNDECIDED = 6  # ran, and cannot answer yet (`gate`: not enough data either way; `certify`)
    INTERRUPTED = 130  # Ctrl-C
    PIPE = 141  # stdout closed early (`| head`): stop quietly, as a SIGPIPE'd tool would


# The gate's decisions, by name (evaluator.analytics.gate takes them from here).
EXIT_NO_WORSE = ExitCode.OK
EXIT_WORSE = ExitCode.FAIL
EXIT_UNDECIDED = ExitCode.UNDECIDED

DECISION_EXITS = frozenset({ExitCode.OK, ExitCode.FAIL, ExitCode.UNDECIDED})
ERROR_EXITS = frozenset({ExitCode.USAGE, ExitCode.UNAVAILABLE, ExitCode.SCHEMA, ExitCode.BUDGET})


@dataclass(frozen=True, slots=True)
class ExitRow:
    """One row of the table: the code, what it means, and the HTTP statuses that carry it."""

    code: ExitCode
    meaning: str
    http: tuple[int, ...]


EXIT_TABLE: tuple[ExitRow, ...] = (
    ExitRow(ExitCode.OK, "ok; `gate`: the candidate is no worse than the baseline", (200,)),
    ExitRow(
        ExitCode.FAIL,
        "the command ran and found a failure (unhealthy, rejected input, invalid rubrics); "
        "`gate`: the candidate is worse",
        (),
    ),
    ExitRow(
        ExitCode.USAGE,
        "usage: a bad flag or value, a missing file, an unknown ID or rubric, "
        "no database at the URL, invalid settings or rubrics",
        (400, 404, 422),
    ),
    ExitRow(ExitCode.UNAVAILABLE, "unavailable: Redis, the database or the judge", (503,)),
    ExitRow(
        ExitCode.SCHEMA,
        "the database schema is behind this version: run `evaluator db upgrade`",
        (409,),
    ),
    ExitRow(
        ExitCode.BUDGET,
        "done in part: the judge budget has no room for the rest now (backfill --no-wait, "
        "retry); the message says how many wait and until when",
        (),
    ),
    ExitRow(
        ExitCode.UNDECIDED,
        "`gate`: not enough data to call the candidate worse or no worse yet; `certify "
        "--compute`: nothing can be certified from the stored labels yet",
        (),
    ),
    ExitRow(ExitCode.INTERRUPTED, "interrupted (Ctrl-C)", ()),
    ExitRow(ExitCode.PIPE, "the output pipe was closed early (`| head`)", ()),
)


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


class RequestError(InputError):
    """An HTTP request refused with a status of its own (a malformed length or chunk, a body
    over the limit): `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OtlpError(RequestError):
    """A request the OTLP receiver refuses; `status` is the HTTP status to answer with."""


class StoreError(EvaluatorError):
    """The database is unreachable, or its schema is not one this version can use."""


class SchemaError(StoreError):
    """Migrations cannot run, or the database's schema differs from what they expect."""


class NoDatabase(StoreError):
    """A read found no database at the configured URL (reads never create one)."""


class NotFound(InputError):
    """A name or ID the request gives (rubric, trace, alert, version) is not known."""


class SourceError(EvaluatorError, RuntimeError):
    """A trace source outside the service (Langfuse) failed."""


class LangfuseError(SourceError):
    """The Langfuse API refused or failed a call; the message says which and why."""


class BudgetUnavailable(EvaluatorError, RuntimeError):
    """The judge budget's counters could not be rebuilt from SQL now (after Redis lost them,
    another worker's rebuild did not finish): nothing is admitted until they are."""


class BackfillError(EvaluatorError, ValueError):
    """A backfill cannot be planned (bad --since, unknown rubric)."""


def exit_code_for(exc: BaseException) -> ExitCode | None:
    """The table's code for an error of this tree; None for anything else."""
    if isinstance(exc, SchemaError):
        return ExitCode.SCHEMA
    if isinstance(exc, NoDatabase | ConfigError | InputError | BackfillError):
        return ExitCode.USAGE
    if isinstance(exc, StoreError | SourceError | BudgetUnavailable):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, EvaluatorError):
        return ExitCode.FAIL
    return None


def http_status_for(exc: BaseException) -> int | None:
    """The HTTP status an API answer carries for an error of this tree (same table).

    >>> http_status_for(NotFound("no rubric 'x'")), http_status_for(SchemaError("behind"))
    (404, 409)
    """
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    code = exit_code_for(exc)
    if code is None or code == ExitCode.FAIL:
        return None
    return next(row.http[0] for row in EXIT_TABLE if row.code == code)


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
    # The reply was cut at its token limit, also on the retry with a larger budget: raise
    # the rubric's [judge] max_output_tokens (or use a faster judge), then retry.
    JUDGE_TRUNCATED = "judge_truncated"
