"""One tiny trained model for the tests of what applies a model (predict, export, inference, explain).

Every setting that predict or export must carry from training differs from its default and from the
others, so that a dropped or swapped one shows:

- T = 6 frames (default 8), ``apex`` sampling (default uniform);
- label scheme ``hde_3cls``: classes ``happiness, surprise, others``, not in alphabetical order;
- N_l = 3 LoRA blocks, so that the frozen count (depth - 3: 1 of 4 blocks, 2 of 5) is never N_l;
  rank 4 (default 16), alpha 6 (default 1);
- dropout on: LoRA dropout 0.3 and head dropout 0.3, so a model left in train mode gives other numbers;
- its LoRA B matrices are set away from their zero start after training, so that the adapter moves
  the logits (a wrong rank, alpha or target changes them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from conftest import TINY_IMAGE
from hlora_mer.training.data import TensorSource
from train_fixtures import tiny_clips, tiny_experiment, tiny_table

APPLY_CLASSES = ("happiness", "surprise", "others")  # hde_3cls, in the scheme's (non-alphabetical) order
APPLY_SCHEME = "hde_3cls"
APPLY_FRAMES = 6
APPLY_NL = 3
APPLY_RANK = 4
APPLY_ALPHA = 6.0
APPLY_DROPOUT = 0.3

# Fields of the checkpoint's config and metadata that are not extras (rewritten by checkpoint_files).
_BASE_META = ("format", "hlora_mer_version", "model", "labels", "backbone_weights", "tensors", "weights_sha256")


def apply_experiment(**sections: Any):  # noqa: ANN201 - an ExperimentConfig
    """The experiment of the shared model (protocol ``all``: one checkpoint on every subject)."""
    base: dict[str, Any] = {
        "data": {"label_scheme": APPLY_SCHEME, "sampling": "apex", "detector": "none"},
        "model": {
            "num_frames": APPLY_FRAMES,
            "lora": {"last_n_blocks": APPLY_NL, "rank": APPLY_RANK, "alpha": APPLY_ALPHA, "dropout": APPLY_DROPOUT},
            "fusion": {"head_dropout": APPLY_DROPOUT},
        },
        "eval": {"protocol": "all"},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    # tiny_experiment merges one level deep: give it whole sections
    model = {
        "backbone": {"name": "test_vit_reg", "pretrained": False},
        "image_size": TINY_IMAGE,
        "num_classes": len(APPLY_CLASSES),
        **base["model"],
    }
    return tiny_experiment(**{**base, "model": model})


def apply_source(subjects: int = 2) -> TensorSource:
    table = tiny_table(subjects, classes=APPLY_CLASSES)
    clips = tiny_clips(table, frames=APPLY_FRAMES)
    return TensorSource(table, clips, APPLY_CLASSES, flip_prob=0.5, info={"kind": "in-memory test data"})


def tune_lora(checkpoint: Path, seed: int = 1, scale: float = 2.0) -> None:
    """Give the checkpoint's LoRA B matrices weights that move the logits, and save it again (its checksum
    with it), as training for longer would."""
    from hlora_mer.models.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(checkpoint)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    assert model.config is not None
    extra = {k: v for k, v in meta.items() if k not in _BASE_META}
    save_checkpoint(model, model.config, checkpoint, meta["labels"], extra)


def train_apply_run(run: Path) -> Path:
    """Train the shared model into ``run`` and return the run folder."""
    from hlora_mer.inference.load import resolve_checkpoint
    from hlora_mer.training.runner import run_experiment

    run_experiment(apply_experiment(), run, apply_source())
    tune_lora(resolve_checkpoint(run))
    return run
