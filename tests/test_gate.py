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
    """At n = 3,200 per side and pass rate 0.9 the calibration run measured ~95 % "no
    worse" (alpha 0.05, margin 0.05); the guarantee (≤ alpha wrong decisions) is tested
    in tests/statistics/."""
    rng = random.Random(7)
    decisions = [
        gate(_stream(rng, 3200, 0.9), _stream(rng, 3200, 0.9), POLICY, margin=0.05).decision
        for _ in range(20)
    ]
    assert decisions.count("worse") == 0
    assert decisions.count("no_worse") >= 15


def test_a_real_drop_is_called_worse() -> None:
    rng = random.Random(11)
    worse = sum(
        gate(_stream(rng, 300, 0.9), _stream(rng, 300, 0.65), POLICY, margin=0.05).decision
        == "worse"
        for _ in range(20)
    )
    assert worse >= 19


def test_too_little_evidence_is_not_read_as_no_worse() -> None:
    rng = random.Random(3)
    # Enough samples to run, too few to bound a drop inside a 2-point margin.
    result = gate(_stream(rng, 40, 0.8), _stream(rng, 40, 0.8), POLICY, margin=0.02)
    assert result.decision == "undecided" and result.exit_code == 6
    assert result.drop_upper > 0.02
    doc = result.to_dict()
    assert doc["guarantee"] == "anytime" and doc["decided_by"]["statistic"] == "drop_upper_bound"
    assert doc["scores_needed"]["candidate"] > 40  # more of the same would decide


def test_ten_out_of_ten_on_both_sides_is_not_proof_of_no_worse() -> None:
    """Zero variance on both sides used to give a zero-width bound (10/10 vs 10/10 → 'no
    worse'); a confidence sequence never collapses."""
    result = gate([1.0] * 10, [1.0] * 10, RegressionPolicy(min_samples=10), margin=0.05)
    assert result.decision == "undecided" and result.drop_upper > 0.05
    assert (
        paired_gate([(1.0, 1.0)] * 10, RegressionPolicy(min_samples=10), margin=0.05).decision
        == "undecided"
    )


def test_the_json_reports_the_statistic_that_decided_never_placeholders() -> None:
    rng = random.Random(13)
    worse = gate(_stream(rng, 300, 0.9), _stream(rng, 300, 0.6), POLICY, margin=0.05)
    doc = worse.to_dict()
    assert doc["decision"] == "worse" and doc["decided_by"]["statistic"] == "drop_lower_bound"
    assert doc["decided_by"]["value"] == doc["drop_lower_bound"] > 0
    assert 0 < doc["p_value"] < POLICY.alpha and doc["p_value"] == doc["p_worse"]
    replay = paired_gate([(1.0, 0.0)] * 40 + [(1.0, 1.0)] * 40, POLICY, margin=0.05).to_dict()
    assert replay["decision"] == "worse" and 0 < replay["p_value"] < POLICY.alpha
    assert replay["guarantee"] == "fixed-n"


def test_paired_replay_is_tighter_than_two_streams() -> None:
    rng = random.Random(5)
    base = [min(1.0, max(0.0, rng.gauss(0.8, 0.15))) for _ in range(200)]
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
    ("candidate_pass", "expected_exit"), [(0.99, 0), (0.5, 1)], ids=["no-worse", "worse"]
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
    for version, p in (("v18", 0.99), ("v19", candidate_pass)):
        for i in range(1500):
            score = 1.0 if rng.random() < p else 0.0
            rows.append(EvalRecord(
                trace_id=f"{version}-{i}", rubric="faith", rubric_version="1", status="ok",
                scorer="faithfulness", method="local",
                score=score, passed=score >= 0.5, prompt_version=version,
                created_at=now - timedelta(seconds=1500 - i),
            ))  # fmt: skip
    _insert(store, rows)
    store.close()
    code = main(["--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
                 "--candidate", "v19", "--baseline", "v18", "--json"])  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert code == expected_exit, doc
    assert doc["baseline"]["n"] == 1500 and doc["candidate"]["n"] == 1500
    assert doc["exit_code"] == expected_exit
    # A fixed start (the rollout) reads the same records; re-runs over it keep the level.
    start = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code = main(["--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
                 "--candidate", "v19", "--baseline", "v18", "--since", start, "--json"])  # fmt: skip
    assert code == expected_exit and json.loads(capsys.readouterr().out)["candidate"]["n"] == 1500
    with pytest.raises(SystemExit) as usage:  # argparse's own exit: 2, one line
        main(["--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
              "--candidate", "v19", "--baseline", "v18", "--since", "yesterday"])  # fmt: skip
    assert usage.value.code == 2


def _insert(store: Store, rows: list[EvalRecord]) -> None:
    from sqlmodel import Session

    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()


def test_gate_with_too_few_scores_is_undecided_and_an_unknown_version_is_a_usage_error(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    settings = make_settings(tmp_path, redis_url)
    argv = ["--settings", str(tmp_path / "settings.toml"), "gate", "--rubric", "faith",
            "--candidate", "v19", "--baseline", "v18"]  # fmt: skip
    assert main(argv) == 2  # neither version has a record yet
    store = Store(settings.database.url)
    now = datetime.now(UTC)
    _insert(store, [
        EvalRecord(trace_id=f"{v}-{i}", rubric="faith", rubric_version="1", status="ok",
                   scorer="faithfulness", method="local", score=1.0, passed=True,
                   prompt_version=v, created_at=now - timedelta(minutes=i))
        for v in ("v18", "v19") for i in range(5)
    ])  # fmt: skip
    store.close()
    capsys.readouterr()
    assert main(argv) == 6
    assert "UNDECIDED" in capsys.readouterr().out


CASCADE = RUBRIC.replace('method = "local"', 'method = "cascade"') + "[options]\naudit_rate = 0.1\n"


@pytest.mark.parametrize("ppi", [True, False], ids=["two-tests", "ppi-off"])
def test_a_cascade_is_gated_on_the_judges_verdicts_and_names_the_test(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str], ppi: bool
) -> None:
    """A cascade before its first certification (every record judged): the candidate's
    judge fails half its traces. With the cheap stage's two tests (the default) the JSON
    and the text name the test that decided and both tests' bounds at alpha/2; with
    `ppi_regression = false` the gate reads the records' scores as before."""
    body = CASCADE if ppi else CASCADE + "ppi_regression = false\n"
    write_rubric(tmp_path / "rubrics", "faith", body)
    settings = make_settings(tmp_path, redis_url)
    store = Store(settings.database.url)
    rng = random.Random(2)
    now = datetime.now(UTC)
    rows = []
    for version, p in (("v18", 0.97), ("v19", 0.5)):
        for i in range(300):
            cheap = rng.random()
            score = 1.0 if rng.random() < p else 0.0
            trail = {
                "cheap_score": cheap,
                "decided_by": "judge",
                "calibration": False,
                "audit_rate": 0.1,
            }
            rows.append(
                EvalRecord(
                    trace_id=f"{version}-{i}",
                    rubric="faith",
                    rubric_version="1",
                    status="ok",
                    scorer="faithfulness",
                    method="cascade",
                    score=score,
                    passed=score >= 0.5,
                    prompt_version=version,
                    details={"cascade": trail},
                    created_at=now - timedelta(seconds=600 - i),
                )
            )
    _insert(store, rows)
    store.close()
    args = [
        "--settings",
        str(tmp_path / "settings.toml"),
        "gate",
        "--rubric",
        "faith",
        "--candidate",
        "v19",
        "--baseline",
        "v18",
    ]
    code = main([*args, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["decision"] == "worse", doc
    if not ppi:
        assert "arms" not in doc and "estimator" not in doc
        return
    assert doc["test"] == "betting-cs-union+ppi++"
    assert "hajek" in doc["estimator"].split("+")
    assert set(doc["arms"]) == {"hajek", "ppi++"}
    assert doc["arms"]["hajek"]["drop_lower_bound"] > 0 and doc["arms"]["hajek"]["alpha"] == 0.005
    assert main(args) == 1
    assert "estimator: hajek" in capsys.readouterr().out
