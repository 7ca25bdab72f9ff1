"""`evaluator certify` in a real process: the stored certifications with their guarantee,
share decided, P(fail | passed) bound and saved calls; --compute from the stored labels,
with the labels still needed when nothing can be certified; unknown rubrics exit 2."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np

from evaluator.analytics.certification_job import decide
from evaluator.config.rubrics import load_rubrics
from evaluator.store.store import Store
from tests.conftest import REDIS_URL, make_settings, write_rubric
from tests.scenarios.cli import run
from tests.test_certification_job import RUBRIC, T0, add, local_passes, records


def _settings(tmp_path: Path) -> Path:
    write_rubric(tmp_path / "rubrics", "faith", RUBRIC)
    make_settings(tmp_path, REDIS_URL)
    return tmp_path / "settings.toml"


def test_certify_lists_and_computes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'evals.db'}")
    rng = np.random.default_rng(11)
    add(store, records(60, T0, rng=rng, prefix="a"))
    # 60 clusters: nothing stored; --compute projects the checkpoint that would certify.
    out = json.loads(run("certify", "--rubric", "faith", "--json", "--compute",
                         settings=settings).stdout)  # fmt: skip
    assert out["certifications"] == [] and "exchangeable" in out["guarantee"]
    (now,) = out["computed"]
    assert now["clusters"] == 60 and not now["certified"]
    assert now["labels_needed"] in (200, 400) and now["more_needed"] == now["labels_needed"] - 60
    text = run("certify", "--rubric", "faith", "--compute", settings=settings).stdout
    assert f"needs {now['labels_needed']} ({now['more_needed']} more)" in text

    add(store, records(160, T0 + timedelta(hours=5), rng=rng, prefix="b"))
    rubrics = load_rubrics(tmp_path / "rubrics").rubrics
    (row,) = decide(store, rubrics, T0 + timedelta(days=1)).written
    add(store, local_passes(4, row.id, T0 + timedelta(days=1)))
    decide(store, rubrics, T0 + timedelta(days=1, minutes=5))
    store.close()

    out = json.loads(run("certify", "--rubric", "faith", "--json", "--compute",
                         settings=settings).stdout)  # fmt: skip
    (cert,) = out["certifications"]
    assert cert["id"] == row.id and cert["status"] == "active" and cert["stratum"] == "qa"
    assert cert["threshold"] == row.threshold and cert["saved_judge_calls"] == 4
    assert cert["guarantee"] == "P(miss) <= 0.05 with confidence 0.9"
    assert 0 < cert["decided_share"] < 1 and cert["fail_given_pass_upper"] < 0.2
    assert out["summary"] == {"active": 1, "withdrawn": 0, "saved_judge_calls": 4}
    assert out["computed"][0]["certified"] and out["computed"][0]["checkpoint_labels"] == 200
    text = run("certify", "--rubric", "faith", settings=settings).stdout
    assert "active" in text and row.id in text and "exchangeable" in text

    bad = run("certify", "--rubric", "nope", settings=settings, check=False)
    assert bad.returncode == 2 and "nope" in bad.stderr
