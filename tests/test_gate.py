"""The deployment gate: its decisions on seeded streams, and `evaluator gate` on stored
records (real SQLite), exit codes as CI reads them."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evaluator.analytics.gate import gate, paired_gate
from evaluator.cli.main import main
from evaluator.config.policy import RegressionPolicy
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from tests.conftest import make_settings, write_rubric

POLICY = RegressionPolicy(min_samples=20, alpha=0.05)


def _stream(rng: random.Random, n: int, p_pass: float) -> list[float]:
    return [1.0 if rng.random() < p_pass else 0.0 for _ in range(n)]


def test_equal_versions_are_rarely_called_worse_and_usually_no_worse() -> None:
    rng = random.Random(7)
    decisions = [
        gate(_stream(rng, 800, 0.9), _stream(rng, 800, 0.9), POLICY, margin=0.05).decision
        for _ in range(200)
    ]
    assert decisions.count("worse") <= 200 * POLICY.alpha  # the e-process's guarantee
    assert decisions.count("no_worse") >= 150


def test_a_real_drop_is_called_worse() -> None:
    rng = random.Random(11)
    worse = sum(
        gate(_stream(rng, 300, 0.9), _stream(rng, 300, 0.7), POLICY, margin=0.05).decision
        == "worse"
        for _ in range(50)
    )
    assert worse >= 48


def test_too_little_evidence_is_not_read_as_no_worse() -> None:
    rng = random.Random(3)
    # Enough samples to run, too few to bound a drop inside a 2-point margin.
    result = gate(_stream(rng, 40, 0.8), _stream(rng, 40, 0.8), POLICY, margin=0.02)
    assert result.decision == "not_enough_data" and result.exit_code == 3
    assert result.drop_upper > 0.02


def test_paired_replay_is_tighter_than_two_streams() -> None:
    rng = random.Random(5)
    base = [min(1.0, max(0.0, rng.gauss(0.8, 0.15))) for _ in range(60)]
    same = [min(1.0, max(0.0, b + rng.gauss(0, 0.02))) for b in base]
    worse = [max(0.0, b - 0.15) for b in base]
    assert paired_gate(list(zip(base, same, strict=True)), POLICY, margin=0.05).decision == (
        "no_worse"
    )
    assert paired_gate(list(zip(base, worse, strict=True)), POLICY, margin=0.05).decision == (
        "worse"
    )


RUBRIC = """
name = "faith"
version = "1"
scorer = "faithfulness"
method = "local"
pass_threshold = 0.5
[regression]
min_samples = 20
"""


@pytest.mark.parametrize(
    ("candidate_pass", "expected_exit"), [(0.95, 0), (0.5, 1)], ids=["no-worse", "worse"]
)
def test_gate_command_reads_stored_scores_and_exits_for_ci(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str],
    candidate_pass: float, expected_exit: int,
) -> None:  # fmt: skip
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    store = Store(settings.database.url)
    rng = random.Random(1)
    now = datetime.now(UTC)
    rows = []
    for version, p in (("v18", 0.95), ("v19", candidate_pass)):
        for i in range(300):
            score = 1.0 if rng.random() < p else 0.0
            rows.append(EvalRecord(
                trace_id=f"{version}-{i}", rubric="faith", rubric_version="1", status="ok",
                scorer="faithfulness", method="local",
                score=score, passed=score >= 0.5, prompt_version=version,
                created_at=now - timedelta(minutes=300 - i),
            ))  # fmt: skip
    _insert(store, rows)
    store.close()
    code = main(["--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
                 "--candidate", "v19", "--baseline", "v18", "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == expected_exit, doc
    assert doc["baseline"]["n"] == 300 and doc["candidate"]["n"] == 300
    assert doc["exit_code"] == expected_exit


def _insert(store: Store, rows: list[EvalRecord]) -> None:
    from sqlmodel import Session

    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()


def test_gate_with_no_scores_says_not_enough_data(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    make_settings(tmp_path, redis_url)
    code = main(["--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
                 "--candidate", "v19", "--baseline", "v18"])  # fmt: skip
    assert code == 3
    assert "NOT ENOUGH DATA" in capsys.readouterr().out
