"""What several commands share: opening the database to read, and checking a rubric name.

Read commands open the store with `reader`: it never creates or migrates a database (no
database: exit 2 "no database at URL"; schema behind: exit 4), so a typo'd database.url
is an error, not a silent empty answer.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from evaluator.errors import RubricError


def reader(settings: Any) -> Any:
    """A Store that reads: it refuses a missing database or a schema behind this version."""
    from evaluator.store.store import Store

    return Store(settings.database.url, migrate=False)


def configured_rubrics(settings: Any) -> set[str]:
    """The rubric names the rubric files define (none when they are invalid: `rubrics
    check` reports those)."""
    from evaluator.config.rubrics import load_rubrics

    with contextlib.suppress(RubricError):
        return {r.name for r in load_rubrics(settings.rubrics.path).rubrics}
    return set()


def check_rubric(store: Any, settings: Any, name: str | None) -> None:
    """An unknown --rubric is a usage error (exit 2) naming the known ones; None passes."""
    from evaluator.analytics.names import require_rubric

    if name is not None:
        require_rubric(store, name, configured_rubrics(settings))


def _whole(text: str, low: int, high: int | None = None, what: str = "a whole number") -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if value < low or (high is not None and value > high):
        span = f"{low} to {high}" if high is not None else f"at least {low}"
        raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
    return value


def positive(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    return _whole(text, 1)


def count(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    return _whole(text, 0)


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    return _whole(text, 0, 65535, "a port number")


def duration(text: str) -> str:
    """argparse type: a duration such as 30m, 6h, 7d (kept as text, checked here)."""
    import argparse

    from evaluator.config.policy import parse_duration

    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def since_start(text: str) -> str:
    """argparse type: a duration back from now (24h) or a fixed start, an ISO 8601 time with
    its zone (2026-12-06T09:00Z): re-runs over a fixed start read the same streams grown."""
    import argparse

    if since_instant(text) is None:
        try:
            return duration(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration (30m, 6h, 7d) nor an ISO time with its zone "
                "(2026-12-06T09:00Z)"
            ) from None
    return text


def since_instant(text: str) -> datetime | None:
    """The fixed start `text` names, None when it is a duration."""
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """argparse type: a logging level name, any case."""
    import argparse

    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()
