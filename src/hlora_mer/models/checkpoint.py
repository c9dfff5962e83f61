"""Checkpoints that hold only what training changed: a few MB even for the 1.1B-parameter backbone.

A checkpoint is a folder with ``model.safetensors`` (the trainable tensors: LoRA, fusion, head) and
``checkpoint.json`` (the resolved model config, the label names, the backbone's registry name and its
weights' identity, the package version). Loading rebuilds the model from the config, loads the base
weights, then loads the saved tensors strictly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hlora_mer import __version__
from hlora_mer.config import ModelConfig, from_dict, to_dict
from hlora_mer.errors import UserError
from hlora_mer.files import atomic_write_text
from hlora_mer.models.mer_model import MERModel, build_model

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"


def save_checkpoint(model: MERModel, cfg: ModelConfig, directory: str | Path,
                    labels: list[str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the trainable tensors and everything needed to rebuild ``model`` into ``directory``."""
    from safetensors.torch import save_file

    if model.backbone.name != cfg.backbone.name:
        raise ValueError(f"model backbone {model.backbone.name!r} does not match cfg {cfg.backbone.name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    meta = {
        "format": "hlora-mer-checkpoint/1",
        "hlora_mer_version": __version__,
        "model": to_dict(cfg),
        "labels": list(labels) if labels is not None else None,
        "backbone_weights": model.backbone.weights_id,
        "tensors": sorted(tensors),
        **(extra or {}),
    }
    atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    meta_file = directory / META_FILE
    if not meta_file.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise UserError(
            f"{directory} is not a hlora-mer checkpoint; expected {META_FILE} and {WEIGHTS_FILE} in it "
            "(written by 'hlora-mer train' into each fold's folder)"
        )
    return json.loads(meta_file.read_text())


def load_checkpoint(directory: str | Path, map_location: str = "cpu") -> tuple[MERModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint on its base backbone; returns ``(model, meta)``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    cfg = from_dict(ModelConfig, meta["model"])
    model = build_model(cfg)
    if model.backbone.weights_id != meta["backbone_weights"]:
        logger.warning(
            "checkpoint %s was trained on backbone weights %s; loading onto %s",
            directory, meta["backbone_weights"], model.backbone.weights_id,
        )
    tensors = load_file(str(directory / WEIGHTS_FILE), device=map_location)
    expected = set(model.trainable_state_dict())
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise UserError(
            f"checkpoint {directory} does not fit the model its config builds: "
            f"{len(missing)} missing tensors {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
    model.load_state_dict(tensors, strict=False)  # the frozen base weights come from the backbone
    model.eval()
    return model, meta
