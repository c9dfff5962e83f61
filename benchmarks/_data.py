"""The benchmarks' synthetic in-memory dataset: random clips of 8 frames, three classes."""

from __future__ import annotations

import pandas as pd
import torch

from hlora_mer.training.data import TensorSource


def random_source(subjects: int, per_subject: int, size: int) -> TensorSource:
    """``subjects`` x ``per_subject`` clips of 8 random frames at ``size`` px, labels cycling over 3 classes."""
    classes = ("a", "b", "c")
    rows = [
        {
            "sample_id": f"s/{s:02d}/c{k}",
            "subject": f"s/{s:02d}",
            "dataset": "s",
            "label": classes[k % 3],
            "label_index": k % 3,
        }
        for s in range(subjects)
        for k in range(per_subject)
    ]
    table = pd.DataFrame(rows)
    clips = torch.randn(len(table), 8, 3, size, size, generator=torch.Generator().manual_seed(0))
    return TensorSource(table, clips, classes, flip_prob=0.5)
