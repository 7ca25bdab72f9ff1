"""/metrics and the OTel alert events name the estimator of a cascade rubric's numbers
(PPI++ where it stands); other rubrics' series keep their labels. The exposition is parsed
back with prometheus_client's own parser. On SQLite and PostgreSQL (`store`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from evaluator.analytics.ppi_trends import score_estimates, window_estimates
from evaluator.outputs.metrics import _Snapshot, _sql_families
from evaluator.outputs.otel import alert_attributes
from evaluator.store.models import utcnow
from evaluator.store.store import Store
from tests.test_ppi_regression_check import cascade
from tests.test_ppi_trends import plain_day


def exposition(store: Store, hook: bool = True) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry(auto_describe=False)
    got = _sql_families(store, timedelta(hours=24), score_estimates if hook else None)
    registry.register(_Snapshot(list(got)))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_a_cascade_rubrics_score_series_names_its_estimator(store: Store) -> None:
    now = utcnow()
    cascade(store, now - timedelta(hours=20), now - timedelta(hours=1), 1500, 0.0, 3)
    plain_day(store, now - timedelta(hours=10), 50)
    want = window_estimates(store, "casc", now - timedelta(hours=24), utcnow())
    (shown,) = want.values()
    assert shown["estimator"] == "ppi++"
    m = exposition(store)
    (casc,) = [(lab, v) for lab, v in m["evaluator_score"] if lab["rubric"] == "casc"]
    assert casc[0]["estimator"] == "ppi++" and casc[1] == pytest.approx(shown["mean"])
    # The top judge's mean (0.1 + 0.8·E[f] = 0.5), not the written scores' mixture.
    assert casc[1] == pytest.approx(0.5, abs=0.06)
    for name, key in (("evaluator_score_ci_lower", "ci_low"), ("evaluator_score_ci_upper",
                      "ci_high"), ("evaluator_score_ess", "ess")):  # fmt: skip
        (got,) = [(lab, v) for lab, v in m[name] if lab["rubric"] == "casc"]
        assert got[0]["estimator"] == "ppi++" and got[1] == pytest.approx(shown[key])
    (plain,) = [(lab, v) for lab, v in m["evaluator_score"] if lab["rubric"] == "plain"]
    assert "estimator" not in plain[0] and plain[1] == pytest.approx(0.8)
    (count,) = [(lab, v) for lab, v in m["evaluator_score_samples"] if lab["rubric"] == "casc"]
    assert "estimator" not in count[0] and count[1] == 1500
    # Without the hook (an entry point that does not hand it in) every series is today's.
    bare = exposition(store, hook=False)
    assert all("estimator" not in lab for lab, _ in bare["evaluator_score"])


def test_an_alert_event_names_the_estimator_only_when_the_alert_does() -> None:
    alert = {"rubric": "casc", "summary": {"estimator": {"estimator": "ppi++"}}}
    assert alert_attributes("alert.opened", alert)["evaluator.score.estimator"] == "ppi++"
    assert "evaluator.score.estimator" not in alert_attributes("alert.opened", {"summary": {}})
