"""Mutation-testing companions of tests/test_metrics.py: numbers that the other tests leave unpinned."""

from __future__ import annotations

import numpy as np
import pytest

from hlora_mer.evaluation.metrics import (
    METRIC_NAMES,
    batched_scores,
    bootstrap_ci,
    fold_averaged,
    scores,
    scores_from_confusion,
    summary,
)


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


def test_batched_scores_on_single_samples_equal_the_single_scores() -> None:
    # Counts of 0 and 1: a class with one true sample (recall 1 or 0), one false positive only (F1 = 0 over a
    # denominator of 1), a matrix of one sample, and an empty one.
    cms = np.array(
        [
            [[1, 0], [0, 0]],  # one sample, right
            [[0, 1], [0, 0]],  # one sample, wrong: F1 of both classes over a denominator of 1
            [[0, 0], [1, 1]],
            [[0, 0], [0, 0]],
        ]
    )
    batch = batched_scores(cms)
    for i in range(len(cms) - 1):
        for k, v in scores_from_confusion(cms[i]).items():
            assert batch[k][i] == pytest.approx(v), (i, k)
    assert batch["acc"][:3] == pytest.approx([1.0, 0.0, 0.5])
    assert batch["uf1"][:3] == pytest.approx([1.0, 0.0, 1 / 3])
    assert batch["uar"][:3] == pytest.approx([1.0, 0.0, 0.5])
    assert all(np.isnan(batch[k][3]) for k in METRIC_NAMES)


def _reference_interval(y, p, groups, seeds, m, resamples, confidence, rng_seed):
    """The percentile bootstrap written out plainly: draw subjects, pool their rows, score per seed, average."""
    subjects = np.unique(groups.astype(str))
    draws = np.random.default_rng(rng_seed).integers(0, len(subjects), size=(resamples, len(subjects)))
    per_resample: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    for draw in draws:
        rows = np.concatenate([np.flatnonzero(groups == subjects[s]) for s in draw])
        by_seed = [scores(y[rows][seeds[rows] == k], p[rows][seeds[rows] == k], m) for k in np.unique(seeds)]
        for key in METRIC_NAMES:
            per_resample[key].append(float(np.nanmean([s[key] for s in by_seed])))
    alpha = (1 - confidence) / 2
    return {
        k: {"low": np.nanquantile(v, alpha), "high": np.nanquantile(v, 1 - alpha), "confidence": confidence}
        for k, v in per_resample.items()
    }


def test_bootstrap_interval_over_subjects_and_seeds_matches_the_plain_computation() -> None:
    rng = np.random.default_rng(5)
    subjects = np.array([f"s{i}" for i in range(12)])  # "s10" sorts before "s2"
    groups = np.repeat(subjects, 6)
    seeds = np.tile(np.repeat([3, 7], 3), 12)  # two training seeds, three test rows each per subject
    y = rng.integers(0, 3, len(groups))
    # seed 3 is mostly right, seed 7 mostly wrong: averaging over seeds differs from pooling them
    right = np.where(seeds == 3, rng.random(len(groups)) < 0.9, rng.random(len(groups)) < 0.3)
    p = np.where(right, y, (y + 1 + rng.integers(0, 2, len(groups))) % 3)
    got = bootstrap_ci(y, p, groups, 3, seeds=seeds, resamples=200, confidence=0.8, rng_seed=4)
    want = _reference_interval(y, p, groups, seeds, 3, 200, 0.8, 4)
    assert got.keys() == set(METRIC_NAMES)
    for k in METRIC_NAMES:
        assert got[k] == pytest.approx(want[k]), k
    pooled = bootstrap_ci(y, p, groups, 3, resamples=200, confidence=0.8, rng_seed=4)
    assert pooled["uf1"] != pytest.approx(got["uf1"])  # without seeds the rows are pooled, not averaged


def test_one_resample_is_an_interval_and_zero_is_none() -> None:
    y, p, groups = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), np.array(["a", "a", "b", "b"])
    one = bootstrap_ci(y, p, groups, 2, resamples=1)
    assert one["acc"]["low"] == one["acc"]["high"] and one["acc"]["confidence"] == 0.95
    assert bootstrap_ci(y, p, groups, 2, resamples=0) == {}


def test_the_report_interval_uses_rng_seed_0() -> None:
    # evaluation/report.py relies on the default seed: the interval a run reports is reproducible.
    rng = np.random.default_rng(6)
    y, groups = rng.integers(0, 3, 60), np.repeat([f"s{i}" for i in range(6)], 10)
    p = np.where(rng.random(60) < 0.6, y, rng.integers(0, 3, 60))
    default = bootstrap_ci(y, p, groups, 3, resamples=50)
    assert default == bootstrap_ci(y, p, groups, 3, resamples=50, rng_seed=0)
    assert default != bootstrap_ci(y, p, groups, 3, resamples=50, rng_seed=1)


def test_summary_per_class_numbers_follow_the_class_order() -> None:
    # Classes not in alphabetical order; "sad" is never true and never predicted, "calm" only predicted.
    classes = ["tense", "calm", "sad", "happy"]
    y = np.array([0, 0, 0, 3, 3])
    p = np.array([0, 1, 3, 3, 3])
    out = summary(y, p, classes)
    assert out["n"] == 5
    assert out["confusion"] == [[1, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 2]]
    assert out["per_class"] == {
        "tense": {"f1": 0.5, "recall": pytest.approx(1 / 3), "support": 3, "predicted": 1},
        "calm": {"f1": 0.0, "recall": None, "support": 0, "predicted": 1},
        "sad": {"f1": None, "recall": None, "support": 0, "predicted": 0},
        "happy": {"f1": 0.8, "recall": 1.0, "support": 2, "predicted": 3},
    }
    assert out["excluded_from_uf1"] == ["sad"]
    assert out["excluded_from_uar"] == ["calm", "sad"]
    assert out["uf1"] == pytest.approx((0.5 + 0.0 + 0.8) / 3)
    assert out["uar"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert out["acc"] == out["war"] == pytest.approx(3 / 5)


def test_bad_predictions_are_refused_with_the_range_and_the_lengths() -> None:
    with pytest.raises(ValueError, match=r"y_pred holds a class index outside 0\.\.3$"):
        summary(np.array([0, 1]), np.array([0, 4]), ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="y_true and y_pred differ in length: 3 vs 2"):
        scores([0, 1, 2], [0, 1], 3)
