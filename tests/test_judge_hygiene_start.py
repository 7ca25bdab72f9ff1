"""Judge hygiene at worker start: the real start-up hook reads the recent traces' models
(one bounded query, SQLite and PostgreSQL) and warns per LLM-judge rubric whose judge is the
generator's model or family; `evaluator health` shows the same warnings."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from evaluator.cli.main import main
from evaluator.config.settings import SHIPPED_RUBRICS_DIR
from evaluator.store.store import Store
from evaluator.traces.model import parse_trace
from evaluator.worker.app import _hooks

from .conftest import make_settings


def chat_trace(trace_id: str, model: str) -> Any:
    return parse_trace({
        "trace_id": trace_id,
        "spans": [{"span_id": "s1", "name": "chat", "attributes": {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
            "gen_ai.input.messages": [{"role": "user", "content": "Q?"}],
            "gen_ai.output.messages": [{"role": "assistant", "content": "A."}]}}],
    })  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'evals.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def test_recent_models_is_bounded_to_the_newest_traces(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.save_traces([chat_trace("old", "gpt-4o")])
        store.save_traces([chat_trace("new-1", "claude-3-5-sonnet")])
        store.save_traces([chat_trace("new-2", "llama-3.1-70b")])
        assert store.recent_models(2) == ["claude-3-5-sonnet", "llama-3.1-70b"]
        assert store.recent_models(10) == ["claude-3-5-sonnet", "gpt-4o", "llama-3.1-70b"]
    finally:
        store.close()


def _setup(tmp_path: Path, redis_url: str, db_url: str, generator: str) -> Any:
    rubrics = tmp_path / "rubrics"
    rubrics.mkdir()
    for name in ("tool_use", "context_relevance"):  # a local method, and an LLM judge
        shutil.copy(SHIPPED_RUBRICS_DIR / f"{name}.toml", rubrics)
    settings = make_settings(tmp_path, redis_url, database={"url": db_url},
                             judge={"base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o-mini"})  # fmt: skip
    store = Store(db_url)
    store.save_traces([chat_trace(f"t{i}", generator) for i in range(3)])
    store.close()
    return settings


async def _start_and_stop(settings: Any) -> None:
    on_startup, on_shutdown = _hooks(settings, run_intake=False, freeze_gc=False)
    ctx: dict[str, Any] = {"redis": aioredis.Redis.from_url(settings.redis.url)}
    try:
        await on_startup(ctx)
        await on_shutdown(ctx)
    finally:
        await ctx["redis"].aclose()


async def test_worker_start_warns_when_judge_is_the_generators_family(
    tmp_path: Path, redis_url: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _setup(tmp_path, redis_url, db_url, "gpt-4o-2024-08-06")
    with caplog.at_level(logging.WARNING, logger="evaluator.worker.hygiene"):
        await _start_and_stop(settings)
    warned = [r.getMessage() for r in caplog.records if r.name == "evaluator.worker.hygiene"]
    assert len(warned) == 1, warned  # context_relevance only: tool_use calls no judge
    assert warned[0].startswith("rubric context_relevance: the judge 'gpt-4o-mini'")
    assert "'gpt-4o-2024-08-06'" in warned[0]


async def test_no_warning_for_another_family(
    tmp_path: Path, redis_url: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _setup(tmp_path, redis_url, db_url, "claude-3-5-haiku")
    with caplog.at_level(logging.WARNING, logger="evaluator.worker.hygiene"):
        await _start_and_stop(settings)
    assert not [r for r in caplog.records if r.name == "evaluator.worker.hygiene"]


async def test_no_warning_when_no_judge_is_configured(
    tmp_path: Path, redis_url: str, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The demo's case: no judge endpoint, the default model name unused — nothing to prefer.
    settings = _setup(tmp_path, redis_url, db_url, "gpt-4o-2024-08-06")
    settings = settings.model_copy(
        update={"judge": settings.judge.model_copy(update={"base_url": ""})}
    )
    with caplog.at_level(logging.WARNING, logger="evaluator.worker.hygiene"):
        await _start_and_stop(settings)
    assert not [r for r in caplog.records if r.name == "evaluator.worker.hygiene"]


def test_health_shows_the_same_warning(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _setup(tmp_path, redis_url, f"sqlite:///{tmp_path / 'evals.db'}", "gpt-4.1")
    main(["--settings", str(tmp_path / "settings.toml"), "health", "--json"])
    hygiene = json.loads(capsys.readouterr().out)["judge_hygiene"]
    assert hygiene["checked"] is True and hygiene["generator_models"] == 1
    assert list(hygiene["warnings"]) == ["context_relevance"]
    main(["--settings", str(tmp_path / "settings.toml"), "health"])
    table = capsys.readouterr().out
    assert "warning: context_relevance: the judge 'gpt-4o-mini'" in table
