"""Mutation-testing companions of tests/test_metrics.py: numbers that the other tests leave unpinned."""

from __future__ import annotations

import numpy as np
import pytest

from hlora_mer.evaluation.metrics import fold_averaged, scores


def test_fold_average_uses_each_folds_own_samples() -> None:
    # Three folds of different sizes and accuracies, so that scoring a fold on the OTHER folds' samples
    # (with two folds the complement of one is the other, which would hide it) gives another mean.
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    p = np.array([0, 1, 1, 1, 1, 0, 1, 0, 0, 0])
    folds = np.array(["a", "a", "a", "b", "b", "c", "c", "c", "c", "c"])
    per_fold = [scores(y[folds == f], p[folds == f], 2)["acc"] for f in ("a", "b", "c")]
    assert per_fold == pytest.approx([1.0, 0.5, 0.4])
    averaged = fold_averaged(y, p, folds, 2)
    assert averaged["acc"] == pytest.approx((1.0 + 0.5 + 0.4) / 3)
    assert averaged["war"] == averaged["acc"]
