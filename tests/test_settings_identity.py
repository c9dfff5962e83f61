"""Every setting that changes the numbers refuses a resume and gets its own frozen-prefix feature cache.

A run folder resumes only with the same training identity (``run_folder.training_identity``), and the feature
cache key (``training.feature_cache.cache_key``) covers everything the cached tokens depend on. Each case
below fails when its setting is dropped from the check or the key (``docs/training.md``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.errors import ConfigError
from hlora_mer.models.mer_model import build_model
from hlora_mer.training import feature_cache as fc
from hlora_mer.training.engine import compute_precision, seed_everything
from hlora_mer.training.runner import run_experiment
from train_fixtures import tiny_experiment, tiny_source

# (setting, the override that changes it): each changes what a fold computes
CHANGES_NUMBERS = [
    ("train.steps", {"train": {"steps": 3}}),
    ("train.precision", {"train": {"precision": "bf16"}}),
    ("model.image_size", {"model": {"image_size": 42}}),
    ("model.num_frames", {"model": {"num_frames": 6}}),
    ("train.feature_cache_dtype", {"train": {"feature_cache_dtype": "fp32"}}),
    ("train.feature_cache", {"train": {"feature_cache": False}}),
    ("model.lora.last_n_blocks", {"model": {"lora": {"last_n_blocks": 1}}}),
    ("model.backbone.init_seed", {"model": {"backbone": {"init_seed": 3}}}),
    ("data.sampling", {"data": {"sampling": "apex"}}),
    ("train.lr", {"train": {"lr": 2e-3}}),
    ("train.num_workers", {"train": {"num_workers": 1}}),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("resume") / "run"
    run_experiment(tiny_experiment(), run, tiny_source(subjects=2))
    return run


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("setting, change", CHANGES_NUMBERS, ids=[s for s, _ in CHANGES_NUMBERS])
def test_a_setting_that_changes_the_numbers_refuses_a_resume(finished_run, setting: str, change: dict) -> None:
    before = _snapshot(finished_run)
    with pytest.raises(ConfigError, match=re.escape(f"other settings ({setting}: ")):
        run_experiment(tiny_experiment(**change), finished_run, tiny_source(subjects=2))
    assert _snapshot(finished_run) == before  # refused before a single file was written


def test_report_only_settings_resume(finished_run) -> None:
    before = (finished_run / "folds" / "seed0" / "toy__01" / "result.json").read_bytes()
    run_experiment(tiny_experiment(eval={"bootstrap": 10, "confidence": 0.9}), finished_run, tiny_source(subjects=2))
    assert (finished_run / "folds" / "seed0" / "toy__01" / "result.json").read_bytes() == before


def _model(**overrides):
    seed_everything(0)
    return build_model(tiny_model_config(**overrides))


BASE_KEY = {"image_size": 28, "num_frames": 8, "preprocess_id": "tensor:abc", "dtype": "fp16", "compute": "fp32"}
# (what changes, model overrides, key arguments): each gives other tokens, so another key folder
CHANGES_TOKENS = [
    ("compute", {}, {"compute": "bf16"}),
    ("compute fp16", {}, {"compute": "fp16"}),
    ("image_size", {}, {"image_size": 42}),
    ("num_frames", {}, {"num_frames": 6}),
    ("dtype", {}, {"dtype": "fp32"}),
    ("preprocess", {}, {"preprocess_id": "tensor:abd"}),
    ("frozen_blocks", {"lora": {"last_n_blocks": 1}}, {}),
    ("weights", {"backbone": {"init_seed": 5}}, {}),
    ("backbone", {"backbone": {"name": "test_vit"}}, {}),
]


@pytest.mark.parametrize("what, model_change, key_change", CHANGES_TOKENS, ids=[c[0] for c in CHANGES_TOKENS])
def test_a_setting_that_changes_the_tokens_gets_another_cache_folder(
    tmp_path, what: str, model_change: dict, key_change: dict
) -> None:
    base = fc.FeatureCache(fc.cache_key(_model(), **BASE_KEY), tmp_path)
    other = fc.FeatureCache(fc.cache_key(_model(**model_change), **{**BASE_KEY, **key_change}), tmp_path)
    assert other.hash != base.hash and other.dir != base.dir


def test_the_engine_keys_the_cache_with_the_runs_settings() -> None:
    """The key of the fill every run does (``prepare_cached_source``) is made from the run's config."""
    source = tiny_source(subjects=1)
    cfg = tiny_experiment(model={"num_frames": 8}, train={"feature_cache_dtype": "fp32"})
    model = _model()
    prepared = fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))
    assert prepared is not None
    expected = fc.cache_key(
        model,
        image_size=cfg.model.image_size,
        num_frames=cfg.model.num_frames,
        preprocess_id=fc.source_identity(source),
        dtype="fp32",
        compute="fp32",  # autocast applies on CUDA only: on the CPU every precision computes in fp32
    )
    assert prepared[0].cache.key == expected


def test_the_compute_precision_is_the_autocast_on_cuda_and_fp32_elsewhere() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert [compute_precision(cuda, p) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    assert [compute_precision(cpu, p) for p in ("fp32", "bf16", "fp16")] == ["fp32"] * 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="autocast precision applies on CUDA only")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_on_cuda_the_compute_precision_separates_the_cache(tmp_path, precision: str) -> None:
    source = tiny_source(subjects=1)
    caches = []
    for p in ("fp32", precision):
        cfg = tiny_experiment(train={"precision": p, "device": "cuda", "feature_cache_dir": str(tmp_path)})
        prepared = fc.prepare_cached_source(cfg, source, _model(), torch.device("cuda"))
        assert prepared is not None
        caches.append(prepared[0].cache)
    assert caches[0].dir != caches[1].dir and caches[1].key["compute"] == precision
