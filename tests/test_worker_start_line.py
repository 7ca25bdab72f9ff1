"""The worker's start line names what it serves and talks to, and no secret."""

from __future__ import annotations

from pathlib import Path

from evaluator.worker.app import shown_url, start_line
from tests.conftest import make_settings


def test_urls_lose_passwords_and_query_strings() -> None:
    assert shown_url("redis://:hunter2@r:6379/0") == "redis://:***@r:6379/0"
    assert shown_url("postgresql+psycopg://app:pw@db/evals?password=x") == (
        "postgresql+psycopg://app:***@db/evals?..."
    )
    assert shown_url("sqlite:///evaluator.db") == "sqlite:///evaluator.db"
    assert shown_url("http://[::1") == "(unparsable URL)"


def test_start_line(tmp_path: Path, redis_url: str) -> None:
    s = make_settings(tmp_path, redis_url, judge={"base_url": "https://j.example/v1?key=SECRET"})
    line = start_line(s, ["faithfulness", "helpfulness"])
    assert line.startswith(f"worker ready: queue {s.redis.queue_name}; 2 rubrics (faithfulness")
    assert "judge https://j.example/v1?... (gpt-4o-mini)" in line and "SECRET" not in line
    assert f"database {s.database.url}" in line and "Redis redis://" in line
    assert "\n" not in line
