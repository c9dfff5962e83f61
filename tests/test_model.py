"""HLoRA-MER on the tiny random-init backbone: shapes, trainability, LoRA, merge, checkpoints."""

import pytest
import torch

from conftest import TINY_IMAGE, tiny_model_config
from hlora_mer.config import ModelConfig, apply_overrides
from hlora_mer.models.backbones import build_backbone, tensor_fingerprint
from hlora_mer.models.checkpoint import load_checkpoint, save_checkpoint
from hlora_mer.models.lora import merge_lora, unmerge_lora
from hlora_mer.models.mer_model import build_model, parameter_report


def clips(batch=2, frames=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, TINY_IMAGE, TINY_IMAGE, generator=g)


def perturb_lora_b(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_output_shapes_and_no_nan(tiny_cfg):
    model = build_model(tiny_cfg)
    logits, attention = model.forward_with_attention(clips())
    assert logits.shape == (2, 3)
    assert attention.shape == (2, 8, 8)
    assert torch.isfinite(logits).all()


def test_bad_clip_shape_is_explained(tiny_cfg):
    model = build_model(tiny_cfg)
    with pytest.raises(ValueError, match=r"expected clips of shape \(B, 8, 3, H, W\), got \(2, 3, 8, 28, 28\)"):
        model(clips().transpose(1, 2))


def test_prefix_then_suffix_equals_the_stock_forward(tiny_cfg):
    backbone = build_backbone("test_vit_reg", pretrained=False)
    pixels = torch.randn(3, 3, TINY_IMAGE, TINY_IMAGE)
    expected = backbone.model(pixel_values=pixels).pooler_output
    for split in range(backbone.depth + 1):
        torch.testing.assert_close(backbone.suffix(backbone.prefix(pixels, split), split), expected)


def test_backbone_runs_once_on_all_frames(tiny_cfg):
    model = build_model(tiny_cfg)
    calls = []
    model.backbone.model.embeddings.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    model(clips(batch=2))
    assert calls == [torch.Size([16, 3, TINY_IMAGE, TINY_IMAGE])]


def test_lora_only_on_q_and_v_of_the_last_blocks(tiny_cfg):
    model = build_model(tiny_cfg)  # N_l = 2 of 5 blocks: 3 frozen
    adapted = {n.split(".lora_")[0] for n, _ in model.named_parameters() if "lora_" in n}
    assert adapted == {f"backbone.model.encoder.layer.{i}.attention.{p}" for i in (3, 4) for p in ("q_proj", "v_proj")}
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(".k_proj." in n or ".o_proj." in n for n in trainable)


@pytest.mark.parametrize("n_l, expected_blocks", [(0, set()), (1, {4}), (2, {3, 4}), (5, {0, 1, 2, 3, 4})])
def test_lora_depth(n_l, expected_blocks):
    model = build_model(tiny_model_config(lora={"last_n_blocks": n_l}))
    blocks = {int(n.split("layer.")[1].split(".")[0]) for n, _ in model.named_parameters() if "lora_" in n}
    assert blocks == expected_blocks
    assert model.frozen_blocks == 5 - n_l
    if n_l == 0:
        assert not any(p.requires_grad for p in model.backbone.parameters())


def test_lora_deeper_than_the_backbone_is_an_error():
    with pytest.raises(ValueError, match="exceeds the depth"):
        build_model(tiny_model_config(lora={"last_n_blocks": 6}))


def test_fresh_lora_is_a_no_op():
    cfg = tiny_model_config()
    model = build_model(cfg).eval()
    bare = build_backbone(cfg.backbone.name, pretrained=False, init_seed=cfg.backbone.init_seed).eval()
    pixels = clips().flatten(0, 1)
    torch.testing.assert_close(model.backbone(pixels), bare(pixels), rtol=0, atol=0)


def test_lora_scaling_matches_the_official_loralib_setting(tiny_cfg):
    model = build_model(tiny_cfg)
    layer = model.backbone.model.encoder.layer[3].attention.q_proj
    assert layer.scaling["default"] == pytest.approx(1 / 16)  # loralib MergedLinear(r=16, lora_alpha=1)


def test_merge_equals_unmerged_and_is_idempotent(tiny_cfg):
    model = build_model(tiny_cfg).eval()
    perturb_lora_b(model)
    x = clips()
    with torch.no_grad():
        before = model(x)
        assert merge_lora(model) == 4
        assert merge_lora(model) == 0  # a second merge does not add the update twice
        merged = model(x)
        assert unmerge_lora(model) == 4
        after = model(x)
    torch.testing.assert_close(merged, before)
    torch.testing.assert_close(after, before)
    assert not torch.allclose(before, build_model(tiny_cfg).eval()(x))  # the perturbed LoRA mattered


def test_one_step_changes_only_trainable_tensors():
    torch.manual_seed(0)
    model = build_model(tiny_model_config(lora={"dropout": 0.1}))
    perturb_lora_b(model)  # so that A receives a non-zero gradient too
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(clips()), torch.tensor([0, 2]))
    loss.backward()
    missing_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing_grad == []
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    unchanged = [n for n, v in trainable.items() if torch.equal(params[n], v)]
    assert unchanged == []
    assert any(n.startswith("fusion.") for n in trainable) and any(n.startswith("head.") for n in trainable)


def test_full_fine_tuning_trains_every_backbone_weight():
    model = build_model(tiny_model_config(backbone={"finetune": "full"}))
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert model.frozen_blocks == 0
    model(clips()).sum().backward()
    assert model.backbone.model.embeddings.patch_embeddings.projection.weight.grad is not None


@pytest.mark.parametrize("variant", ["full", "no_stfa", "no_iffa", "none"])
@pytest.mark.parametrize("iffa", ["paper", "official"])
def test_each_variant_builds_and_trains(variant, iffa):
    torch.manual_seed(0)
    model = build_model(tiny_model_config(fusion={"variant": variant, "iffa": iffa}))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = clips(batch=4), torch.tensor([0, 1, 2, 0])
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_checkpoint_round_trip_holds_only_trainable_tensors(tmp_path, tiny_cfg):
    model = build_model(tiny_cfg).eval()
    perturb_lora_b(model)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.3)
    folder = save_checkpoint(model, tiny_cfg, tmp_path / "ckpt", labels=["a", "b", "c"])
    restored, meta = load_checkpoint(folder)
    x = clips()
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)
    assert meta["labels"] == ["a", "b", "c"]
    assert set(meta["tensors"]) == set(model.trainable_state_dict())
    assert all(("lora_" in k) or k.startswith(("fusion.", "head.")) for k in meta["tensors"])
    assert tensor_fingerprint(restored.backbone) == tensor_fingerprint(model.backbone)


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_cfg):
    import json

    folder = save_checkpoint(build_model(tiny_cfg), tiny_cfg, tmp_path / "ckpt")
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["model"]["lora"]["last_n_blocks"] = 3
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="does not fit the model"):
        load_checkpoint(folder)


def test_giant_parameter_count_on_the_meta_device():
    cfg = apply_overrides(ModelConfig(), ["backbone.name=dinov2_vitg14_reg", "lora.last_n_blocks=2", "lora.rank=16"])
    counts = parameter_report(cfg)
    assert counts["lora"] == 196_608  # the paper's "197k"
    assert counts["backbone"] == 1_136_486_912
