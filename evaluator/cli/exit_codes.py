"""The CLI's exit codes, and the one place that turns an error into one line and a code.

Every command returns one of these; `describe_failure` maps what escaped a command (the
evaluator.errors tree, Redis and SQL connection errors, OS errors) to a line that says the
cause and the fix. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from evaluator.errors import EXIT_TABLE, ExitCode

# The names commands use; the values come from the one table (evaluator.errors.ExitCode).
OK = ExitCode.OK  # done
FAIL = ExitCode.FAIL  # ran, and the answer is "no": unhealthy, rejected lines, invalid rubrics
USAGE = ExitCode.USAGE  # fix the command line, a file it names, an ID, the settings or a rubric
UNAVAILABLE = ExitCode.UNAVAILABLE  # Redis, the database or the judge cannot be reached
SCHEMA = ExitCode.SCHEMA  # the database schema is behind this version: `evaluator db upgrade`
BUDGET = ExitCode.BUDGET  # done in part: the judge budget's cap has no room for the rest now
UNDECIDED = ExitCode.UNDECIDED  # ran, and cannot answer yet (`gate`: not enough data)
PIPE = ExitCode.PIPE  # stdout closed early (`| head`): stop quietly
INTERRUPTED = ExitCode.INTERRUPTED  # Ctrl-C


def _epilog() -> str:
    """`evaluator --help`'s exit-code section, generated from the table so it cannot drift."""
    import textwrap

    lines = ["exit codes:"]
    for row in EXIT_TABLE:
        text = textwrap.wrap(row.meaning, 84)
        lines.append(f"  {int(row.code):<5}{text[0]}")
        lines += [f"       {more}" for more in text[1:]]
    return "\n".join(lines)


EPILOG = _epilog()


@dataclass(frozen=True, slots=True)
class Failure:
    code: int
    message: str


_PASSWORD = re.compile(r"(//[^:/@\s]*:)[^@/\s]+@")


def hide_password(url: str) -> str:
    return _PASSWORD.sub(r"\1***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return hide_password(text.splitlines()[0] if text else type(exc).__name__)


def describe_failure(
    exc: BaseException, *, database_url: str = "", redis_url: str = ""
) -> Failure | None:
    """One line (cause, then the fix) and an exit code; None for a bug (keep the traceback)."""
    from evaluator import errors

    db, rd = hide_password(database_url), hide_password(redis_url)
    if isinstance(exc, errors.RubricError):
        return Failure(USAGE, "\n".join(exc.problems))  # one line per problem, every one
    if isinstance(exc, errors.SettingsError):  # a header, then one indented line per key
        head, *keys = str(exc).splitlines()
        return Failure(USAGE, " ".join([head, "; ".join(k.strip() for k in keys)]).strip())
    code = errors.exit_code_for(exc)
    if code is not None:
        return Failure(code, _first_line(exc))
    kind = f"{type(exc).__module__}.{type(exc).__name__}"
    if kind.startswith("redis.") or type(exc).__module__.startswith("redis"):
        return Failure(
            UNAVAILABLE,
            f"cannot reach Redis at {rd or 'redis.url'}: {_first_line(exc)}; start Redis or "
            "fix redis.url (EVALUATOR_REDIS__URL)",
        )
    if type(exc).__module__.startswith("sqlalchemy"):
        name = type(exc).__name__
        if "does not exist" in _first_line(exc) and "database" in _first_line(exc):
            return Failure(USAGE, f"no database at {db or 'database.url'}: {_first_line(exc)}")
        code = USAGE if name in ("ArgumentError", "NoSuchModuleError") else UNAVAILABLE
        return Failure(
            code,
            f"cannot open the database {db or 'database.url'}: {_first_line(exc)}; check "
            "database.url (EVALUATOR_DATABASE__URL) and that the server is running",
        )
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        return Failure(USAGE, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    if isinstance(exc, PermissionError):
        return Failure(USAGE, f"{exc.filename or ''}: permission denied".lstrip(": "))
    if isinstance(exc, UnicodeDecodeError):
        return Failure(USAGE, f"input is not UTF-8 text: {exc.reason}")
    if isinstance(exc, socket.gaierror):  # a host name nothing resolves: fix the name
        return Failure(USAGE, f"cannot resolve the host name: {exc.strerror or exc}")
    if isinstance(exc, OSError):
        return Failure(UNAVAILABLE, f"{_first_line(exc)}; is the service it names running?")
    return None
