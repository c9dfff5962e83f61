"""The backbone is loaded once per process: every fold gets a fresh copy, and the run's results are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.models import backbones, mer_model, pool
from hlora_mer.models.backbones import build_backbone, tensor_fingerprint
from hlora_mer.models.mer_model import build_model, parameter_report
from hlora_mer.models.pool import BackbonePool, build_model_from_pool
from hlora_mer.training.runner import default_model_factory, run_experiment
from train_fixtures import tiny_experiment, tiny_source


def _save_folder(folder: Path, seed: int) -> Path:
    build_backbone("test_vit_reg", pretrained=False, init_seed=seed).model.save_pretrained(folder)
    return folder


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every backbone load, whoever asks for it (``build_model`` or the pool), with a fresh default pool."""
    calls: list[str] = []
    real = backbones.build_backbone

    def counting(name: str, pretrained: bool = True, init_seed: int = 0) -> backbones.DinoBackbone:
        calls.append(name)
        return real(name, pretrained, init_seed)

    monkeypatch.setattr(backbones, "build_backbone", counting)
    monkeypatch.setattr(mer_model, "build_backbone", counting)
    pool.default_pool.clear()
    yield calls
    pool.default_pool.clear()


def _per_fold_build(cfg):
    return build_model(cfg.model)


@pytest.mark.parametrize(
    "backbone, model_extra",
    [
        pytest.param({}, {}, id="random-init"),  # test_vit_reg, LoRA
        # every fold trains the whole backbone
        pytest.param({}, {"backbone": {"finetune": "full"}}, id="full-finetune", marks=pytest.mark.slow),
        # packaged weights (their loader draws from the global random state)
        pytest.param({"name": "synthme_vit", "pretrained": True}, {}, id="packaged", marks=pytest.mark.slow),
        pytest.param("local", {}, id="local-folder", marks=pytest.mark.slow),  # a local pretrained folder
    ],
)
def test_load_once_run_equals_per_fold_build(tmp_path, loads, backbone, model_extra) -> None:
    if backbone == "local":
        backbone = {"name": str(_save_folder(tmp_path / "weights", seed=4)), "pretrained": True}
    tiny = {"name": "test_vit_reg", "pretrained": False}  # tiny_experiment's backbone
    model = {"backbone": {**tiny, **backbone, **model_extra.get("backbone", {})}}
    cfg = tiny_experiment(model=model)
    source = tiny_source(subjects=3)
    run_experiment(cfg, tmp_path / "per_fold", source, model_factory=_per_fold_build)
    per_fold_loads = len(loads)
    loads.clear()
    run_experiment(cfg, tmp_path / "once", source, model_factory=default_model_factory)
    for name in ("predictions.csv", "metrics.json"):
        assert (tmp_path / "once" / name).read_bytes() == (tmp_path / "per_fold" / name).read_bytes(), name
    assert per_fold_loads == 4  # three folds, and the model with_feature_cache builds first
    # packaged weights are tiny and their loader draws from the global random state: loaded each time, as before
    assert len(loads) == (4 if backbone.get("name") == "synthme_vit" else 1)


def test_loso_of_three_folds_loads_the_backbone_once(tmp_path, loads) -> None:
    cfg = tiny_experiment(train={"feature_cache": False})
    run_experiment(cfg, tmp_path / "run", tiny_source(subjects=3))
    assert len(loads) == 1 and pool.default_pool.loads == 1
    assert pool.default_pool.load_seconds > 0
    run_experiment(cfg, tmp_path / "again", tiny_source(subjects=3))  # a sweep member in the same process
    assert len(loads) == 1


def test_copies_are_independent_of_the_kept_backbone_and_of_each_other() -> None:
    pool = BackbonePool()
    fresh = tensor_fingerprint(build_backbone("test_vit_reg", pretrained=False, init_seed=2))
    first = build_model_from_pool(tiny_model_config(backbone={"init_seed": 2}), pool)
    with torch.no_grad():  # what training, LoRA merging or full fine-tuning would do to a fold's backbone
        for p in first.backbone.parameters():
            p.add_(1.0)
    second = pool.backbone("test_vit_reg", pretrained=False, init_seed=2)
    assert pool.loads == 1
    assert tensor_fingerprint(second) == fresh
    assert not any("lora_" in n for n, _ in second.named_parameters())  # the first copy's LoRA stayed there
    reference = build_backbone("test_vit_reg", pretrained=False, init_seed=2)  # modes and grad flags as it gives them
    assert [m.training for m in second.modules()] == [m.training for m in reference.modules()]
    assert [p.requires_grad for p in second.parameters()] == [p.requires_grad for p in reference.parameters()]


def test_the_pool_keeps_the_most_recently_used_backbones_only() -> None:
    pool = BackbonePool(max_size=1)
    for seed in (0, 1, 0):
        pool.backbone("test_vit", pretrained=False, init_seed=seed)
    assert pool.loads == 3 and len(pool) == 1
    pool = BackbonePool(max_size=2)
    for seed in (0, 1, 0, 1):
        pool.backbone("test_vit", pretrained=False, init_seed=seed)
    assert pool.loads == 2 and len(pool) == 2
    pool.backbone("test_vit", pretrained=False, init_seed=2)  # evicts seed 0, the least recently used
    pool.backbone("test_vit", pretrained=False, init_seed=1)
    assert pool.loads == 3
    pool.clear()
    assert len(pool) == 0 and pool.loads == 0 and pool.load_seconds == 0


def test_a_rewritten_local_folder_is_loaded_again(tmp_path) -> None:
    folder = _save_folder(tmp_path / "weights", seed=1)
    pool = BackbonePool()
    first = pool.backbone(str(folder))
    _save_folder(folder, seed=2)
    second = pool.backbone(str(folder))
    assert pool.loads == 2 and second.weights_id != first.weights_id
    assert tensor_fingerprint(second) == tensor_fingerprint(build_backbone(str(folder)))


def test_meta_device_builds_bypass_the_pool() -> None:
    pool = BackbonePool()
    with torch.device("meta"):
        shape_only = build_model_from_pool(tiny_model_config(), pool)
    assert all(p.is_meta for p in shape_only.parameters())
    assert pool.loads == 0 and len(pool) == 0
    real = pool.backbone("test_vit_reg", pretrained=False)
    assert not any(p.is_meta for p in real.parameters()) and pool.loads == 1
    assert parameter_report(tiny_model_config())["trainable"] > 0
