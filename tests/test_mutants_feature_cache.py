"""Mutation-testing companions of tests/test_feature_cache.py: the key that separates cached prefix tokens.

Every setting that changes the tokens must change the key folder, or a run reads another run's features.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.models.mer_model import build_model
from hlora_mer.training import feature_cache as fc
from hlora_mer.training.engine import seed_everything
from train_fixtures import tiny_clips, tiny_experiment, tiny_source


@pytest.fixture(scope="module")
def model():
    seed_everything(0)
    # 5 blocks, LoRA on the last 1: 4 frozen blocks, a number that differs from the LoRA count.
    return build_model(tiny_model_config(lora={"last_n_blocks": 1}))


def test_the_key_holds_every_setting_the_tokens_depend_on(model) -> None:
    key = fc.cache_key(model, image_size=42, num_frames=6, preprocess_id="aligned:/x", dtype="fp16", compute="bf16")
    assert key == {
        "format": fc.FORMAT_VERSION,
        "backbone": model.backbone.name,
        "weights_id": model.backbone.weights_id,
        "depth": 5,
        "frozen_blocks": 4,
        "cls_only": False,
        "image_size": 42,
        "num_frames": 6,
        "preprocess": "aligned:/x",
        "dtype": "fp16",
        "compute": "bf16",
    }
    assert fc.cache_key(model, image_size=42, num_frames=6, preprocess_id="p", dtype="fp32")["compute"] == "fp32"
    seed_everything(0)
    cls_only = build_model(tiny_model_config(lora={"last_n_blocks": 0}))
    assert fc.cache_key(cls_only, image_size=28, num_frames=8, preprocess_id="p", dtype="fp32")["cls_only"] is True


@pytest.mark.parametrize(
    "change",
    [
        {"image_size": 56},
        {"num_frames": 4},
        {"preprocess_id": "aligned:/other"},
        {"dtype": "fp16"},
        {"compute": "bf16"},
        {"compute": "fp16"},
    ],
)
def test_each_setting_gets_its_own_key_folder(model, tmp_path, change) -> None:
    base = {"image_size": 28, "num_frames": 8, "preprocess_id": "aligned:/x", "dtype": "fp32", "compute": "fp32"}
    a = fc.FeatureCache(fc.cache_key(model, **base), tmp_path)
    b = fc.FeatureCache(fc.cache_key(model, **{**base, **change}), tmp_path)
    assert a.hash != b.hash and a.dir != b.dir
    assert a.hash == fc.FeatureCache(fc.cache_key(model, **base), tmp_path).hash  # and the same key, the same one


def test_the_in_memory_identity_changes_with_any_pixel_and_any_id() -> None:
    source = tiny_source(subjects=1)
    ident = fc.source_identity(source)
    assert ident.startswith("tensor:") and ident == fc.source_identity(source)
    clips = source.clips.clone()
    clips[2, 7, 1, 27, 0] += 1e-3  # the last clip, last frame, one pixel
    assert fc.source_identity(dataclasses.replace(source, clips=clips)) != ident
    table = source.table.copy()
    table.loc[2, "sample_id"] = "toy/01/renamed"
    assert fc.source_identity(dataclasses.replace(source, table=table)) != ident


def test_the_run_builds_the_key_from_its_config() -> None:
    # train.precision only changes the tokens on CUDA (autocast): on the CPU the key says fp32 whatever it is.
    source = tiny_source(subjects=1)
    source = dataclasses.replace(source, clips=tiny_clips(source.table, frames=6))  # T = 6, not the default 8
    cfg = tiny_experiment(
        train={"precision": "bf16", "feature_cache_dtype": "fp16"},
        model={"num_frames": 6, "lora": {"last_n_blocks": 1}},
    )
    seed_everything(0)
    model = build_model(cfg.model)
    prepared = fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))
    assert prepared is not None
    key = prepared[0].cache.key
    assert key == fc.cache_key(
        model,
        image_size=cfg.model.image_size,
        num_frames=cfg.model.num_frames,
        preprocess_id=fc.source_identity(source),
        dtype="fp16",
        compute="fp32",
    )
    assert (key["image_size"], key["num_frames"]) == (28, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="train.precision reaches the key only on CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_on_cuda_the_key_holds_the_autocast_precision(precision: str) -> None:
    source = tiny_source(subjects=1)
    cfg = tiny_experiment(train={"precision": precision, "device": "cuda"})
    seed_everything(0)
    prepared = fc.prepare_cached_source(cfg, source, build_model(cfg.model), torch.device("cuda"))
    assert prepared is not None
    assert prepared[0].cache.key["compute"] == precision
