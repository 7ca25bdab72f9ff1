from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from judges.agreement import (
    auroc,
    balanced_accuracy,
    best_threshold,
    cohen_kappa,
    confusion,
    f1,
    predict,
)


def test_auroc_perfect_inverted_and_tied() -> None:
    assert auroc([False, False, True, True], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([False, False, True, True], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([False, True], [0.5, 0.5]) == 0.5
    # One tie between a positive and a negative counts one half: (1 + 0.5) / 2.
    assert auroc([False, True, False, True], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(ValueError):
        auroc([True, True], [0.1, 0.2])


def test_confusion_and_derived_metrics() -> None:
    y = [True, True, False, False, False]
    p = [True, False, True, False, False]
    assert confusion(y, p) == confusion(y, p)
    c = confusion(y, p)
    assert (c.tp, c.fn, c.fp, c.tn) == (1, 1, 1, 2)
    assert balanced_accuracy(y, p) == pytest.approx((0.5 + 2 / 3) / 2)
    assert f1(y, p) == pytest.approx(0.5)
    assert cohen_kappa(y, y) == 1.0


def test_kappa_known_value() -> None:
    # 20 items: both yes 10, both no 5, disagree 5 → po 0.75, pe 0.5 → kappa 0.5.
    y = [True] * 10 + [False] * 5 + [True] * 3 + [False] * 2
    p = [True] * 10 + [False] * 5 + [False] * 3 + [True] * 2
    expected = 13 / 20 * 12 / 20 + 7 / 20 * 8 / 20
    assert cohen_kappa(y, p) == pytest.approx(1 - 0.25 / (1 - expected))


def test_best_threshold_separates_separable_scores() -> None:
    choice = best_threshold([False, False, True, True], [0.1, 0.3, 0.6, 0.9])
    assert choice.threshold == 0.6 and choice.balanced_accuracy == 1.0
    assert predict([0.1, 0.6], 0.6) == [False, True]
    assert best_threshold([False, True, True], [0.1, 0.2, 0.3], metric="f1").f1 == 1.0


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        f1([True], [True, False])


labelled = st.lists(st.tuples(st.booleans(), st.floats(0, 1)), min_size=2).filter(
    lambda xs: 0 < sum(y for y, _ in xs) < len(xs)
)


@given(labelled)
def test_auroc_bounds_and_symmetry(xs: list[tuple[bool, float]]) -> None:
    y = [a for a, _ in xs]
    s = [b for _, b in xs]
    value = auroc(y, s)
    assert 0.0 <= value <= 1.0
    assert auroc(y, [-v for v in s]) == pytest.approx(1 - value)


@given(labelled)
def test_best_threshold_is_at_least_as_good_as_any_score(xs: list[tuple[bool, float]]) -> None:
    y = [a for a, _ in xs]
    s = [b for _, b in xs]
    best = best_threshold(y, s)
    assert all(balanced_accuracy(y, predict(s, t)) <= best.balanced_accuracy + 1e-12 for t in s)
    assert -1.0 <= cohen_kappa(y, predict(s, best.threshold)) <= 1.0
