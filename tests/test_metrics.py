"""Metrics against hand-computed cases, the absent-class rule, pooled vs fold-averaged, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hlora_mer.evaluation.metrics import (
    batched_scores,
    bootstrap_ci,
    confusion_matrix,
    fold_averaged,
    mean_std,
    scores,
    scores_from_confusion,
)


def test_hand_computed_three_classes() -> None:
    # true: 0 0 0 1 1 2 ; pred: 0 0 1 1 2 2
    y = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 2, 2]
    cm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    s = scores(y, p, 3)
    # F1: class0 2*2/(4+0+1)=0.8; class1 2/(2+1+1)=0.5; class2 2/(2+1+0)=2/3
    assert s["uf1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # recall: 2/3, 1/2, 1
    assert s["uar"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert s["acc"] == s["war"] == pytest.approx(4 / 6)


def test_matches_sklearn_when_every_class_is_present() -> None:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    s = scores(y, p, 5)
    assert s["uf1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert s["uar"] == pytest.approx(balanced_accuracy_score(y, p))


def test_class_absent_from_labels_and_predictions_is_left_out() -> None:
    # class 2 never occurs: a 2-class problem in disguise
    s = scores([0, 0, 1, 1], [0, 1, 1, 1], 3)
    f1_0, f1_1 = 2 / 3, 0.8
    assert s["uf1"] == pytest.approx((f1_0 + f1_1) / 2)
    assert s["uar"] == pytest.approx((0.5 + 1.0) / 2)


def test_class_only_predicted_counts_zero_f1_but_not_in_uar() -> None:
    # class 2 has no true sample but is predicted once: F1_2 = 0 in UF1; recall_2 undefined, not in UAR
    s = scores([0, 0, 1, 1], [0, 2, 1, 1], 3)
    f1 = [2 / 3, 1.0, 0.0]
    assert s["uf1"] == pytest.approx(sum(f1) / 3)
    assert s["uar"] == pytest.approx((0.5 + 1.0) / 2)


def test_class_never_predicted_counts_zero() -> None:
    s = scores([0, 1, 2], [0, 1, 1], 3)
    assert s["uf1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert s["uar"] == pytest.approx((1 + 1 + 0) / 3)


def test_empty_subset_is_nan() -> None:
    assert all(math.isnan(v) for v in scores([], [], 3).values())


def test_pooled_differs_from_fold_average() -> None:
    # fold A: two class-0 samples, both right; fold B: three class-1 samples, one predicted as class 0.
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0, 0, 0, 1, 1])
    folds = np.array(["A", "A", "B", "B", "B"])
    pooled = scores(y, p, 2)["uf1"]  # F1_0 = 4/5, F1_1 = 4/5
    averaged = fold_averaged(y, p, folds, 2)["uf1"]  # A: 1.0 (class 1 absent); B: (0 + 4/5) / 2
    assert pooled == pytest.approx(0.8)
    assert averaged == pytest.approx((1.0 + 0.4) / 2)
    assert abs(pooled - averaged) > 0.05


def test_batched_scores_agree_with_single() -> None:
    rng = np.random.default_rng(1)
    cms = rng.integers(0, 5, size=(7, 3, 3))
    cms[2, 1, :] = 0  # a class without true samples
    cms[2, :, 1] = 0  # ...and without predictions
    batch = batched_scores(cms)
    for i in range(len(cms)):
        single = scores_from_confusion(cms[i])
        for k, v in single.items():
            assert batch[k][i] == pytest.approx(v)


def test_bootstrap_interval_brackets_the_estimate_and_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 120)
    p = np.where(rng.random(120) < 0.7, y, rng.integers(0, 3, 120))
    subjects = np.repeat(np.arange(12), 10)
    ci = bootstrap_ci(y, p, subjects, 3, resamples=300, confidence=0.9, rng_seed=0)
    point = scores(y, p, 3)
    for k in ("acc", "uf1", "uar"):
        assert ci[k]["low"] <= point[k] <= ci[k]["high"]
        assert ci[k]["high"] - ci[k]["low"] > 0
    assert ci == bootstrap_ci(y, p, subjects, 3, resamples=300, confidence=0.9, rng_seed=0)
    assert bootstrap_ci(y, p, subjects, 3, resamples=0) == {}


def test_mean_std_over_seeds() -> None:
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    out = mean_std([0.2, 0.4])
    assert out["mean"] == pytest.approx(0.3)
    assert out["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))


def test_out_of_range_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
