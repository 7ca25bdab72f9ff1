"""`evaluator scores` never hides data: "showing N of M", full IDs, and a cursor that walks
every record exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from evaluator.cli.main import main
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from tests.conftest import make_settings


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_pages_walk_every_record_once(
    tmp_path: Path, redis_url: str, backend: str, request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    db = {"url": request.getfixturevalue("postgres_url")} if backend == "postgres" else {}
    settings = make_settings(tmp_path, redis_url, **({"database": db} if db else {}))
    store = Store(settings.database.url)
    now = datetime.now(UTC)
    with Session(store.engine) as session:
        for i in range(61):  # same timestamps in pairs: the cursor must break ties
            session.add(EvalRecord(
                trace_id=f"{i:032x}", rubric="faith", rubric_version="1", scorer="faithfulness",
                status="ok", score=0.5, passed=True, created_at=now - timedelta(seconds=i // 2),
            ))  # fmt: skip
        session.commit()
    store.close()
    args = ["--settings", str(tmp_path / "settings.toml"), "scores", "--json", "--limit", "25"]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        assert main([*args, *(["--after", cursor] if cursor else [])]) == 0
        page = json.loads(capsys.readouterr().out)
        assert page["total"] == 61
        seen += [r["trace_id"] for r in page["records"]]
        cursor = page.get("next")
        if not cursor:
            break
    assert len(seen) == 61 and len(set(seen)) == 61  # every record once, full 32-hex IDs
    assert main(["--settings", str(tmp_path / "settings.toml"), "scores", "--limit", "10"]) == 0
    captured = capsys.readouterr()
    assert "showing 10 of 61" in captured.err
    assert sum(f"{i:032x}" in captured.out for i in range(61)) == 10  # full IDs, not cut
