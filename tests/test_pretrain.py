"""Self-supervised motion-reconstruction pretraining and the packaged synthme_vit backbone."""

import dataclasses

import numpy as np
import pytest
import torch

from hlora_mer.errors import BackboneNotFoundError
from hlora_mer.models import backbones
from hlora_mer.models.backbones import BACKBONES, build_backbone, tensor_fingerprint
from hlora_mer.synthme.pretrain import PretrainConfig, motion_targets, pretrain_backbone, save_backbone_weights


def _moving_square_clips(n: int, t: int = 4, size: int = 28, seed: int = 0) -> np.ndarray:
    """``(n, t, size, size, 3)`` uint8: a bright square on a textured background, moving by 1 px per frame."""
    rng = np.random.default_rng(seed)
    clips = np.empty((n, t, size, size, 3), np.uint8)
    for i in range(n):
        background = rng.integers(40, 90, size=(size, size, 3))
        x0, y0 = rng.integers(2, size // 2, size=2)
        dx, dy = rng.choice([-1, 1], size=2)
        for k in range(t):
            frame = background.copy()
            x, y = x0 + 2 + k * dx, y0 + 2 + k * dy
            frame[y : y + 8, x : x + 8] = 220
            clips[i, k] = frame
    return clips


def test_motion_targets_ignore_a_still_clip_and_a_global_brightness_flicker():
    frames = torch.rand(2, 5, 3, 28, 28) * 0.5 + 0.25
    still = frames[:, :1].expand(-1, 5, -1, -1, -1)
    assert motion_targets(still, 14).abs().max() < 1e-4
    flicker = still * torch.tensor([1.0, 1.03, 0.97, 1.02, 0.99]).view(1, 5, 1, 1, 1)
    assert motion_targets(flicker, 14).abs().max() < 1e-3
    moving = torch.from_numpy(_moving_square_clips(2, 5)).permute(0, 1, 4, 2, 3).float() / 255
    target = motion_targets(moving, 14)
    assert target.shape == (2, 5, 14 * 14)
    assert target.abs().max() > 1.0  # a moving square changes grey levels by far more than 1 % of range
    assert torch.allclose(target.mean(1), torch.zeros(2, 14 * 14), atol=1e-3)  # within-clip changes only


def test_pretraining_learns_to_reconstruct_motion_and_leaves_a_frozen_backbone():
    clips = _moving_square_clips(4)
    backbone = build_backbone("test_vit_reg", pretrained=False)
    before = tensor_fingerprint(backbone)
    explained: list[float] = []
    cfg = PretrainConfig(steps=100, batch_size=8, lr=3e-3, warmup_steps=5, target_size=14, decoder_hidden=64)
    history = pretrain_backbone(backbone, clips, cfg, progress=lambda step, rec: explained.append(rec["explained"]))
    assert len(explained) == 100 and [r["step"] for r in history] == [50, 100]
    assert np.mean(explained[-10:]) > np.mean(explained[:10]) + 0.1
    assert tensor_fingerprint(backbone) != before
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training


def test_pretraining_is_deterministic_given_its_seed():
    clips = _moving_square_clips(6)
    cfg = PretrainConfig(steps=3, batch_size=2, target_size=14, decoder_hidden=16)
    a, b = (build_backbone("test_vit", pretrained=False) for _ in range(2))
    pretrain_backbone(a, clips, cfg)
    pretrain_backbone(b, clips, cfg)
    assert tensor_fingerprint(a) == tensor_fingerprint(b)


def test_pretraining_rejects_clips_that_are_not_uint8_frames():
    backbone = build_backbone("test_vit", pretrained=False)
    with pytest.raises(ValueError, match="uint8"):
        pretrain_backbone(backbone, np.zeros((2, 4, 28, 28, 3), np.float32), PretrainConfig(steps=1))


def _spec_with_file(monkeypatch, tmp_path, name="tiny_pkg"):
    # the architecture of test_vit_reg (the model saved below), with a packaged weights file
    spec = dataclasses.replace(
        BACKBONES["test_vit_reg"], weights_file="weights/tiny_pkg.safetensors", about="a tiny packaged model"
    )
    monkeypatch.setitem(BACKBONES, name, spec)
    path = tmp_path / "tiny_pkg.safetensors"
    monkeypatch.setattr(backbones, "packaged_weights_path", lambda s: path)
    return path


def test_saved_weights_load_back_as_a_packaged_backbone(monkeypatch, tmp_path):
    path = _spec_with_file(monkeypatch, tmp_path)
    with pytest.raises(BackboneNotFoundError, match="missing"):
        build_backbone("tiny_pkg", pretrained=True)
    source = build_backbone("test_vit_reg", pretrained=False, init_seed=7)
    save_backbone_weights(source, path, {"note": "test"}, dtype=torch.float32)
    loaded = build_backbone("tiny_pkg", pretrained=True)
    assert tensor_fingerprint(loaded) == tensor_fingerprint(source)
    assert loaded.weights_id.startswith("hlora_mer/weights/tiny_pkg.safetensors@")
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(pixels), source(pixels))


def test_packaged_weights_of_another_architecture_are_refused(monkeypatch, tmp_path):
    path = _spec_with_file(monkeypatch, tmp_path)
    save_backbone_weights(build_backbone("test_vit", pretrained=False), path)  # no register tokens
    with pytest.raises(BackboneNotFoundError, match="does not match"):
        build_backbone("tiny_pkg", pretrained=True)


def test_the_shipped_synthme_vit_loads_strictly_and_is_not_random_init():
    spec = BACKBONES["synthme_vit"]
    assert backbones.packaged_weights_path(spec).is_file(), "the package must ship synthme_vit's weights"
    pretrained = build_backbone("synthme_vit", pretrained=True)
    random_init = build_backbone("synthme_vit", pretrained=False)
    assert (pretrained.embed_dim, pretrained.depth, pretrained.num_prefix_tokens) == (128, 4, 5)
    assert "synthme_vit.safetensors@" in pretrained.weights_id
    assert tensor_fingerprint(pretrained) != tensor_fingerprint(random_init)
    with torch.no_grad():
        feats = pretrained(torch.randn(2, 3, 112, 112))
    assert feats.shape == (2, 128) and torch.isfinite(feats).all()
