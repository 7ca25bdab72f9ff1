"""The ground floor: pure primitives that both `judges` and `evaluator` build on.

Nothing here does I/O or imports either package; `lint-imports` holds that line. Today it
holds the statistics every decision of the service is made with:

* `evalcore.sequences` — anytime-valid confidence sequences for the mean of [0, 1] scores
  (mixtures of betting martingales), optionally Horvitz–Thompson weighted;
* `evalcore.exact` — exact finite-sample tools: the regularised incomplete beta,
  Clopper–Pearson bounds and the exact sign-flip (McNemar) tail for paired comparisons.

The decision functions that use them (the gate, regression alerts, judge drift) live in
`evaluator.analytics`; each states its guarantee in its docstring.
"""
