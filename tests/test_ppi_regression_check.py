"""The regression check of a cascade rubric runs, by default, two arms at alpha/2 — the
judge-only bet and the bet on PPI pseudo-outcomes (evaluator.analytics.ppi_regression) read
from SQL — and its findings, alert summaries and messages name the arm that fired; other
rubrics' findings are unchanged, and `options.ppi_regression = false` turns the PPI arm off.
On SQLite and PostgreSQL (`store`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import Session

from evaluator.analytics.alerts import policy_for
from evaluator.analytics.check_job import decide
from evaluator.analytics.findings import check_rubric, ppi_floor
from evaluator.config.rubrics import RubricSet, parse_rubric
from evaluator.config.settings import AlertsSettings
from evaluator.store.models import AlertRecord, EvalRecord
from evaluator.store.store import Store

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CUT, AUDIT = 0.7, 0.2
CASCADE = f"""
name = "casc"
version = "1"
scorer = "faithfulness"
method = "cascade"
pass_threshold = 0.5
[options]
audit_rate = {AUDIT}
"""


def cascade(store: Store, lo: datetime, hi: datetime, n: int, drop: float, seed: int) -> None:
    """n traces through the cascade's routing in [lo, hi): judged below the certified
    threshold, judged in the calibration draw above it, else passed locally. The judge's pass
    chance is 0.1 + 0.8·f − drop (the cheap score does not see the drop)."""
    rng = np.random.default_rng(seed)
    f = rng.random(n)
    y = (rng.random(n) < np.clip(0.1 + 0.8 * f - drop, 0, 1)).astype(float)
    calib = rng.random(n) < AUDIT
    judged = (f < CUT) | calib
    step = (hi - lo) / n
    rows = []
    for i in range(n):
        trail = {"cheap_score": float(f[i]), "local_value": float(f[i]),
                 "calibration": bool(calib[i]), "audit_rate": AUDIT, "certified_threshold": CUT,
                 "decided_by": "judge" if judged[i] else "local_certified"}  # fmt: skip
        score = float(y[i]) if judged[i] else float(f[i])
        rows.append(EvalRecord(
            trace_id=f"t-{uuid.uuid4().hex}", rubric="casc", rubric_version="1",
            scorer="faithfulness", method="cascade", status="ok", score=score,
            passed=score >= 0.5, details={"cascade": trail}, prompt_version="v1",
            epoch="e1", created_at=lo + step * i, inclusion_probability=1.0,
        ))  # fmt: skip
    with Session(store.engine) as session:
        session.add_all(rows)
        session.commit()


def rubric(tmp_path: Path, body: str = CASCADE):  # type: ignore[no-untyped-def]
    return parse_rubric(body, source=tmp_path / "casc.toml")


def write(store: Store, window_drop: float) -> None:
    cascade(store, NOW - timedelta(days=7, hours=6), NOW - timedelta(hours=6), 3000, 0.0, 1)
    cascade(store, NOW - timedelta(hours=6), NOW - timedelta(minutes=5), 1500, window_drop, 2)


def test_a_drop_the_judge_sees_pages_and_names_the_arm(store: Store, tmp_path: Path) -> None:
    write(store, window_drop=0.3)
    r = rubric(tmp_path)
    assert ppi_floor(r) == AUDIT  # on by default
    cfg = policy_for(r, AlertsSettings())
    with Session(store.engine) as session:
        findings, _ = check_rubric(session, "casc", cfg, 0.5, NOW, pi_floor=ppi_floor(r))
    (f,) = findings
    assert f.kind == "drop" and f.alarm
    named = f.estimator
    assert named is not None and set(named["arms"]) == {"hajek", "ppi++"}
    fired = [k for k, arm in named["arms"].items() if arm["alarm"]]
    assert named["estimator"] in fired
    ppi = named["arms"]["ppi++"]
    assert ppi["alarm"] and ppi["pi_floor"] == AUDIT and ppi["clamped"] == 0
    # The drop detector: each arm at twice the average run length (its "alpha" is 1/arl).
    assert named["arms"]["hajek"]["alpha"] == pytest.approx(1 / (2 * cfg.policy.arl))
    assert ppi["alpha"] == pytest.approx(1 / (2 * cfg.policy.arl))
    if named["estimator"] == "ppi++":
        # The verdict's means are then the top judge's (0.5 before, about 0.23 after), not
        # the scores the cascade wrote (local passes count their cheap score).
        assert f.verdict.baseline.mean == pytest.approx(0.5, abs=0.05)
        assert f.verdict.current.mean < 0.35
    report, events = decide(store, RubricSet((r,), tmp_path), AlertsSettings(), NOW)
    assert report.opened and events
    alert: AlertRecord = report.opened[0]
    assert alert.summary["estimator"]["estimator"] == named["estimator"]
    assert f"({named['estimator']} arm; either of two e-processes at alpha/2" in alert.message


def test_a_steady_cascade_does_not_page(store: Store, tmp_path: Path) -> None:
    write(store, window_drop=0.0)
    r = rubric(tmp_path)
    cfg = policy_for(r, AlertsSettings())
    with Session(store.engine) as session:
        findings, _ = check_rubric(session, "casc", cfg, 0.5, NOW, pi_floor=ppi_floor(r))
    (f,) = findings
    assert not f.alarm and f.estimator is not None
    assert not any(arm["alarm"] for arm in f.estimator["arms"].values())


def test_without_an_audit_rate_a_cascade_or_the_ppi_arm_todays_check_stands(
    store: Store, tmp_path: Path
) -> None:
    write(store, window_drop=0.3)
    no_audit = rubric(tmp_path, CASCADE.replace(f"audit_rate = {AUDIT}", "audit_rate = 0"))
    plain = rubric(tmp_path, CASCADE.split('method = "cascade"')[0] + "pass_threshold = 0.5\n")
    off = rubric(tmp_path, CASCADE + "ppi_regression = false\n")
    assert ppi_floor(no_audit) is None and ppi_floor(plain) is None
    assert ppi_floor(off) is None  # the PPI arm off: the judge-only check at the full alpha
    cfg = policy_for(plain, AlertsSettings())
    with Session(store.engine) as session:
        findings, _ = check_rubric(session, "casc", cfg, 0.5, NOW)
    assert all(f.estimator is None for f in findings)
    assert findings[0].alarm and findings[0].verdict.alpha == pytest.approx(1 / cfg.policy.arl)
