"""The ground floor: pure primitives that both `judges` and `evaluator` build on.

Nothing here does I/O or imports either package; `lint-imports` holds that line. It holds
the arithmetic every decision of the service is made with:

* `evalcore.intervals` — sufficient statistics, Student-t and Wilson intervals of a mean;
* `evalcore.weights` — inverse-probability weighted statistics (Hájek means, the ESS);
* `evalcore.sequences` — anytime-valid confidence sequences for the mean of [0, 1] scores
  (mixtures of betting martingales), optionally Horvitz–Thompson weighted;
* `evalcore.exact` — exact finite-sample tools: the regularised incomplete beta,
  Clopper–Pearson bounds and the exact sign-flip (McNemar) tail for paired comparisons;
* `evalcore.ppi` — prediction-powered (PPI++) means with inclusion probabilities;
* `evalcore.certification` and `evalcore.recertification` — a cheap stage's certified pass
  threshold, its checkpoints and withdrawal monitors;
* `evalcore.routing` — a two-stage cascade's routing rule (p1, p2|1);
* `evalcore.redaction_kinds` — the redaction kinds' names, for settings and the redactor.

The decision functions that use them (the gate, regression alerts, judge drift) live in
`evaluator.analytics`; each states its guarantee in its docstring.
"""
