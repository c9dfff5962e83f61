"""The torch Dataset over the preprocessing cache: dict samples, DINOv2 normalisation, clip-wide flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from align_fixtures import FixedDetector, make_table, table_row, write_frames
from hlora_mer.models.backbones import DINOV2_MEAN, DINOV2_STD
from hlora_mer.preprocess.cache import clip_relpath
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table
from hlora_mer.training.clip_dataset import AlignedClipDataset, normalize_clip

PARAMS = PreprocessParams(num_frames=4, size=32, detector="dlib")


@pytest.fixture
def cached(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        small = [rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(5)]
        frames = [np.repeat(np.repeat(s, 16, axis=0), 16, axis=1) for s in small]
        rows.append(
            table_row(f"toy/0{i}/c{i}", write_frames(tmp_path / f"c{i}", frames), subject=f"toy/0{i}", label_index=i)
        )
    grey = write_frames(tmp_path / "grey", [np.full((480, 640, 3), 128, np.uint8)] * 2)
    rows.append(table_row("toy/09/grey", grey, subject="toy/09", label_index=1))
    table = make_table(rows)
    report = preprocess_table(table, tmp_path / "out", PARAMS, detector=FixedDetector())
    assert report.failed.keys() == {"toy/09/grey"}
    return table, report


def test_samples_are_normalised_dicts(cached) -> None:
    table, report = cached
    ds = AlignedClipDataset(table.iloc[:3], report.cache_dir, num_frames=4)
    assert len(ds) == 3
    sample = ds[1]
    assert set(sample) == {"clip", "label", "sample_id", "subject"}
    assert sample["label"] == 1 and sample["sample_id"] == "toy/01/c1" and sample["subject"] == "toy/01"
    clip = sample["clip"]
    assert clip.shape == (4, 3, 32, 32) and clip.dtype == torch.float32
    raw = np.load(report.cache_dir / clip_relpath("toy/01/c1"))  # (T, H, W, 3) uint8
    expected = (raw[2, 5, 7] / 255.0 - np.array(DINOV2_MEAN)) / np.array(DINOV2_STD)
    torch.testing.assert_close(clip[2, :, 5, 7], torch.tensor(expected, dtype=torch.float32))
    batch = torch.utils.data.default_collate([ds[0], ds[2]])
    assert batch["clip"].shape == (2, 4, 3, 32, 32) and batch["label"].tolist() == [0, 2]


def test_flip_applies_to_all_frames_together_when_the_key_asks(cached) -> None:
    table, report = cached
    ds = AlignedClipDataset(table.iloc[:3], report.cache_dir, train=True, flip_prob=1.0)
    plain = ds[0]["clip"]
    torch.testing.assert_close(ds[(0, True)]["clip"], plain.flip(-1))  # every frame mirrored together
    torch.testing.assert_close(ds[(0, False)]["clip"], plain)
    # the dataset never draws a flip itself: a plain index is the plain clip, whatever flip_prob says
    torch.manual_seed(0)
    assert all(torch.equal(ds[0]["clip"], plain) for _ in range(10))


def test_missing_or_failed_clips_raise_with_a_hint(cached, tmp_path) -> None:
    table, report = cached
    pattern = r"1 of 4 samples .*toy/09/grey.*failed preprocessing.*hlora-mer preprocess"
    with pytest.raises(FileNotFoundError, match=pattern):
        AlignedClipDataset(table, report.cache_dir)
    with pytest.raises(FileNotFoundError, match="not a preprocessing cache folder.*t4_s32_dlib_uniform_"):
        AlignedClipDataset(table, report.cache_dir.parent)
    with pytest.raises(ValueError, match="holds clips of 4 frames, expected 8"):
        AlignedClipDataset(table.iloc[:3], report.cache_dir, num_frames=8)


def test_normalize_clip_checks_its_input() -> None:
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
        normalize_clip(np.zeros((4, 3, 8, 8), np.uint8))
