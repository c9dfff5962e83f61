"""Shared fixtures: a tiny random-init DINOv2-architecture model on small frames, CPU only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hlora_mer.config import ModelConfig, from_dict

# 28 x 28 frames are 2 x 2 patches of 14: the full code path at a fraction of the cost.
TINY_IMAGE = 28


def tiny_model_config(**overrides) -> ModelConfig:
    data = {"backbone": {"name": "test_vit_reg", "pretrained": False}, "image_size": TINY_IMAGE, "num_classes": 3}
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return from_dict(ModelConfig, data)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_model_config()


@pytest.fixture
def annotations_dir() -> Path:
    """The real annotation files (public data, not redistributed here), via HLORA_MER_ANNOTATIONS."""
    value = os.environ.get("HLORA_MER_ANNOTATIONS")
    if not value:
        pytest.skip(
            "HLORA_MER_ANNOTATIONS is unset: point it at the folder of real annotation files "
            "(CI uses ../shared/annotations)"
        )
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"HLORA_MER_ANNOTATIONS={value} is not a directory")
    return path


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """A tiny SynthME tree in the CASME II format: 3 subjects x 5 classes, 32 px frames."""
    pytest.importorskip("skimage")  # SynthME draws its faces from scikit-image's sample image
    from hlora_mer.synthme.generate import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(subjects=3, clips_per_class=1, frame_size=32, min_frames=8, max_frames=10))
    return root


@pytest.fixture(scope="session")
def apply_run(tmp_path_factory) -> Path:
    """The tiny model that predict, export, inference and explain are tested with (``apply_fixtures``): an
    all-subjects run with one checkpoint, T = 6, apex sampling, hde_3cls labels, N_l = 3, dropout on."""
    from apply_fixtures import train_apply_run

    return train_apply_run(tmp_path_factory.mktemp("apply") / "run")
