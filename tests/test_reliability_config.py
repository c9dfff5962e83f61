"""Settings that could only fail later fail when the config is read; numbers in every notation are numbers."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pandas as pd
import pytest

from hlora_mer.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_experiment,
)
from hlora_mer.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# -- settings checked when the config is read (item 9) ------------------------------------------------


@pytest.mark.parametrize("size", [7, 15, 230])
@pytest.mark.parametrize("backbone", ["dinov2_vitg14_reg", "dinov2_vits14", "test_vit_reg", "synthme_vit"])
def test_image_size_that_is_not_a_multiple_of_the_patch_is_refused(backbone, size) -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(ModelConfig, {"backbone": {"name": backbone}, "image_size": size})
    message = str(err.value)
    assert f"model.image_size={size}" in message and "patch size 14" in message and backbone in message
    lower, upper = size // 14 * 14, size // 14 * 14 + 14
    assert f"model.image_size={lower} or {upper}" in message if lower else f"model.image_size={upper}" in message


@pytest.mark.parametrize("size", [14, 28, 112, 224])
def test_image_size_multiple_of_the_patch_is_accepted(size) -> None:
    assert from_dict(ModelConfig, {"backbone": {"name": "test_vit"}, "image_size": size}).image_size == size


def test_local_backbone_folder_patch_size_comes_from_its_config_json(tmp_path) -> None:
    folder = tmp_path / "my_dinov2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2", "patch_size": 16}))
    assert from_dict(ModelConfig, {"backbone": {"name": str(folder)}, "image_size": 224}).image_size == 224
    with pytest.raises(ConfigError, match="patch size 16"):
        from_dict(ModelConfig, {"backbone": {"name": str(folder)}, "image_size": 210})
    # without a patch size (or a folder) there is nothing to check here: the backbone loader reports it
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    assert from_dict(ModelConfig, {"backbone": {"name": str(folder)}, "image_size": 15}).image_size == 15
    assert from_dict(ModelConfig, {"backbone": {"name": str(tmp_path / "gone")}, "image_size": 15}).image_size == 15


def test_negative_margin_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"data\.margin=-0\.1 is negative.*data\.margin >= 0"):
        from_dict(DataConfig, {"margin": -0.1})
    assert from_dict(DataConfig, {"margin": 0}).margin == 0


def test_stfa_kernel_larger_than_the_clip_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"stfa_kernel=9 is larger than model\.num_frames=8.*stfa_kernel <= 8"):
        apply_overrides(ExperimentConfig(), ["model.fusion.stfa_kernel=9"])
    with pytest.raises(ConfigError, match="stfa_kernel=8 is larger than model.num_frames=4"):
        from_dict(ModelConfig, {"num_frames": 4, "fusion": {"stfa_kernel": 8}})
    assert from_dict(ModelConfig, {"num_frames": 8, "fusion": {"stfa_kernel": 8}}).fusion.stfa_kernel == 8
    # a variant without STFA does not use the kernel
    assert from_dict(ModelConfig, {"num_frames": 4, "fusion": {"stfa_kernel": 8, "variant": "no_stfa"}})


def test_more_neighbours_than_other_frames_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"num_neighbors=8 is more than the 7 other frames.*num_neighbors <= 7"):
        apply_overrides(ExperimentConfig(), ["model.fusion.num_neighbors=8"])
    assert from_dict(ModelConfig, {"num_frames": 8, "fusion": {"num_neighbors": 7}}).fusion.num_neighbors == 7
    # the official IFFA has a fixed chain of neighbours and ignores the setting
    assert from_dict(ModelConfig, {"num_frames": 4, "fusion": {"num_neighbors": 8, "iffa": "official"}})


def test_fusion_module_refuses_instead_of_clamping_neighbours() -> None:
    from hlora_mer.config import FusionConfig
    from hlora_mer.models.fusion import InterFrameAggregator, build_fusion

    with pytest.raises(ConfigError, match="num_neighbors=8 does not fit a clip of 8 frames"):
        InterFrameAggregator(dim=4, out_dim=4, num_frames=8, num_neighbors=8)
    with pytest.raises(ConfigError, match="num_neighbors=0"):
        InterFrameAggregator(dim=4, out_dim=4, num_frames=8, num_neighbors=0)
    with pytest.raises(ConfigError, match="num_neighbors=6"):  # FusionConfig alone does not know T
        build_fusion(FusionConfig(num_neighbors=6), dim=4, num_frames=4)
    assert InterFrameAggregator(dim=4, out_dim=4, num_frames=8, num_neighbors=7).num_neighbors == 7


def _table(subjects: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": [f"s{i}/c" for i in range(subjects)],
            "subject": [f"s{i}" for i in range(subjects)],
            "dataset": "toy",
        }
    )


def test_validation_count_larger_than_the_training_subjects_is_refused() -> None:
    from hlora_mer.training.splits import loso_folds, validation_split

    table = _table(4)
    fold = loso_folds(table)[0]  # trains on 3 subjects
    with pytest.raises(ConfigError) as err:
        validation_split(table, fold.train_ids, 3, seed=0, fold=fold.name)
    message = str(err.value)
    assert "train.val_subjects=3" in message and f"fold {fold.name}" in message
    assert "trains on 3 subjects" in message and "at most 2" in message
    with pytest.raises(ConfigError, match="this fold"):
        validation_split(table, fold.train_ids, 5, seed=0)
    train, val = validation_split(table, fold.train_ids, 2, seed=0, fold=fold.name)
    assert len(val) == 2 and len(train) == 1
    train, val = validation_split(table, fold.train_ids, 0.9, seed=0)  # a fraction keeps one in training
    assert len(train) == 1


# -- numbers in every notation (item 10) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 1e-3),
        ("5e-4", 5e-4),
        ("5E-4", 5e-4),
        ("1.5e-3", 1.5e-3),
        (".001", 0.001),
        ("+2e-5", 2e-5),
        ("1e+2", 100.0),
    ],
)
def test_scientific_notation_override_is_a_number(text, value) -> None:
    cfg = apply_overrides(ExperimentConfig(), [f"train.lr={text}", f"train.weight_decay={text}"])
    assert isinstance(cfg.train.lr, float) and cfg.train.lr == pytest.approx(value)
    assert cfg.train.weight_decay == pytest.approx(value)


def test_scientific_notation_in_a_yaml_file_is_a_number(tmp_path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 1e-4\n  grad_clip: 5e0\neval:\n  confidence: 9.5e-1\n")
    cfg = load_experiment(path)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip) == (1e-3, 1e-4, 5.0)
    assert cfg.eval.confidence == pytest.approx(0.95)
    # a sweep's overrides go the same way
    path.write_text("sweep:\n  small: [train.lr=5e-4]\n")
    from hlora_mer.config import sweep_variants

    assert sweep_variants(load_experiment(path))["small"].train.lr == 5e-4


@pytest.mark.parametrize("text", ["abc", "nan", "inf", "1e-3x", "1e", "e-3"])
def test_text_that_is_not_a_plain_number_is_still_refused(text) -> None:
    with pytest.raises(ConfigError, match=rf"train\.lr must be a number such as 0\.001 or 1e-3; got '{text}'"):
        apply_overrides(ExperimentConfig(), [f"train.lr={text}"])


def test_whole_number_fields_say_how_to_write_the_value() -> None:
    with pytest.raises(
        ConfigError,
        match=r"train\.steps must be an integer such as 300; got '1e3' "
        r"\(write it as 1000\)",
    ):
        apply_overrides(ExperimentConfig(), ["train.steps=1e3"])
    with pytest.raises(ConfigError, match=r"train\.steps must be an integer such as 300; got 2\.5$"):
        apply_overrides(ExperimentConfig(), ["train.steps=2.5"])


def _float_fields(cfg: object, prefix: str = "") -> dict[str, object]:
    out = {}
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_float_fields(value, f"{prefix}{f.name}."))
        elif hints[f.name] in (float, float | None) and value is not None:
            out[prefix + f.name] = value
    return out


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_take_scientific_notation(path, tmp_path) -> None:
    import yaml

    cfg = load_experiment(path, ["train.lr=5e-4", "train.weight_decay=1e-4"])
    assert (cfg.train.lr, cfg.train.weight_decay) == (5e-4, 1e-4)
    floats = _float_fields(cfg)
    assert "train.lr" in floats and all(isinstance(v, float) for v in floats.values()), floats
    # the same numbers typed into the file itself
    data = yaml.safe_load(path.read_text())
    data.setdefault("train", {}).update(lr="@LR@", weight_decay="@WD@")
    edited = tmp_path / path.name
    edited.write_text(yaml.safe_dump(data).replace("'@LR@'", "5e-4").replace("'@WD@'", "1e-4"))
    assert "lr: 5e-4" in edited.read_text() and yaml.safe_load("lr: 5e-4")["lr"] == "5e-4"  # YAML 1.1: text
    cfg = load_experiment(edited)
    assert (cfg.train.lr, cfg.train.weight_decay) == (5e-4, 1e-4)


def test_train_config_float_defaults_are_unchanged() -> None:
    assert TrainConfig().lr == 1e-3 and isinstance(TrainConfig().weight_decay, float)
