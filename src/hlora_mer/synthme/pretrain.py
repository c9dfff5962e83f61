"""Self-supervised pretraining of a small DINOv2-architecture backbone on unlabelled aligned clips.

Used to make the demo's ``synthme_vit`` backbone (``tools/pretrain_synthme_backbone.py``): a random-init
ViT's CLS feature does not carry a few-pixel facial motion, so the demo would sit at chance level.

Objective (motion reconstruction; no label is used, the target is the video itself). For a clip with
per-frame CLS features ``c_t`` and grey frames ``g_t`` (downsampled to R x R, each divided by its own
mean brightness so that illumination flicker is not a target):

    decoder(c_t - mean_t c, mean_t c)  ~  (g_t - mean_t g) / scale

The per-clip means remove who the subject is and how the face is lit, so the features spend their
capacity on what changes within a clip: the facial motion (and the blinks and head jitter every clip
shares). The decoder sees the clip's mean feature too, so the same feature change can be drawn on
different faces; it is dropped after pretraining. Loss: mean squared error; the log reports the
fraction of the target's variance it explains.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hlora_mer.models.backbones import DINOV2_MEAN, DINOV2_STD, DinoBackbone

logger = logging.getLogger(__name__)

# Scale of the target: within-clip brightness changes are a few grey levels out of 1.0.
_TARGET_SCALE = 0.01


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of :func:`pretrain_backbone` (defaults: the ones that made ``synthme_vit``)."""

    steps: int = 2000
    batch_size: int = 16  # clips per step (each of T frames)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    target_size: int = 56  # R: the grey target is R x R
    decoder_hidden: int = 512
    flip_prob: float = 0.5  # horizontal flip of a whole clip (frames and target together)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1; got {self.steps}, {self.batch_size}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1]; got {self.flip_prob}")


class MotionDecoder(nn.Module):
    """``(c_t - mean c, mean c)`` -> the frame's grey change ``(R*R,)``; discarded after pretraining."""

    def __init__(self, embed_dim: int, hidden: int, target_size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * embed_dim, hidden), nn.GELU(), nn.Linear(hidden, target_size**2))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, T, d)`` per-frame features -> ``(B, T, R*R)`` predicted grey changes."""
        mean = feats.mean(1, keepdim=True)
        return self.net(torch.cat([feats - mean, mean.expand_as(feats)], -1))


def motion_targets(frames: torch.Tensor, target_size: int) -> torch.Tensor:
    """``(B, T, 3, S, S)`` frames in [0, 1] -> ``(B, T, R*R)`` within-clip grey changes (flicker removed)."""
    b, t = frames.shape[:2]
    grey = F.interpolate(frames.mean(2).flatten(0, 1)[:, None], size=(target_size, target_size), mode="area")
    grey = grey.view(b, t, -1)
    grey = grey / grey.mean(2, keepdim=True).clamp_min(1e-3) * grey.mean()  # each frame's mean brightness
    return (grey - grey.mean(1, keepdim=True)) / _TARGET_SCALE


def _normalise(frames: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(DINOV2_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(DINOV2_STD, device=frames.device).view(1, 3, 1, 1)
    return (frames - mean) / std


def motion_reconstruction_loss(
    backbone: DinoBackbone, decoder: MotionDecoder, frames: torch.Tensor, target_size: int
) -> tuple[torch.Tensor, float]:
    """Loss and explained variance on a batch of ``(B, T, 3, S, S)`` frames in [0, 1]."""
    b, t = frames.shape[:2]
    target = motion_targets(frames, target_size)
    feats = backbone(_normalise(frames.flatten(0, 1))).view(b, t, -1)
    loss = F.mse_loss(decoder(feats), target)
    explained = 1.0 - loss.item() / max(target.pow(2).mean().item(), 1e-12)
    return loss, explained


def pretrain_backbone(
    backbone: DinoBackbone,
    clips: np.ndarray,
    cfg: PretrainConfig = PretrainConfig(),
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train every tensor of ``backbone`` on unlabelled ``clips`` ``(N, T, S, S, 3)`` uint8 (aligned).

    ``progress(step, record)`` is called after every step. Returns the history: one record every 50
    steps and at the end (``step``, ``loss``, ``explained``, mean over the steps since the last one).
    """
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[1] < 2:
        raise ValueError(f"expected (N, T >= 2, S, S, 3) uint8 clips, got {clips.dtype} {clips.shape}")
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        decoder = MotionDecoder(backbone.embed_dim, cfg.decoder_hidden, cfg.target_size)
    params = [*backbone.parameters(), *decoder.parameters()]
    for p in backbone.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, cosine decay
        return min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    data = torch.from_numpy(clips)
    backbone.train()
    decoder.train()
    history: list[dict[str, float]] = []
    losses: list[float] = []
    explained: list[float] = []
    for step in range(cfg.steps):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        frames = data[idx].permute(0, 1, 4, 2, 3).float().div_(255.0)  # (B, T, 3, S, S)
        flip = torch.rand(cfg.batch_size, generator=gen) < cfg.flip_prob
        frames[flip] = frames[flip].flip(-1)
        loss, ev = motion_reconstruction_loss(backbone, decoder, frames, cfg.target_size)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        explained.append(ev)
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            record = {"step": step + 1, "loss": float(np.mean(losses)), "explained": float(np.mean(explained))}
            history.append(record)
            logger.info("pretraining step %d: loss %.4f, explained variance %.3f", *record.values())
            losses, explained = [], []
        if progress is not None:
            progress(step + 1, {"loss": loss.item(), "explained": ev})
    backbone.eval()
    backbone.requires_grad_(False)
    return history


def save_backbone_weights(
    backbone: DinoBackbone, path: str | Path, metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float16
) -> Path:
    """Write the backbone's tensors (as ``dtype``) to a safetensors file, with string ``metadata``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in backbone.model.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def config_metadata(cfg: PretrainConfig) -> dict[str, str]:
    return {f"pretrain.{k}": str(v) for k, v in asdict(cfg).items()}
