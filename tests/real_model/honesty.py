"""The invariant every real-model scenario asserts on what the product wrote.

Each eval record is one of:
- `ok` with a score, and when it made judge or generator calls, the endpoint's real usage
  (input and output tokens > 0: the server counts them; nothing here is made up); an ok
  record without calls only where no call was due (a local method, a cascade that decided
  locally, the local tool_use scorer, a combined rubric whose shared call another carries);
- `error` with no score and no verdict, its cause (explanation), an `error_kind`, and the
  raw reply kept whenever a reply came back and could not be used;
- `skipped` with the reason.
Never a made-up score: an error never carries a value or a pass/fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

ERROR_KINDS = {
    "input", "config", "judge_output", "judge_truncated", "judge_unavailable",
    "infrastructure", "scorer", "rubric_changed",
}  # fmt: skip
_LOCAL_METHODS = {"local", "tool_use", "embeddings"}
# A reply came back and was unusable: the raw text must be kept for the user to read.
_REPLIED_KINDS = {"judge_output", "judge_truncated"}


def _field(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, dict) else getattr(record, name)


def _no_call_due(record: Any) -> bool:
    """A verdict that needed no call of its own: a local method, a cascade that decided
    locally, or a combined rubric whose shared call another rubric's record carries."""
    details = _field(record, "details") or {}
    cascade = details.get("cascade") or {}
    return (
        _field(record, "method") in _LOCAL_METHODS
        or str(cascade.get("decided_by", "")).startswith("local")
        or bool((details.get("combined") or {}).get("usage_on"))
    )


def check_record(record: Any) -> str:
    """Assert the invariant on one record (an EvalRecord or its `scores --json` dict);
    return its outcome: "ok", "ok-local", "error:<kind>" or "skipped"."""
    status = _field(record, "status")
    details = _field(record, "details") or {}
    where = f"{_field(record, 'rubric')} on {_field(record, 'trace_id')}: {record!r}"
    calls = int(_field(record, "judge_calls") or 0)
    tokens_in = int(_field(record, "judge_input_tokens") or 0)
    tokens_out = int(_field(record, "judge_output_tokens") or 0)
    if status == "ok":
        assert _field(record, "score") is not None, f"ok without a score: {where}"
        if calls == 0:
            assert _no_call_due(record), f"ok without a call, yet one was due: {where}"
            assert details.get("judge_cache") != "hit", f"a cached verdict in a live run: {where}"
            return "ok-local"
        assert tokens_in > 0 and tokens_out > 0, f"ok with calls but no real usage: {where}"
        return "ok"
    if status == "error":
        assert _field(record, "score") is None, f"an error with a score: {where}"
        assert _field(record, "passed") is None, f"an error with a verdict: {where}"
        assert str(_field(record, "explanation")).strip(), f"an error without a cause: {where}"
        kind = details.get("error_kind")
        assert kind in ERROR_KINDS, f"an error without a known error_kind: {where}"
        if kind in _REPLIED_KINDS and calls > 0:
            assert "raw_output" in details, f"the unusable reply was not kept: {where}"
        return f"error:{kind}"
    assert status == "skipped", f"unknown status {status!r}: {where}"
    assert str(_field(record, "explanation")).strip(), f"skipped without a reason: {where}"
    return "skipped"


def check_records(records: Iterable[Any]) -> Counter[str]:
    """The invariant on every record; the outcomes counted (for the failure message)."""
    return Counter(check_record(r) for r in records)
