"""High-level LoRA (HLoRA, paper eq. 4-7) applied to a stock DINOv2 backbone with ``peft``.

LoRA is a function applied to the backbone, not a fork of its code: peft wraps the chosen attention
projections of the last N_l blocks in place (``base_layer`` is kept, B starts at zero so a fresh
adapter is a no-op), and everything else in the backbone stays frozen.

    apply_lora(backbone, LoRAConfig(last_n_blocks=2, rank=16))   # W_Q, W_V of the last 2 blocks
    merge_lora(backbone)    # fold B A into W for inference; unmerge_lora() undoes it
    with merged(backbone.model): ...   # folded for the block only; afterwards every weight is as it was

References: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021); Hugging Face
``peft`` (``tuners/lora``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from hlora_mer.config import LoRAConfig
from hlora_mer.errors import ConfigError
from hlora_mer.models.backbones import DinoBackbone

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer

logger = logging.getLogger(__name__)

# transformers 5.x names the DINOv2 attention projections q_proj/k_proj/v_proj/o_proj (4.x: query/key/value).
PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}


def lora_target_names(backbone: DinoBackbone, cfg: LoRAConfig) -> list[str]:
    """Full module names (relative to ``backbone.model``) that receive LoRA."""
    if cfg.last_n_blocks > backbone.depth:
        raise ConfigError(
            f"lora.last_n_blocks={cfg.last_n_blocks} exceeds the depth of {backbone.name} ({backbone.depth} blocks)"
        )
    attention = backbone.blocks[0].attention
    missing = [PROJECTIONS[t] for t in cfg.targets if not hasattr(attention, PROJECTIONS[t])]
    if missing:
        import transformers

        raise ConfigError(
            f"the DINOv2 attention of transformers {transformers.__version__} has no {', '.join(missing)}; "
            "hlora-mer needs transformers 5.x (pip install 'transformers>=5,<6')"
        )
    first = backbone.depth - cfg.last_n_blocks
    return [f"encoder.layer.{i}.attention.{PROJECTIONS[t]}" for i in range(first, backbone.depth) for t in cfg.targets]


def apply_lora(backbone: DinoBackbone, cfg: LoRAConfig) -> list[str]:
    """Freeze ``backbone`` and add LoRA to the targets of its last ``cfg.last_n_blocks`` blocks, in place.

    Returns the adapted module names (empty for N_l = 0, a frozen backbone).
    """
    targets = lora_target_names(backbone, cfg)
    backbone.requires_grad_(False)
    if not targets:
        return targets
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    peft_cfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft annotates int; it only divides alpha by r
        lora_dropout=cfg.dropout,
        target_modules=targets,
        bias="none",
    )
    inject_adapter_in_model(peft_cfg, backbone.model)
    mark_only_lora_trainable(backbone)
    logger.debug("LoRA r=%d alpha=%g on %d projections: %s", cfg.rank, cfg.alpha, len(targets), targets)
    return targets


def lora_layers(module: nn.Module) -> list[LoraLayer]:
    from peft.tuners.lora import LoraLayer

    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def mark_only_lora_trainable(backbone: DinoBackbone) -> None:
    """Make the LoRA A/B matrices the only trainable backbone tensors."""
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA update into its base weight (same outputs, no extra latency). Idempotent."""
    layers = [m for m in lora_layers(module) if not m.merged]
    for layer in layers:
        layer.merge(safe_merge=True)
    return len(layers)


def unmerge_lora(module: nn.Module) -> int:
    """Undo :func:`merge_lora`."""
    layers = [m for m in lora_layers(module) if m.merged]
    for layer in layers:
        layer.unmerge()
    return len(layers)


def _base_weight(layer: LoraLayer) -> torch.Tensor:
    return cast(torch.Tensor, cast(Any, layer).get_base_layer().weight)


@contextlib.contextmanager
def merged(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with every LoRA update folded in (:func:`merge_lora`) for the block; on exit the layers are
    unmerged and their base weights put back bit for bit (``W + d - d`` is not ``W`` in floating point).

    Only the adapted weights are copied (a few matrices), not the model.
    """
    layers = [m for m in lora_layers(module) if not m.merged]
    saved = [_base_weight(layer).detach().clone() for layer in layers]
    try:
        merge_lora(module)  # may stop half-way (a non-finite update): the finally undoes what it did
        yield module
    finally:
        with torch.no_grad():
            for layer, weight in zip(layers, saved, strict=True):
                if layer.merged:
                    layer.unmerge()
                _base_weight(layer).copy_(weight)
