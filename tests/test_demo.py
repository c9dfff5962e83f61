"""The demo wires SynthME through the real loader, preprocessing and LOSO code."""

import json

import pytest

from hlora_mer.cli import main
from hlora_mer.synthme.demo import demo_config, ensure_synthme
from hlora_mer.synthme.generate import SynthConfig


def test_packaged_demo_config_parses_and_takes_overrides():
    cfg = demo_config(["train.steps=3"])
    assert cfg.train.steps == 3
    assert cfg.model.backbone.name == "synthme_vit" and cfg.model.backbone.pretrained
    assert cfg.eval.protocol == "loso" and cfg.data.label_scheme == "casme2_5cls"


def test_synthme_is_generated_once_per_setting(tmp_path):
    cfg = SynthConfig(subjects=2, clips_per_class=1, min_frames=4, max_frames=5, frame_size=48)
    root = ensure_synthme(tmp_path, cfg)
    stamp = (root / "CASME2-coding-20190701.xlsx").stat().st_mtime_ns
    assert ensure_synthme(tmp_path, cfg) == root
    assert (root / "CASME2-coding-20190701.xlsx").stat().st_mtime_ns == stamp  # reused, not rewritten
    other = ensure_synthme(tmp_path, SynthConfig(**{**cfg.__dict__, "amplitude": 0.0}))
    assert other != root


_SMALL = [
    "--subjects",
    "2",
    "--clips-per-class",
    "1",
    "train.steps=1",
    "train.batch_size=2",
    "model.image_size=28",
    "eval.bootstrap=0",
]


@pytest.mark.slow  # the whole demo: SynthME, alignment, LOSO
def test_demo_runs_end_to_end_and_prints_the_table_next_to_chance(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), *_SMALL]) == 0
    out = capsys.readouterr().out
    assert "backbone: synthme_vit with pretrained weights" in out and "without labels" in out
    assert "| demo |" in out and "chance level" in out and "UF1 20.00" in out
    run = next(tmp_path.glob("run-*"))
    # settings other than the default get their own folder
    assert run.name.startswith("run-subjects2-clips_per_class1-amplitude2.5-seed0-synthme_vit-")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pooled"]["per_seed"]["0"]["n"] == 10  # 2 subjects x 5 classes, none lost
    assert (run / "report.md").is_file()
    config = (run / "config.yaml").read_text()
    assert "name: synthme_vit" in config and "pretrained: true" in config


@pytest.mark.slow  # the whole demo: SynthME, alignment, LOSO
def test_demo_says_when_its_backbone_is_random_init(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--backbone", "test_vit_reg", *_SMALL]) == 0
    out = capsys.readouterr().out
    assert "backbone: test_vit_reg with RANDOM-INIT weights, not pretrained" in out
    run = next(tmp_path.glob("run-*"))
    assert run.name.startswith("run-subjects2-clips_per_class1-amplitude2.5-seed0-test_vit_reg-")
