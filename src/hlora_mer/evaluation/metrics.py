"""Recognition metrics on pooled predictions (MEGC convention; HLoRA-MER eq. 15-16), in numpy.

All scores are computed ONCE from the concatenated test predictions of every fold, never averaged over
folds (``docs/datasets.md``). For each class c, over the pooled vector:

- F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c); **UF1** is the mean of F1_c over the classes counted (eq. 15);
- recall_c = TP_c / N_c; **UAR** is the mean of recall_c over the classes counted (eq. 16);
- **WAR** = sum_c TP_c / N, the overall accuracy (eq. 16); **ACC** is the same number (Tables 3, 4, 6).

Absent classes (the rule, the same for every subset: a fold, a dataset of a composite, a bootstrap draw):

- a class with no true sample and no prediction has F1 = 0/0 and recall = 0/0: it is **left out** of both
  means (it says nothing about the classifier; scikit-learn would count it as 0 and HTNet skips it);
- a class with no true sample but some predictions has F1 = 0 (every prediction of it is a false
  positive) and stays in UF1; its recall is 0/0, so it is left out of UAR;
- a class with true samples but no prediction has F1 = 0 and recall = 0, counted in both.

On a full pooled LOSO vector every class has true samples, so the rule only matters for subsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("acc", "uf1", "uar", "war")


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """``(m, m)`` int64 counts; row = true class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} holds a class index outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``f1``, ``recall`` (NaN where undefined), ``support`` and ``predicted`` from a confusion matrix
    ``(m, m)``, or from a stack of them ``(..., m, m)`` (then each has shape ``(..., m)``).

    The one place where the per-class formulas of the module docstring are written.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)  # N_c
    predicted = cm.sum(axis=-2)
    fp, fn = predicted - tp, support - tp
    denom = 2 * tp + fp + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
    return {"f1": f1, "recall": recall, "support": support.astype(np.int64), "predicted": predicted.astype(np.int64)}


def batched_scores(cms: np.ndarray) -> dict[str, np.ndarray]:
    """ACC, UF1, UAR and WAR of each matrix of a stack ``(..., m, m)`` (the bootstrap's draws), with the
    absent-class rule of the module docstring; NaN for an empty matrix."""
    cms = np.asarray(cms, dtype=np.float64)
    pc = per_class_from_confusion(cms)
    f1, recall = pc["f1"], pc["recall"]
    n = cms.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.trace(cms, axis1=-2, axis2=-1) / np.where(n > 0, n, np.nan)
        uf1 = np.nansum(f1, axis=-1) / np.sum(~np.isnan(f1), axis=-1)
        uar = np.nansum(recall, axis=-1) / np.sum(~np.isnan(recall), axis=-1)
    return {"acc": acc, "uf1": uf1, "uar": uar, "war": acc}


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """ACC, UF1, UAR, WAR from one confusion matrix (:func:`batched_scores` of a stack of one).

    An empty matrix (no sample) gives NaN for every score.
    """
    return {k: float(v) for k, v in batched_scores(np.asarray(cm)).items()}


def scores(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> dict[str, float]:
    """ACC, UF1, UAR and WAR of one (pooled) prediction vector."""
    return scores_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def fold_averaged(y_true: np.ndarray, y_pred: np.ndarray, folds: np.ndarray, num_classes: int) -> dict[str, float]:
    """The per-fold average of each score: NOT the reported metric, kept to show how it differs."""
    values: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    for fold in np.unique(folds):
        mask = folds == fold
        for k, v in scores(y_true[mask], y_pred[mask], num_classes).items():
            values[k].append(v)
    return {k: float(np.nanmean(v)) for k, v in values.items()}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    num_classes: int,
    *,
    seeds: np.ndarray | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    rng_seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap interval over test subjects (``groups``) for each score.

    Each resample draws subjects with replacement, pools their predictions and computes the scores; with
    several training ``seeds`` (one label per prediction), the scores of a resample are averaged over
    seeds, so the interval is for the seed-averaged number reported.

    Returns:
        ``{metric: {"low": ..., "high": ..., "confidence": ...}}``; empty when ``resamples`` is 0.
    """
    if resamples <= 0:
        return {}
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups).astype(str)
    seeds = np.zeros(len(y_true), dtype=np.int64) if seeds is None else np.asarray(seeds)
    subjects, subject_idx = np.unique(groups, return_inverse=True)
    seed_values, seed_idx = np.unique(seeds, return_inverse=True)
    m = num_classes
    # (S subjects, K seeds, m, m): per-subject confusion counts, so a resample is a weighted sum.
    per = np.zeros((len(subjects), len(seed_values), m, m), dtype=np.int64)
    np.add.at(per, (subject_idx, seed_idx, np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    rng = np.random.default_rng(rng_seed)
    draws = rng.integers(0, len(subjects), size=(resamples, len(subjects)))
    weights = np.stack([np.bincount(d, minlength=len(subjects)) for d in draws])  # (R, S)
    cms = np.einsum("rs,skij->rkij", weights, per)  # (R, K, m, m)
    batch = batched_scores(cms)
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for k, v in batch.items():
        per_resample = np.nanmean(v, axis=1)  # average over seeds
        out[k] = {
            "low": float(np.nanquantile(per_resample, alpha)),
            "high": float(np.nanquantile(per_resample, 1 - alpha)),
            "confidence": confidence,
        }
    return out


def describe_absent(cm: np.ndarray, classes: Sequence[str]) -> dict[str, list[str]]:
    """Which classes the absent-class rule touched in a subset (for reports)."""
    pc = per_class_from_confusion(cm)
    return {
        "excluded_from_uf1": [c for c, f in zip(classes, pc["f1"], strict=True) if np.isnan(f)],
        "excluded_from_uar": [c for c, r in zip(classes, pc["recall"], strict=True) if np.isnan(r)],
    }


def summary(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Scores, confusion matrix and per-class numbers of one pooled vector, JSON-ready."""
    cm = confusion_matrix(y_true, y_pred, len(classes))
    pc = per_class_from_confusion(cm)
    return {
        **scores_from_confusion(cm),
        "n": int(cm.sum()),
        "confusion": cm.tolist(),
        "per_class": {
            c: {
                "f1": None if np.isnan(pc["f1"][i]) else float(pc["f1"][i]),
                "recall": None if np.isnan(pc["recall"][i]) else float(pc["recall"][i]),
                "support": int(pc["support"][i]),
                "predicted": int(pc["predicted"][i]),
            }
            for i, c in enumerate(classes)
        },
        **describe_absent(cm, classes),
    }
