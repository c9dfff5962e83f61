"""Checkpoints that hold only what training changed: a few MB even for the 1.1B-parameter backbone.

A checkpoint is a folder with ``model.safetensors`` (the trainable tensors: LoRA, fusion, head) and
``checkpoint.json`` (the resolved model config, the label names, the backbone's registry name and its
weights' identity, the package version, and the SHA-256 of ``model.safetensors``). Loading rebuilds the
model from the config, loads the base weights, checks that ``model.safetensors`` is the file that was
written (its checksum; a checkpoint written before checksums were recorded is loaded without), that the
checkpoint was made for exactly this model (config, labels, backbone weights, tensor names and shapes) and
then loads the saved tensors; any difference is refused with one message.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from hlora_mer import __version__
from hlora_mer.config import DataConfig, ModelConfig, from_dict, to_dict
from hlora_mer.errors import ConfigError, UserError
from hlora_mer.files import atomic_write_bytes
from hlora_mer.models.mer_model import MERModel, build_model

if TYPE_CHECKING:
    from hlora_mer.data.annotations.labels import LabelScheme

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
# checkpoint.json's key for the label scheme written out (label_scheme_record).
SCHEME_KEY = "label_scheme_definition"
META_FILE = "checkpoint.json"
# checkpoint.json's key for the SHA-256 of model.safetensors (absent in checkpoints written before it).
CHECKSUM_KEY = "weights_sha256"


def checkpoint_files(
    model: MERModel,
    cfg: ModelConfig,
    labels: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, bytes]:
    """The files of ``model``'s checkpoint, by name: its trainable tensors and everything needed to rebuild it.

    Bytes rather than a folder, so that a fold trained on another machine can send its checkpoint back.
    """
    from safetensors.torch import save

    if model.backbone.name != cfg.backbone.name:
        raise ValueError(f"model backbone {model.backbone.name!r} does not match cfg {cfg.backbone.name!r}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    weights = save(tensors)
    meta = {
        "format": "hlora-mer-checkpoint/1",
        "hlora_mer_version": __version__,
        "model": to_dict(cfg),
        "labels": list(labels) if labels is not None else None,
        "backbone_weights": model.backbone.weights_id,
        "tensors": sorted(tensors),
        **(extra or {}),
        CHECKSUM_KEY: hashlib.sha256(weights).hexdigest(),
    }
    return {WEIGHTS_FILE: weights, META_FILE: (json.dumps(meta, indent=2) + "\n").encode()}


def label_scheme_record(data: DataConfig) -> dict[str, Any]:
    """The label scheme of an experiment's ``data`` section written out (classes, per-dataset mappings, dropped
    labels), for ``checkpoint.json``: a scheme that is not registered (a composite from the user's own YAML)
    can then be rebuilt by :func:`label_scheme_from_record` wherever the model goes."""
    from hlora_mer.data import get_scheme
    from hlora_mer.data.annotations.composites import load_composite

    scheme = load_composite(data.composite).scheme() if data.composite else get_scheme(data.label_scheme)
    return {
        "name": scheme.name,
        "classes": list(scheme.classes),
        "mappings": {k: dict(v) for k, v in scheme.mappings.items()},
        "dropped": {k: sorted(v) for k, v in scheme.dropped.items()},
        "source_column": scheme.source_column,
        "derive": scheme.derive,
        "description": scheme.description,
    }


def label_scheme_from_record(record: dict[str, Any]) -> LabelScheme:
    """The :class:`~hlora_mer.data.annotations.labels.LabelScheme` that :func:`label_scheme_record` wrote."""
    from hlora_mer.data.annotations.labels import LabelScheme

    return LabelScheme(
        name=str(record["name"]),
        classes=tuple(record["classes"]),
        mappings={k: dict(v) for k, v in record["mappings"].items()},
        dropped={k: frozenset(v) for k, v in (record.get("dropped") or {}).items()},
        source_column=str(record.get("source_column") or "emotion"),
        derive=record.get("derive"),
        description=str(record.get("description") or ""),
    )


def write_files(directory: str | Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) into ``directory``, each atomically (``save_file`` would make them
    owner-only)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(directory / name, data)
    return directory


def save_checkpoint(
    model: MERModel,
    cfg: ModelConfig,
    directory: str | Path,
    labels: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the trainable tensors and everything needed to rebuild ``model`` into ``directory``."""
    return write_files(directory, checkpoint_files(model, cfg, labels, extra))


def _damaged(directory: Path, what: str) -> UserError:
    return UserError(
        f"checkpoint {directory} is damaged: {directory / WEIGHTS_FILE} {what}; copy the checkpoint again from "
        "its run folder (or train again)"
    )


def read_weights(directory: str | Path, meta: dict[str, Any], *, map_location: str = "cpu") -> dict[str, Any]:
    """The tensors of a checkpoint's ``model.safetensors``, after checking its SHA-256 against ``meta``.

    Raises:
        UserError: the file's checksum is not the one recorded (truncated, changed bytes), or the file cannot
            be read as safetensors (a checkpoint without a recorded checksum).
    """
    from safetensors.torch import load

    directory = Path(directory)
    data = (directory / WEIGHTS_FILE).read_bytes()
    recorded = meta.get(CHECKSUM_KEY)
    if recorded is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != recorded:
            raise _damaged(
                directory,
                f"is not the file that was written ({len(data)} bytes with SHA-256 {found[:16]}..., "
                f"{META_FILE} records {str(recorded)[:16]}...: truncated or changed since)",
            )
    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own SafetensorError, and others on garbage
        raise _damaged(directory, f"cannot be read ({type(err).__name__}: {err})") from None
    return {k: v.to(map_location) for k, v in tensors.items()} if map_location != "cpu" else tensors


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    meta_file = directory / META_FILE
    if not meta_file.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise UserError(
            f"{directory} is not a hlora-mer checkpoint; expected {META_FILE} and {WEIGHTS_FILE} in it "
            "(written by 'hlora-mer train' into each fold's folder)"
        )
    return json.loads(meta_file.read_text())


# Config fields that act only while training: a checkpoint fits a model that differs in them.
_TRAINING_ONLY = ("lora.dropout", "fusion.gat_dropout", "fusion.head_dropout")
# Fields that name the backbone weights: compared as the backbone's name and weights id instead.
_BACKBONE_FIELDS = ("backbone.name", "backbone.pretrained", "backbone.init_seed")
# The fields every refusal shows for both sides, in this order.
_SUMMARY = ("num_classes", "image_size", "num_frames")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _model_facts(model: MERModel) -> dict[str, Any]:
    """What a model is, in the checkpoint config's terms (from ``model.config`` where it has one)."""
    facts = _flatten(to_dict(model.config)) if model.config is not None else {}
    facts["num_frames"] = model.num_frames
    linear = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
    if linear:
        facts["num_classes"] = linear[-1].out_features
    return facts


def _describe(backbone: str, weights: str, labels: str, facts: dict[str, Any]) -> str:
    return ", ".join(
        [f"backbone {backbone} (weights {weights})", labels, *(f"{key} {facts.get(key, '?')}" for key in _SUMMARY)]
    )


def _checkpoint_config(directory: Path, meta: dict[str, Any]) -> ModelConfig:
    try:
        return from_dict(ModelConfig, meta["model"])
    except (KeyError, TypeError, ConfigError) as err:
        raise UserError(
            f"{directory / META_FILE} holds no readable model config ({type(err).__name__}: {err}); it was "
            "written by another version of hlora-mer; load it with that version, or train again"
        ) from None


def _first(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def load_checkpoint_into(
    model: MERModel,
    directory: str | Path,
    *,
    labels: list[str] | None = None,
    allow_mismatch: bool = False,
    map_location: str = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint's tensors into ``model`` after checking that it was made for this model.

    The checkpoint must match the model's config (all but training-only settings such as dropout), the
    ``labels`` the caller will name the outputs with (when given), its backbone (registry name and weights
    id) and every tensor's name and shape. Any difference raises one :class:`UserError` that shows both
    sides. ``allow_mismatch=True`` accepts other backbone weights (name or weights id) deliberately, with a
    logged warning; the rest, tensor shapes above all, is never waived. Returns the checkpoint's metadata.
    """
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    ckpt_cfg = _flatten(to_dict(_checkpoint_config(directory, meta)))
    ckpt_weights = meta.get("backbone_weights", "not recorded")
    ckpt_labels = meta.get("labels")
    facts = _model_facts(model)
    backbone, weights = model.backbone.name, model.backbone.weights_id

    problems: list[str] = []
    waived: list[str] = []
    if ckpt_cfg["backbone.name"] != backbone or ckpt_weights != weights:
        what = (
            f"backbone: checkpoint {ckpt_cfg['backbone.name']} with weights {ckpt_weights}, "
            f"model {backbone} with weights {weights}"
        )
        (waived if allow_mismatch else problems).append(what)
    if labels is not None and (ckpt_labels is None or list(ckpt_labels) != list(labels)):
        problems.append(
            f"labels: checkpoint {ckpt_labels if ckpt_labels is not None else 'not recorded'}, asked for {list(labels)}"
        )
    for key, value in ckpt_cfg.items():
        if key in _TRAINING_ONLY or key in _BACKBONE_FIELDS or key not in facts or facts[key] == value:
            continue
        problems.append(f"{key}: checkpoint {value}, model {facts[key]}")

    tensors = read_weights(directory, meta, map_location=map_location)
    expected = model.trainable_state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    reshaped = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if tensors[k].shape != expected[k].shape
    ]
    if reshaped:
        problems.append(f"{len(reshaped)} tensors of other shapes (checkpoint vs model): {_first(reshaped)}")
    if missing:
        problems.append(f"{len(missing)} model tensors not in the checkpoint: {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint tensors the model lacks: {_first(unexpected)}")

    if problems:
        if all(p.startswith("backbone:") for p in problems):
            advice = (
                "If you mean to apply it to these other backbone weights, pass allow_mismatch=True "
                "(CLI: --allow-mismatch)."
            )
        else:
            advice = (
                "Load it into a model built from its own config (load_checkpoint) and name its outputs with "
                "its labels; only other backbone weights can be allowed (allow_mismatch, --allow-mismatch)."
            )
        scheme = meta.get("label_scheme")
        ckpt_side = (f"label scheme {scheme}, " if scheme else "") + (
            f"labels {ckpt_labels}" if ckpt_labels is not None else "labels not recorded"
        )
        model_side = f"labels {list(labels)}" if labels is not None else "labels not given"
        raise UserError(
            f"checkpoint {directory} does not fit the model it is loaded into.\n"
            f"  checkpoint: {_describe(ckpt_cfg['backbone.name'], ckpt_weights, ckpt_side, ckpt_cfg)}\n"
            f"  model:      {_describe(backbone, weights, model_side, facts)}\n"
            "  differences:\n" + "".join(f"    - {p}\n" for p in problems) + advice
        )
    for what in waived:
        logger.warning("loading checkpoint %s onto other backbone weights (allowed): %s", directory, what)
    model.load_state_dict(tensors, strict=False)  # the frozen base weights come from the backbone
    return meta


def load_checkpoint(
    directory: str | Path, map_location: str = "cpu", *, labels: list[str] | None = None, allow_mismatch: bool = False
) -> tuple[MERModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint on its base backbone; returns ``(model, meta)``.

    The backbone is built from the checkpoint's config; if its weights are not the ones the checkpoint was
    trained on (another weights id), loading is refused unless ``allow_mismatch`` (see
    :func:`load_checkpoint_into`).
    """
    directory = Path(directory)
    cfg = _checkpoint_config(directory, read_checkpoint_meta(directory))
    model = build_model(cfg)
    meta = load_checkpoint_into(
        model, directory, labels=labels, allow_mismatch=allow_mismatch, map_location=map_location
    )
    model.eval()
    return model, meta
