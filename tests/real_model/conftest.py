"""The real model server, once per test session (tests/real_model/server.py).

Without the `[realmodel]` extra the tests here are skipped with the reason, except under
CI=true (`.ci/run` sets it and installs the extra): there a missing extra fails every test
here loudly, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import pytest

from tests.real_model.server import RealServer, missing, start


def unavailable(reason: str | None, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """None when the real model can run; else ("fail" under CI=true, else "skip", why)."""
    if reason is None:
        return None
    if environ.get("CI") == "true":
        return "fail", f"CI=true and the real model cannot run: {reason}"
    return "skip", reason


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    verdict = unavailable(missing(), os.environ)
    if verdict is not None:
        action, why = verdict
        if action == "fail":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    server = start(tmp_path_factory.mktemp("real-model") / "server.log")
    try:
        yield server
    finally:
        server.stop()
