"""`evaluator certify`: the stored certifications with their status against today's judge
epoch, guarantee, share decided, P(fail | passed) bound (with its joint confidence) and saved
calls; --compute from the stored labels, with the labels still needed and exit 6 when nothing
can be certified; a cascade without a judge is said to be advisory; a rubric with no cheap
stage says so; unknown rubrics exit 2.

Each test's first command runs in a real process (the console script, its exit code and
output as a user sees them); the later ones call the same `main` in this process, which
checks the same output without paying an interpreter start-up each (~4 s on a loaded
machine)."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from evaluator.analytics.certification_job import decide
from evaluator.cli.main import main
from evaluator.config.rubrics import load_rubrics
from evaluator.config.settings import load_settings
from evaluator.store.models import EvalRecord
from evaluator.store.store import Store
from evaluator.worker.cascade_routing import rubrics_now
from evaluator.worker.runtime import make_judge
from judges.types import Clients
from tests.conftest import REDIS_URL, TONE_RUBRIC, make_settings, write_rubric
from tests.scenarios.cli import run
from tests.test_certification_job import RUBRIC, T0, add, local_passes, records

JUDGE = {"base_url": "http://judge.test/v1", "model": "m"}


def _settings(tmp_path: Path, judge: dict[str, str] | None = JUDGE) -> Path:
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    write_rubric(tmp_path / "rubrics", "tone", TONE_RUBRIC)
    make_settings(tmp_path, REDIS_URL, **({"judge": judge} if judge else {}))
    Store(f"sqlite:///{tmp_path / 'evals.db'}").close()  # the schema, as the worker makes it
    return tmp_path / "settings.toml"


def cli(
    capsys: pytest.CaptureFixture[str], *args: str, settings: Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`evaluator --settings SETTINGS ARGS` in this process, as `run` returns it."""
    capsys.readouterr()  # what earlier code printed is not this command's output
    try:
        code = main(["--settings", str(settings), *args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    proc = subprocess.CompletedProcess(list(args), code, out.out, out.err)
    if check and code != 0:
        raise AssertionError(f"`evaluator {' '.join(args)}` exited {code}:\n{out.out}\n{out.err}")
    return proc


def _keyed(rows: list[EvalRecord], settings: Path, epoch: str | None = None) -> list[EvalRecord]:
    """The records under today's cheap stage and judge epoch (as the worker writes them), or
    under another `epoch`."""
    s = load_settings(settings, environ={})
    now = rubrics_now(load_rubrics(s.rubrics.path).rubrics, Clients(judge=make_judge(s)))
    current = now["faith"]
    assert current is not None
    for r in rows:
        r.epoch = epoch or current.judge_epoch
        r.details = {"cascade": {**r.details["cascade"], "stage": current.stage}}
    return rows


def test_certify_lists_and_computes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = _settings(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'evals.db'}")
    rng = np.random.default_rng(11)
    add(store, _keyed(records(60, T0, rng=rng, prefix="a"), settings))
    # 60 clusters: nothing stored; --compute projects the checkpoint that would certify, and
    # exits 6 (undecided): nothing can be certified yet.
    proc = run("certify", "--rubric", "faith", "--json", "--compute", settings=settings,
               check=False)  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    out = json.loads(proc.stdout)
    assert out["certifications"] == [] and "exchangeable" in out["guarantee"]
    assert out["advisory"] is None and "the judge decides" in out["uncertified"]
    assert out["rubrics"]["faith"]["alpha"] == 0.05 and out["rubrics"]["faith"]["delta"] == 0.1
    (now,) = out["computed"]
    assert now["clusters"] == 60 and not now["certified"] and not now["other_epoch"]
    assert now["labels_needed"] in (200, 400) and now["more_needed"] == now["labels_needed"] - 60
    text = cli(
        capsys, "certify", "--rubric", "faith", "--compute", settings=settings, check=False
    ).stdout
    assert f"needs {now['labels_needed']} ({now['more_needed']} more)" in text
    assert "faith now: alpha 0.05, delta 0.1" in text  # no rows: the rubric's level is shown

    add(store, _keyed(records(160, T0 + timedelta(hours=5), rng=rng, prefix="b"), settings))
    # The same labels under another judge epoch (a judge or model change): certified too,
    # but not what the router uses today.
    old = _keyed(records(220, T0, rng=np.random.default_rng(11), prefix="o"), settings, "e0")
    add(store, old)
    rubrics = load_rubrics(tmp_path / "rubrics").rubrics
    written = decide(store, rubrics, T0 + timedelta(days=1)).written
    (row,) = [r for r in written if r.judge_epoch != "e0"]
    (stale,) = [r for r in written if r.judge_epoch == "e0"]
    assert row.threshold is not None and stale.threshold is not None
    add(store, _keyed(local_passes(4, row.id, T0 + timedelta(days=1)), settings))
    decide(store, rubrics, T0 + timedelta(days=1, minutes=5))
    store.close()

    out = json.loads(cli(capsys, "certify", "--rubric", "faith", "--json", "--compute",
                         settings=settings).stdout)  # fmt: skip
    by_id = {c["id"]: c for c in out["certifications"]}
    cert = by_id[row.id]
    assert cert["status"] == "active" and cert["stratum"] == "qa"
    assert by_id[stale.id]["status"] == "other_epoch"
    assert cert["threshold"] == row.threshold and cert["saved_judge_calls"] == 4
    assert cert["guarantee"] == "P(miss) <= 0.05 with confidence 0.9"
    assert 0 < cert["decided_share"] < 1 and cert["fail_given_pass_upper"] < 0.2
    # Checkpoint 1 (200 clusters) spends delta/4 on each bound: jointly 1 - 2 * 0.025.
    assert cert["checkpoint_labels"] == 200 and cert["fail_given_pass_confidence"] == 0.95
    assert out["summary"] == {"active": 1, "withdrawn": 0, "saved_judge_calls": 4}
    computed = {c["judge_epoch"]: c for c in out["computed"]}
    assert computed[row.judge_epoch]["certified"] and computed["e0"]["other_epoch"]
    assert computed[row.judge_epoch]["checkpoint_labels"] == 200
    text = cli(capsys, "certify", "--rubric", "faith", settings=settings).stdout
    assert "active" in text and row.id in text and "exchangeable" in text
    assert "other_epoch" in text and "jointly with the miss bound" in text

    bad = cli(capsys, "certify", "--rubric", "nope", settings=settings, check=False)
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_a_rubric_without_a_cheap_stage_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path)
    text = run("certify", "--rubric", "tone", settings=settings).stdout
    assert "tone: no cheap stage (not a cascade): nothing to certify" in text
    bad = cli(capsys, "certify", "--rubric", "tone", "--compute", settings=settings, check=False)
    assert bad.returncode == 2 and "has no cheap stage" in bad.stderr


def test_without_a_judge_certify_says_verdicts_are_advisory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _settings(tmp_path, judge=None)
    proc = run("certify", "--rubric", "faith", "--json", "--compute", settings=settings,
               check=False)  # fmt: skip
    out = json.loads(proc.stdout)
    assert proc.returncode == 6 and out["computed"] == []
    assert "advisory" in out["advisory"] and "nothing can be certified" in out["advisory"]
    assert out["uncertified"] == out["advisory"]
    assert out["rubrics"]["faith"]["judge_configured"] is False
    text = cli(capsys, "certify", "--rubric", "faith", settings=settings).stdout
    assert "WARNING: cascade rubric(s) faith have no judge configured" in text
    assert "the judge decides" not in text
    # `evaluator health` says the same (still healthy: nothing needs the judge).
    (tmp_path / "rubrics" / "tone.toml").unlink()
    health = cli(capsys, "health", "--json", settings=settings, check=False)
    judge = json.loads(health.stdout)["judge"]
    assert judge["ok"] and judge["advisory_rubrics"] == ["faith"]
    assert "recorded as advisory" in judge["warning"]
    text = cli(capsys, "health", settings=settings, check=False).stdout
    assert "warning: cascade rubric(s) faith have no judge configured" in text
