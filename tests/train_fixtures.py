"""Helpers for the training tests: a tiny labelled table with in-memory clips, and tiny experiment configs."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from conftest import TINY_IMAGE
from hlora_mer.config import ExperimentConfig, from_dict
from hlora_mer.training.data import TensorSource

# Not in alphabetical order (nor in casme2_3cls's order): output columns built from sorted(labels) differ.
CLASSES = ("surprise", "negative", "positive")


def tiny_table(
    subjects: int = 3, per_class: int = 1, classes: tuple[str, ...] = CLASSES, dataset: str = "toy"
) -> pd.DataFrame:
    """``subjects`` x ``per_class`` x classes rows with namespaced subjects (``toy/01``)."""
    rows = []
    for s in range(subjects):
        for c, name in enumerate(classes):
            for k in range(per_class):
                subject = f"{dataset}/{s + 1:02d}"
                rows.append(
                    {
                        "sample_id": f"{subject}/clip{c}{k}",
                        "subject": subject,
                        "dataset": dataset,
                        "label": name,
                        "label_index": c,
                    }
                )
    return pd.DataFrame(rows)


def tiny_clips(table: pd.DataFrame, frames: int = 8, size: int = TINY_IMAGE, seed: int = 0) -> torch.Tensor:
    """Noise clips with a class-dependent brightness, so a model can learn them: ``(N, T, 3, H, W)``."""
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randn(len(table), frames, 3, size, size, generator=gen) * 0.5
    clips += torch.tensor(table["label_index"].to_numpy().copy(), dtype=torch.float32).view(-1, 1, 1, 1, 1)
    return clips


def tiny_source(subjects: int = 3, per_class: int = 1, datasets: tuple[str, ...] = ("toy",)) -> TensorSource:
    table = pd.concat([tiny_table(subjects, per_class, dataset=d) for d in datasets], ignore_index=True)
    return TensorSource(table, tiny_clips(table), CLASSES, flip_prob=0.5, info={"kind": "in-memory test data"})


def tiny_experiment(**sections: Any) -> ExperimentConfig:
    """An experiment on the tiny backbone: 2 steps per fold, batch 4, no bootstrap by default."""
    data: dict[str, Any] = {
        "name": "tiny",
        "data": {"datasets": ["toy"], "label_scheme": "casme2_3cls", "detector": "none"},
        "model": {
            "backbone": {"name": "test_vit_reg", "pretrained": False},
            "image_size": TINY_IMAGE,
            "num_classes": 3,
        },
        "train": {"steps": 2, "batch_size": 4, "device": "cpu"},
        "eval": {"bootstrap": 50},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(ExperimentConfig, data)


# Enough steps at a high enough rate that the tiny model's predictions change between evaluation points, so
# that the leaky best-epoch-on-test column and the final predictions differ (tests/test_run_outputs.py).
LEAKY_TRAIN: dict[str, Any] = {"steps": 4, "lr": 1e-2, "eval_every": 1}
