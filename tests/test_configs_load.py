"""Every YAML in configs/ parses into an ExperimentConfig, every sweep variant builds, names resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from hlora_mer.config import ExperimentConfig, apply_overrides, load_experiment, sweep_variants
from hlora_mer.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_is_a_config_for_every_paper_experiment() -> None:
    names = {p.stem for p in CONFIGS}
    for prefix in (
        "table3_casme2",
        "table3_samm",
        "table4_casme2",
        "table4_samm",
        "table5_",
        "table6_",
        "table7_",
        "table8_",
        "fig3_",
        "table9_",
        "megc2019",
        "all_subjects",
        "debug_tiny",
    ):
        assert any(n.startswith(prefix) for n in names), prefix


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_builds(path: Path) -> None:
    from hlora_mer.data import get_dataset_spec, get_scheme
    from hlora_mer.models.mer_model import parameter_report

    cfg = load_experiment(path)
    assert cfg.name == path.stem
    assert cfg.description
    scheme = get_scheme(cfg.data.label_scheme)
    for dataset in cfg.data.datasets:
        spec = get_dataset_spec(dataset)
        options = set(spec.options())
        assert set(cfg.data.options[dataset]) <= options, dataset
        if dataset != "megc2019":  # the composite's rows carry their part datasets' names
            scheme.allowed_labels(dataset) or pytest.fail(f"{scheme.name} does not cover {dataset}")
    for variant, vcfg in sweep_variants(cfg).items():
        model_cfg = apply_overrides(vcfg.model, [f"num_classes={scheme.num_classes}"])
        counts = parameter_report(model_cfg)  # meta device: nothing downloaded
        assert counts["trainable"] > 0, variant
    overrides = [f"data.roots.{d}=/data/{d}" for d in cfg.data.datasets]
    assert load_experiment(path, overrides).data.roots[cfg.data.datasets[0]] == f"/data/{cfg.data.datasets[0]}"


def test_sweeps_are_overrides() -> None:
    cfg = load_experiment(Path(CONFIGS[0]).parent / "fig3_lora_depth_samm.yaml")
    variants = sweep_variants(cfg)
    assert [v.model.lora.last_n_blocks for v in variants.values()] == [0, 1, 2, 3, 4]
    assert all(v.sweep == {} and v.name.startswith("fig3_lora_depth_samm-") for v in variants.values())
    table8 = sweep_variants(load_experiment(Path(CONFIGS[0]).parent / "table8_finetuning_samm.yaml"))
    assert {k: v.model.backbone.finetune for k, v in table8.items()} == {"full_finetuning": "full", "hlora": "lora"}


def test_unknown_keys_and_bad_values_are_errors(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="train.stepz"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match="protocol"):
        apply_overrides(ExperimentConfig(), ["eval.protocol=kfold"])
    with pytest.raises(ConfigError, match="hde"):
        apply_overrides(ExperimentConfig(), ["eval.protocol=hde"])
    with pytest.raises(ConfigError, match="not in data.datasets"):
        apply_overrides(ExperimentConfig(), ["data.roots={samm: /x}"])
    with pytest.raises(ConfigError, match="sweep"):
        apply_overrides(ExperimentConfig(), ["sweep={a: [nonsense]}"])


def test_paper_recipe_is_the_default() -> None:
    cfg = ExperimentConfig()
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.steps) == ("adam", 1e-3, 36, 600)
    assert cfg.train.select == "last" and not cfg.eval.leaky_best_epoch
    assert (cfg.model.lora.last_n_blocks, cfg.model.lora.rank, cfg.model.num_frames) == (2, 16, 8)


@pytest.mark.parametrize("name", ["synthme_fig3_lora_depth", "synthme_table9_hfm_ablation"])
def test_synthme_studies_train_exactly_as_the_demo(name: str) -> None:
    """The miniature studies differ from `make demo` only in their sweep, seeds and names."""
    import dataclasses

    from hlora_mer.synthme.demo import demo_config

    study = load_experiment(CONFIGS[0].parent / f"{name}.yaml")
    demo = demo_config()
    assert len(study.eval.seeds) >= 2 and study.sweep
    same = {"name": "x", "description": "", "sweep": {}}
    demo_eval = dataclasses.replace(demo.eval, seeds=study.eval.seeds, metrics=study.eval.metrics)
    assert dataclasses.replace(study, **same) == dataclasses.replace(demo, eval=demo_eval, **same)
