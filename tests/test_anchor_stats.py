"""Anchor sets, pure parts: stratified sampling, the price estimate, agreement with
intervals and the drift test (paired and unpaired)."""

from __future__ import annotations

import random

import pytest

from judges.anchors import AnchorSpec, calls_per_item, estimate_price, stratified_sample
from judges.drift import agreement_with_intervals, drift_test
from judges.rubric import Rubric


def test_stratified_sample_balances_labels_and_is_stable() -> None:
    keys = [f"k{i}" for i in range(1000)]
    positive = [i % 10 == 0 for i in range(1000)]  # 100 positives, 900 negatives
    pick = stratified_sample(keys, positive, 200, seed="s")
    assert len(pick) == 200
    assert sum(positive[i] for i in pick) == 100
    assert pick == stratified_sample(keys, positive, 200, seed="s")
    assert pick != stratified_sample(keys, positive, 200, seed="other")
    # adding an item moves at most one item of each class in or out
    bigger = stratified_sample([*keys, "new"], [*positive, False], 200, seed="s")
    assert len(set(pick) ^ set(bigger)) <= 2


def test_stratified_sample_gives_a_small_class_budget_to_the_other() -> None:
    positive = [True] * 30 + [False] * 500
    pick = stratified_sample([str(i) for i in range(530)], positive, 200)
    assert len(pick) == 200 and sum(positive[i] for i in pick) == 30
    assert len(stratified_sample(["a", "b"], [True, False], 200)) == 2
    with pytest.raises(ValueError):
        stratified_sample(["a"], [True, False], 2)


def test_price_estimate_is_calls_times_mean_tokens_times_price() -> None:
    def price(_model: str | None, tin: int, tout: int) -> float:
        return (tin * 0.15 + tout * 0.60) / 1e6

    est = estimate_price(200, 1.0, 1500.0, 120.0, price, "gpt-4o-mini")
    assert (est.calls, est.input_tokens, est.output_tokens) == (200, 300_000, 24_000)
    assert est.usd == pytest.approx(0.045 + 0.0144)
    assert estimate_price(200, 2.0, 1000, 100, price).calls == 400
    assert calls_per_item("faithfulness", "local") == 0.0
    assert calls_per_item("self_consistency", "judge", samples=5) == 5.0


def test_rubric_accepts_an_anchors_table() -> None:
    rubric = Rubric.model_validate(
        {
            "name": "tone",
            "version": "1",
            "scorer": "llm_rubric",
            "llm_rubric": {"criteria": "polite?"},
            "anchors": {"file": "anchors/tone.jsonl", "every": "7d", "max_items": 200},
        }
    )
    assert rubric.anchors == AnchorSpec(file="anchors/tone.jsonl", every="7d", max_items=200)
    with pytest.raises(ValueError):
        AnchorSpec.model_validate({"file": "x", "max_itemz": 3})


def _judge(y: list[bool], acc: float, rng: random.Random) -> list[bool]:
    return [t if rng.random() < acc else not t for t in y]


def test_agreement_has_intervals_that_cover_the_value() -> None:
    rng = random.Random(1)
    y = [i % 2 == 0 for i in range(200)]
    pred = _judge(y, 0.85, rng)
    risk = [0.9 if p else 0.1 for p in pred]
    out = agreement_with_intervals(y, pred, risk, reps=300, seed=3)
    for name in ("auroc", "balanced_accuracy", "cohen_kappa"):
        m = out[name]
        assert m["ci_low"] <= m["value"] <= m["ci_high"], name
        assert m["ci_high"] - m["ci_low"] < 0.25
    assert 0.78 < out["balanced_accuracy"]["value"] < 0.92
    one_class = agreement_with_intervals([True, True], [True, False], [0.9, 0.1], reps=10)
    assert one_class["auroc"]["value"] is None


def test_drift_test_paired_and_unpaired() -> None:
    rng = random.Random(7)
    y = [i % 2 == 0 for i in range(200)]
    before = _judge(y, 0.85, rng)
    # a drifted judge gets wrong a share of what it got right; the rest repeats itself
    after = [
        b if (b != t) or rng.random() > 0.18 else not t for t, b in zip(y, before, strict=True)
    ]
    paired = drift_test(y, before, y, after, paired=True)
    assert paired.alarm and paired.test == "paired-mcnemar" and paired.drop > 0.1
    same = drift_test(y, before, y, before, paired=True)
    assert not same.alarm and same.p_value == 1.0
    unpaired = drift_test(y, before, y, _judge(y, 0.60, rng), paired=False)
    assert unpaired.alarm and unpaired.test == "two-proportion"
    # a significant but tiny drop does not page
    tiny = drift_test(y, before, y, before, paired=True, min_drop=0.0)
    assert not tiny.alarm
    with pytest.raises(ValueError):
        drift_test(y, before, y[::-1], after, paired=True)


def test_unpaired_false_alarm_rate_is_near_alpha() -> None:
    rng = random.Random(11)
    y = [i % 2 == 0 for i in range(200)]
    alarms = sum(
        drift_test(y, _judge(y, 0.85, rng), y, _judge(y, 0.85, rng), paired=False, min_drop=0).alarm
        for _ in range(2000)
    )
    assert alarms / 2000 < 0.02  # alpha 0.01, one-sided
