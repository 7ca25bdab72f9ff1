"""The cascade's local pass end to end on seeded synthetic traffic (issue 28): labels come
from the router's own calibration draw (`calibration_point` of each session below
audit_rate, all of a session's traces or none), the certification keeps one per session
(`evalcore.certification.certify` with clusters), and the local step passes a trace when its
score is ≥ the certified threshold (`judges.scorers.faithfulness.decide`). The false
decision: a certified threshold whose true miss rate m(t) = P(score ≥ t | the judge fails)
exceeds alpha. It must happen in at most delta of the replicates.

Traffic: sessions of 1–4 traces share a session effect on the latent score (misses come in
sessions); failing traces' latent ~ FAIL_MEAN + session effect + noise, so their marginal
is N(FAIL_MEAN, 1 + SESSION_SD²) and m(t) is known in closed form. Session sizes do not
depend on scores, so the session-uniform guarantee is the trace-level one.
"""

from __future__ import annotations

import math

import numpy as np

from evalcore.certification import certify
from evaluator.worker.cascade_routing import calibration_point
from judges.scorers.faithfulness import decide
from judges.types import CascadeRoute, CertifiedThreshold, Score, Status
from tests.statistics.calibration import SEEDS, assert_within_level
from tests.statistics.test_certification_calibration import FAIL_MEAN, PASS_MEAN, above, sigmoid

ALPHA, DELTA, AUDIT_RATE = 0.05, 0.1, 0.1
SESSIONS, FAIL_RATE, SESSION_SD = 3000, 0.3, 0.7


def test_certified_local_passes_from_the_calibration_draw_hold_the_level() -> None:
    rng = np.random.default_rng(28)
    sd = math.sqrt(1.0 + SESSION_SD**2)
    bad = certified = 0
    labels_used: list[int] = []
    for rep in range(SEEDS):
        # Only the draw's sessions are generated: the draw reads no score, so the others
        # would not change which traces become labels.
        ids = [f"r{rep}-s{i}" for i in range(SESSIONS)]
        in_draw = [c for c in ids if calibration_point(c, "faithfulness") < AUDIT_RATE]
        sizes = rng.integers(1, 5, size=len(in_draw))
        clusters = np.repeat(np.arange(len(in_draw)), sizes)
        effect = rng.normal(0.0, SESSION_SD, size=len(in_draw))[clusters]
        fails = rng.random(clusters.size) < FAIL_RATE
        latent = np.where(fails, FAIL_MEAN, PASS_MEAN) + effect + rng.standard_normal(clusters.size)
        cert = certify(sigmoid(latent), fails, clusters, alpha=ALPHA, delta=DELTA, seed=rep)
        labels_used.append(cert.labels)
        if cert.threshold is None:
            continue
        certified += 1
        t = cert.threshold
        # The scorer's rule passes exactly the scores >= t (checked at t and just below it).
        route = CascadeRoute(CertifiedThreshold("c", t, ALPHA, DELTA))
        at = Score(Status.OK, t, "grounded", True, "", {"task": "qa"}, "local")
        assert decide(at, route, judge_configured=True)[0] == "local_certified"
        if t > 0:
            below = Score(Status.OK, max(t - 1e-9, 0.0), "x", False, "", {}, "local")
            assert decide(below, route, judge_configured=True)[0] == "judge"
        bad += above(t, FAIL_MEAN, sd) > ALPHA
    assert_within_level(bad, SEEDS, DELTA, "cascade draw + one per session, alpha 0.05")
    # Not vacuous: most replicates certify something (the draw yields ~300 sessions).
    assert certified >= SEEDS // 2, (certified, int(np.median(labels_used)))
