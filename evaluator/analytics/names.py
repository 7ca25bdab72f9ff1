"""Is a rubric name the user typed one we know? One rule for every command and the HTTP API.

A rubric is known when a rubric file defines it or the database holds records of it (a
rubric retired from the files still has history). An unknown name is a typo, not an empty
result: `NotFound` (exit 2, HTTP 404) names the close match and the known ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from evaluator.errors import NotFound
from evaluator.store.store import Store


def unknown_rubric(name: str, known: Iterable[str]) -> NotFound | None:
    """The error for `name` when it is not in `known`, else None (pure).

    >>> str(unknown_rubric("tones", ["tone", "faithfulness"]))
    "no rubric named 'tones'; did you mean 'tone'? known: faithfulness, tone"
    >>> unknown_rubric("tone", ["tone"]) is None
    True
    """
    names = sorted(set(known))
    if name in names:
        return None
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return NotFound(f"no rubric named {name!r}; {hint}known: {', '.join(names) or 'none'}")


def require_rubric(store: Store, name: str, configured: Iterable[str] = ()) -> None:
    """Raise NotFound unless `name` is configured or has records in `store`.

    Cheapest first: the rubric files, then the rollups (small), and only for a name in
    neither (a typo) the distinct rubrics of the records themselves."""
    from evaluator.analytics.trends import rubric_names

    configured = set(configured)
    if name in configured or name in rubric_names(store):
        return
    error = unknown_rubric(name, configured | set(store.rubric_names()))
    if error is not None:
        raise error
