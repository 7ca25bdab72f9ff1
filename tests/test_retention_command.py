"""`evaluator retention run [--dry-run]`: the hourly pass on demand. A dry run counts exactly
what the real run then deletes and deletes nothing; the command runs as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from evaluator.store.models import EvalRecord, TraceRecord
from evaluator.store.outbox import EvalIntent
from evaluator.store.retention import apply_retention
from evaluator.store.store import Store
from tests.test_retention import NOW, _count, _fill, _settings

ROOT = Path(__file__).resolve().parent.parent


def test_a_dry_run_counts_what_the_run_deletes(tmp_path: Path, db_url: str) -> None:
    settings = _settings(tmp_path, db_url, traces_days=5, records_days=5, intents_days=5)
    store = Store(db_url)
    try:
        _fill(store, [1] * 3 + [10] * 20 + [30] * 20)
        before = (_count(store, TraceRecord), _count(store, EvalRecord), _count(store, EvalIntent))
        dry = apply_retention(store, settings, NOW, dry_run=True)
        assert dry.dry_run and dry.deleted == {
            "eval_records": 20, "batch_requests": 0, "traces": 40, "eval_intents": 40,
        }  # fmt: skip
        after_dry = (_count(store, TraceRecord), _count(store, EvalRecord),
                     _count(store, EvalIntent))  # fmt: skip
        assert after_dry == before == (43, 43, 43)
        real = apply_retention(store, settings, NOW)
        assert real.deleted == dry.deleted and real.cutoffs == dry.cutoffs
    finally:
        store.close()


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "evaluator.cli", "--settings", str(cfg), "retention", "run", *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_retention_run_command(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'evals.db'}"
    _settings(tmp_path, db_url, traces_days=5)
    cfg = tmp_path / "settings.toml"
    missing = _cli(cfg, "--dry-run")
    assert missing.returncode == 2 and "no database at" in missing.stderr  # never creates one
    assert not (tmp_path / "evals.db").exists()
    store = Store(db_url)
    age = (datetime.now(UTC) - NOW).days  # _fill dates rows back from NOW
    _fill(store, [0] * 2 + [10 - age] * 3)  # 2 rows NOW-old (months ago), 3 rows 10 days old
    store.close()
    dry = _cli(cfg, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["dry_run"] is True and doc["would_delete"] == {"traces": 5}
    assert doc["kept_forever"] == ["batch_requests", "eval_intents", "eval_records",
                                   "otlp_pending_spans"]  # fmt: skip
    text = _cli(cfg)
    assert text.returncode == 0, text.stderr
    assert "traces               deleted         5" in text.stdout
    assert "kept forever (0 days in [database.retention])" in text.stdout
    store = Store(db_url)
    try:
        assert _count(store, TraceRecord) == 0 and _count(store, EvalRecord) == 5
    finally:
        store.close()
