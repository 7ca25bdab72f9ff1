"""The invariant checker of the real-model scenarios rejects what it exists to catch: a
made-up score, a verdict without real usage, an error without cause, kind or raw reply."""

from __future__ import annotations

from typing import Any

import pytest

from tests.real_model.honesty import check_record

OK = {"rubric": "r", "trace_id": "t", "status": "ok", "score": 0.5, "passed": False,
      "explanation": "x", "method": "judge", "details": {}, "judge_calls": 1,
      "judge_input_tokens": 120, "judge_output_tokens": 30}  # fmt: skip
ERROR = {**OK, "status": "error", "score": None, "passed": None, "explanation": "cut off",
         "details": {"error_kind": "judge_truncated", "raw_output": '{"claims": ['}}  # fmt: skip


def test_honest_records_pass() -> None:
    assert check_record(OK) == "ok"
    assert check_record(ERROR) == "error:judge_truncated"
    local = {**OK, "method": "local", "judge_calls": 0, "judge_input_tokens": 0,
             "judge_output_tokens": 0}  # fmt: skip
    assert check_record(local) == "ok-local"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"judge_output_tokens": 0}, "no real usage"),
        ({"judge_calls": 0, "judge_input_tokens": 0, "judge_output_tokens": 0}, "one was due"),
        ({"score": None}, "without a score"),
    ],
)
def test_a_verdict_without_real_usage_is_rejected(change: dict[str, Any], says: str) -> None:
    with pytest.raises(AssertionError, match=says):
        check_record({**OK, **change})


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"score": 0.0}, "an error with a score"),
        ({"passed": False}, "an error with a verdict"),
        ({"explanation": " "}, "without a cause"),
        ({"details": {"raw_output": "x"}}, "without a known error_kind"),
        ({"details": {"error_kind": "judge_output"}}, "reply was not kept"),
    ],
)
def test_a_made_up_or_unexplained_error_is_rejected(change: dict[str, Any], says: str) -> None:
    with pytest.raises(AssertionError, match=says):
        check_record({**ERROR, **change})
