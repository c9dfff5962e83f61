"""The identity of backbone weights, and checkpoints refused when they do not fit the model they meet."""

import json
import logging
import os

import pytest
import torch

from conftest import TINY_IMAGE, tiny_model_config
from hlora_mer.errors import UserError
from hlora_mer.models import backbones
from hlora_mer.models.backbones import build_backbone, local_weight_files
from hlora_mer.models.checkpoint import load_checkpoint, load_checkpoint_into, save_checkpoint
from hlora_mer.models.mer_model import build_model

# --------------------------------------------------------------------------------------------------
# A local backbone folder is identified by its weights' bytes


def save_tiny(folder, seed, **kwargs):
    build_backbone("test_vit", pretrained=False, init_seed=seed).model.save_pretrained(folder, **kwargs)


def age(folder, seconds=3600):
    """Set every file's mtime an hour back, as for weights downloaded long ago."""
    for path in folder.iterdir():
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 1_000_000_000))


def test_local_folder_weights_id_changes_with_the_weights(tmp_path):
    folder = tmp_path / "tiny"
    save_tiny(folder, seed=1)
    first = build_backbone(str(folder))
    save_tiny(folder, seed=2)  # other weights, same folder, same file sizes
    second = build_backbone(str(folder))
    save_tiny(folder, seed=1)
    again = build_backbone(str(folder))

    x = torch.randn(2, 3, TINY_IMAGE, TINY_IMAGE)
    assert not torch.allclose(first(x), second(x))  # the folder did hold other weights
    assert second.weights_id != first.weights_id
    assert again.weights_id == first.weights_id
    assert first.weights_id.startswith(f"{folder}@")


def test_local_folder_weights_id_covers_config_and_shards(tmp_path):
    folder = tmp_path / "sharded"
    save_tiny(folder, seed=1, max_shard_size="40KB")
    files = [p.name for p in local_weight_files(folder)]
    assert files[:2] == ["config.json", "model.safetensors.index.json"]
    assert len(files) > 3 and all(name.startswith("model-") for name in files[2:])
    first = build_backbone(str(folder)).weights_id

    shard = folder / files[-1]
    other = tmp_path / "other"
    save_tiny(other, seed=2, max_shard_size="40KB")
    shard.write_bytes((other / files[-1]).read_bytes())  # one shard replaced by another model's
    assert build_backbone(str(folder)).weights_id != first

    save_tiny(folder, seed=1, max_shard_size="40KB")
    assert build_backbone(str(folder)).weights_id == first
    config = json.loads((folder / "config.json").read_text())
    config["layer_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(config))
    assert build_backbone(str(folder)).weights_id != first


def save_tiny_bin(folder, seed):
    model = build_backbone("test_vit", pretrained=False, init_seed=seed).model
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")


def test_pytorch_bin_folder_is_hashed_and_an_unused_bin_beside_safetensors_is_not(tmp_path):
    folder = tmp_path / "bin"
    save_tiny_bin(folder, seed=1)
    assert [p.name for p in local_weight_files(folder)] == ["config.json", "pytorch_model.bin"]
    first = build_backbone(str(folder)).weights_id
    save_tiny_bin(folder, seed=2)
    assert build_backbone(str(folder)).weights_id != first

    both = tmp_path / "both"
    save_tiny(both, seed=1)
    save_tiny_bin(both, seed=2)  # transformers reads model.safetensors, not the .bin beside it
    assert [p.name for p in local_weight_files(both)] == ["config.json", "model.safetensors"]


def test_local_weights_are_hashed_once_per_process(tmp_path, monkeypatch):
    from hlora_mer import files

    folder = tmp_path / "tiny"
    save_tiny(folder, seed=1)
    age(folder)
    hashed = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda path: hashed.append(path.name) or real(path))
    monkeypatch.setattr(backbones, "_FILE_DIGESTS", {})

    first = build_backbone(str(folder)).weights_id
    assert sorted(hashed) == ["config.json", "model.safetensors"]
    assert build_backbone(str(folder)).weights_id == first
    assert len(hashed) == 2  # unchanged files are not read again

    save_tiny(folder, seed=2)  # just written: hashed on every load until it is a few seconds old
    changed = build_backbone(str(folder)).weights_id
    build_backbone(str(folder))
    assert changed != first and hashed.count("model.safetensors") == 3


# --------------------------------------------------------------------------------------------------
# Checkpoints


@pytest.fixture
def checkpoint(tmp_path, tiny_cfg):
    model = build_model(tiny_cfg)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.5)
    return save_checkpoint(model, tiny_cfg, tmp_path / "ckpt", labels=["a", "b", "c"]), model


def refusal(model, folder, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        load_checkpoint_into(model, folder, **kwargs)
    return str(err.value)


def test_checkpoint_loads_into_the_model_it_was_made_for(checkpoint, tiny_cfg):
    folder, trained = checkpoint
    model = build_model(tiny_cfg)
    meta = load_checkpoint_into(model, folder, labels=["a", "b", "c"])
    assert meta["labels"] == ["a", "b", "c"]
    torch.testing.assert_close(model.head[1].weight, trained.head[1].weight, rtol=0, atol=0)
    # settings that act only in training do not stop a checkpoint from fitting
    load_checkpoint_into(build_model(tiny_model_config(lora={"dropout": 0.2}, fusion={"head_dropout": 0.3})), folder)


def test_other_backbone_weights_are_refused_unless_allowed(checkpoint, caplog):
    folder, trained = checkpoint
    other = build_model(tiny_model_config(backbone={"init_seed": 7}))
    untouched = other.head[1].weight.detach().clone()
    message = refusal(other, folder)
    assert "checkpoint: backbone test_vit_reg (weights random-init:test_vit_reg:seed=0)" in message
    assert "model:      backbone test_vit_reg (weights random-init:test_vit_reg:seed=7)" in message
    assert "allow_mismatch=True (CLI: --allow-mismatch)" in message
    assert torch.equal(other.head[1].weight, untouched)  # a refused checkpoint loads nothing

    with caplog.at_level(logging.WARNING, logger="hlora_mer.models.checkpoint"):
        load_checkpoint_into(other, folder, allow_mismatch=True)
    assert "other backbone weights (allowed)" in caplog.text and "seed=7" in caplog.text
    torch.testing.assert_close(other.head[1].weight, trained.head[1].weight, rtol=0, atol=0)


def test_other_backbone_of_the_same_shapes_is_refused_unless_allowed(checkpoint):
    folder, _ = checkpoint
    other = build_model(tiny_model_config(backbone={"name": "test_vit"}))  # no registers; same tensor shapes
    message = refusal(other, folder)
    assert "backbone: checkpoint test_vit_reg" in message and "model test_vit with weights" in message
    load_checkpoint_into(other, folder, allow_mismatch=True)


def test_load_checkpoint_refuses_a_backbone_whose_weights_changed(checkpoint, caplog):
    folder, trained = checkpoint
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["backbone_weights"] = "/models/dinov2@0123456789abcdef"  # trained on weights the backbone no longer has
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"(?s)weights /models/dinov2@0123456789abcdef.*allow_mismatch"):
        load_checkpoint(folder)
    with caplog.at_level(logging.WARNING, logger="hlora_mer.models.checkpoint"):
        model, _ = load_checkpoint(folder, allow_mismatch=True)
    assert "/models/dinov2@0123456789abcdef" in caplog.text
    torch.testing.assert_close(model.head[1].weight, trained.head[1].weight, rtol=0, atol=0)


def test_other_labels_are_refused(checkpoint, tiny_cfg):
    folder, _ = checkpoint
    message = refusal(build_model(tiny_cfg), folder, labels=["a", "c", "b"], allow_mismatch=True)
    assert "labels: checkpoint ['a', 'b', 'c'], asked for ['a', 'c', 'b']" in message
    assert "labels ['a', 'b', 'c']" in message and "labels ['a', 'c', 'b']" in message
    with pytest.raises(UserError, match="asked for"):
        load_checkpoint(folder, labels=["x", "y", "z"])


def test_other_num_classes_is_refused_with_the_tensor_shapes(checkpoint):
    folder, _ = checkpoint
    message = refusal(build_model(tiny_model_config(num_classes=4)), folder, allow_mismatch=True)
    assert "num_classes: checkpoint 3, model 4" in message
    assert "head.1.weight (3, " in message and "vs (4, " in message
    assert "num_classes 3" in message and "num_classes 4" in message  # both sides summarised


def test_checkpoint_whose_config_builds_other_shapes_is_one_clear_error(checkpoint):
    folder, _ = checkpoint
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["model"]["num_classes"] = 5  # the rebuilt head has 5 outputs, the saved one 3
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"(?s)tensors of other shapes.*head\.1\.weight \(3, \d+\) vs \(5, \d+\)"):
        load_checkpoint(folder, allow_mismatch=True)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"image_size": 2 * TINY_IMAGE}, f"image_size: checkpoint {TINY_IMAGE}, model {2 * TINY_IMAGE}"),
        ({"num_frames": 4}, "num_frames: checkpoint 8, model 4"),
        ({"lora": {"alpha": 2.0}}, "lora.alpha: checkpoint 1.0, model 2.0"),
    ],
)
def test_other_model_settings_are_refused(checkpoint, change, expected):
    folder, _ = checkpoint
    message = refusal(build_model(tiny_model_config(**change)), folder, allow_mismatch=True)
    assert expected in message
    assert message.count("\n  checkpoint: ") == 1 and message.count("\n  model: ") == 1
