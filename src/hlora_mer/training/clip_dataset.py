"""A torch ``Dataset`` over the preprocessing cache: one dict per clip, ready for the model.

Each sample is ``{"clip": (T, 3, S, S) float32, "label": int, "sample_id": str, "subject": str}``. Pixels
are scaled to [0, 1] and normalised with DINOv2's fixed ImageNet mean and std, never with statistics of
the data (the official code subtracts each subject's mean pixel value and divides by the maximum). In
training, a horizontal flip (HLoRA-MER section 4.1.3), drawn once per clip by the training sampler, is
applied to all its frames together,
so the motion between frames is mirrored, not scrambled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from hlora_mer.models.backbones import DINOV2_MEAN, DINOV2_STD
from hlora_mer.preprocess.cache import open_cache_dir


def normalize_clip(clip: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 RGB -> ``(T, 3, H, W)`` float32 normalised with DINOv2's mean and std."""
    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) uint8 clip, got {clip.dtype} {clip.shape}")
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, H, W)
    mean = torch.tensor(DINOV2_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DINOV2_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class AlignedClipDataset(Dataset):
    """Aligned clips from a cache folder written by ``hlora-mer preprocess``, for the rows of ``table``.

    Args:
        table: Sample table with ``sample_id``, ``subject`` and the label column.
        cache_dir: The parameter-set folder (it holds ``manifest.json``), e.g.
            ``OUT/t8_s224_dlib_uniform_3f2a9c1d7e``; see ``hlora_mer.preprocess.run.cache_dir_for``.
        train: A training set: the training sampler flips its clips with ``flip_prob``.
        flip_prob: Probability of flipping a clip (all frames together) when ``train``; the flip itself
            comes with each key from the sampler.
        label_column: Column holding the integer class index.
        num_frames: If given, the number of frames every clip must have.

    Raises:
        FileNotFoundError: If the cache folder is missing or lacks clips of the table, naming them.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        cache_dir: str | Path,
        *,
        train: bool = False,
        flip_prob: float = 0.5,
        label_column: str = "label_index",
        num_frames: int | None = None,
    ) -> None:
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        missing_cols = [c for c in ("sample_id", "subject", label_column) if c not in table.columns]
        if missing_cols:
            raise ValueError(f"the table lacks column(s) {', '.join(missing_cols)}")
        self.cache = open_cache_dir(cache_dir)
        cached_t = self.cache.params.get("num_frames")
        if num_frames is not None and cached_t != num_frames:
            raise ValueError(f"{cache_dir} holds clips of {cached_t} frames, expected {num_frames}")
        ids = [str(s) for s in table["sample_id"]]
        absent = [s for s in ids if s not in self.cache.clips]
        if absent:
            failed = [s for s in absent if s in self.cache.failures]
            detail = f"; {len(failed)} of them failed preprocessing (see {self.cache.failures_path})" if failed else ""
            raise FileNotFoundError(
                f"{len(absent)} of {len(ids)} samples have no aligned clip in {self.cache.dir} "
                f"(first: {', '.join(absent[:3])}){detail}. Run 'hlora-mer preprocess' for this dataset "
                "with the same parameters first, or drop those rows."
            )
        self.sample_ids = ids
        self.subjects = [str(s) for s in table["subject"]]
        self.labels = [int(v) for v in table[label_column]]
        self.train = train
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        from hlora_mer.training.data import unpack_key

        index, flip = unpack_key(key)  # the training sampler decides the flip
        sample_id = self.sample_ids[index]
        clip = self.cache.load_clip(sample_id)  # (T, S, S, 3) uint8
        if flip:
            clip = clip[:, :, ::-1, :]  # every frame along W, together
        return {
            "clip": normalize_clip(clip),
            "label": self.labels[index],
            "sample_id": sample_id,
            "subject": self.subjects[index],
        }
