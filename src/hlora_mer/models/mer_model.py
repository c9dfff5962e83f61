"""HLoRA-MER (paper Fig. 2): HLoRA-tuned DINOv2 per frame, hierarchical fusion, linear head.

``MERModel(backbone, fusion, head)`` takes built submodules; :func:`build_model` derives every size
from the backbone's hidden size and the number of frames.

Shapes: clips ``(B, T, 3, H, W)`` (normalised with DINOv2's ImageNet mean/std) -> the backbone sees
``(B*T, 3, H, W)`` in one call -> per-frame CLS features ``(B, T, d)`` -> fusion ``(B, F)`` -> logits
``(B, m)``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal, overload

import torch
from torch import nn

from hlora_mer.config import ModelConfig
from hlora_mer.models.backbones import DinoBackbone, build_backbone
from hlora_mer.models.fusion import build_fusion
from hlora_mer.models.lora import apply_lora


class MERModel(nn.Module):
    """Backbone -> fusion -> head, with the backbone split after its ``frozen_blocks`` leading blocks."""

    def __init__(
        self,
        backbone: DinoBackbone,
        fusion: nn.Module,
        head: nn.Module,
        num_frames: int,
        frozen_blocks: int,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion
        self.head = head
        self.num_frames = num_frames
        # The config the model was built from (build_model sets it); checkpoints are checked against it.
        self.config = config
        # Leading blocks with no trainable tensor: their output never changes during training, so
        # they run without autograd (and a later cache can store their tokens).
        self.frozen_blocks = frozen_blocks

    def check_clips(self, clips: torch.Tensor) -> None:
        if clips.ndim != 5 or clips.shape[1] != self.num_frames or clips.shape[2] != 3:
            raise ValueError(f"expected clips of shape (B, {self.num_frames}, 3, H, W), got {tuple(clips.shape)}")
        self.backbone.check_pixels(clips[:, 0])

    def prefix(self, clips: torch.Tensor) -> torch.Tensor:
        """The frozen part: ``(B, T, 3, H, W) -> (B*T, L, d)`` tokens leaving block ``frozen_blocks``."""
        self.check_clips(clips)
        frames = clips.flatten(0, 1)  # (B*T, 3, H, W)
        frozen = self.frozen_blocks > 0 or not any(p.requires_grad for p in self.backbone.model.embeddings.parameters())
        with torch.no_grad() if frozen else nullcontext():
            return self.backbone.prefix(frames, self.frozen_blocks)

    @overload
    def forward_from_prefix(self, tokens: torch.Tensor, with_attention: Literal[False] = False) -> torch.Tensor: ...

    @overload
    def forward_from_prefix(
        self, tokens: torch.Tensor, with_attention: Literal[True]
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    @overload
    def forward_from_prefix(
        self, tokens: torch.Tensor, with_attention: bool
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]: ...

    def forward_from_prefix(
        self, tokens: torch.Tensor, with_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """``(B*T, L, d)`` prefix tokens -> ``(B, m)`` logits (and the ``(B, T, T)`` IFFA attention)."""
        cls = self.backbone.suffix(tokens, self.frozen_blocks)  # (B*T, d)
        feats = cls.view(-1, self.num_frames, cls.shape[-1])  # (B, T, d)
        fused, attention = self.fusion(feats)  # (B, F), (B, T, T) or None
        logits = self.head(fused)  # (B, m)
        return (logits, attention) if with_attention else logits

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W) -> (B, m)`` class logits."""
        return self.forward_from_prefix(self.prefix(clips))

    def forward_with_attention(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and the IFFA attention map ``(B, T, T)`` (None when the variant has no IFFA)."""
        return self.forward_from_prefix(self.prefix(clips), with_attention=True)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors that train (LoRA, fusion, head; everything in full fine-tuning)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable}


def build_model(cfg: ModelConfig, backbone: DinoBackbone | None = None) -> MERModel:
    """Build HLoRA-MER from its config; pass ``backbone`` to reuse one already loaded."""
    if backbone is None:
        backbone = build_backbone(cfg.backbone.name, cfg.backbone.pretrained, cfg.backbone.init_seed)
    if cfg.backbone.finetune == "full":
        backbone.requires_grad_(True)
        frozen_blocks = 0
    else:
        apply_lora(backbone, cfg.lora)
        frozen_blocks = backbone.depth - cfg.lora.last_n_blocks
    fusion = build_fusion(cfg.fusion, backbone.embed_dim, cfg.num_frames)
    head = nn.Sequential(nn.Dropout(cfg.fusion.head_dropout), nn.Linear(fusion.out_features, cfg.num_classes))
    return MERModel(backbone, fusion, head, cfg.num_frames, frozen_blocks, config=cfg)


def count_parameters(model: MERModel) -> dict[str, int]:
    """Parameter counts by part; works on the meta device."""
    lora = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" in n)
    backbone_total = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" not in n)
    return {
        "lora": lora,
        "fusion": sum(p.numel() for p in model.fusion.parameters()),
        "head": sum(p.numel() for p in model.head.parameters()),
        "backbone": backbone_total,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def parameter_report(cfg: ModelConfig) -> dict[str, int]:
    """Counts for ``cfg`` built on the meta device: nothing is downloaded or allocated."""
    import dataclasses

    shape_only = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=False))
    with torch.device("meta"):
        model = build_model(shape_only)
    return count_parameters(model)
