"""Fig. 4 (backbone patch features, tuned and untuned) and Fig. 5 (IFFA attention) for one clip, and
``hlora-mer explain`` end to end on a tiny run with a real aligned-clip cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from align_fixtures import write_frames
from conftest import TINY_IMAGE, tiny_model_config
from hlora_mer.cli import main
from hlora_mer.errors import UserError
from hlora_mer.inference import TrainedModel, load_trained
from hlora_mer.models.backbones import build_backbone
from hlora_mer.models.lora import lora_layers
from hlora_mer.models.mer_model import build_model
from hlora_mer.preprocess.cache import open_cache_dir
from hlora_mer.preprocess.run import PreprocessParams
from hlora_mer.viz import explain as ex
from test_figures import assert_picture
from train_fixtures import CLASSES
from viz_fixtures import APEX, build_cache_run, clip_frames

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory) -> Path:
    return build_cache_run(tmp_path_factory.mktemp("explain"))


@pytest.fixture(scope="module")
def clip(cache_run) -> np.ndarray:
    import json

    cache_dir = json.loads((cache_run / "run.json").read_text())["data"]["cache_dir"]
    return open_cache_dir(cache_dir).load_clip("toy/01/c0")


def trained_of(**overrides) -> TrainedModel:
    torch.manual_seed(0)
    model = build_model(tiny_model_config(**overrides)).eval()
    for layer in lora_layers(model.backbone):  # a tuned adapter: B away from its zero start
        for p in layer.lora_B.parameters():
            torch.nn.init.normal_(p, std=0.5)
    params = PreprocessParams(num_frames=8, size=TINY_IMAGE, detector="none")
    return TrainedModel(model, {}, Path("tiny-checkpoint"), list(CLASSES), params)


def test_explain_clip_draws_fig4_and_fig5(cache_run, clip, tmp_path) -> None:
    trained = load_trained(cache_run / "folds" / "seed0" / "toy__01")
    result = ex.explain_clip(trained, clip, tmp_path / "out", apex_index=3, name="toy/01/c0", true_label="negative")
    names = sorted(p.name for p in result.paths)
    assert names == ["toy_01_c0_iffa.pdf", "toy_01_c0_iffa.png", "toy_01_c0_pca.pdf", "toy_01_c0_pca.png"]
    for path in result.paths:
        assert path.parent == tmp_path / "out"
        if path.suffix == ".png":
            assert_picture(path)
    assert list(result.probabilities) == list(CLASSES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert result.prediction == max(result.probabilities, key=lambda k: result.probabilities[k])
    assert result.has_attention


def test_the_untuned_backbone_is_the_same_backbone_without_its_lora(clip) -> None:
    trained = trained_of()
    backbone = trained.model.backbone
    pixels = ex.clip_tensor(trained, clip)[0]
    backbone.requires_grad_(False)  # as a model used for inference may be
    flags = {n: p.requires_grad for n, p in backbone.named_parameters()}
    tuned = ex.patch_features(backbone, pixels)
    untuned, note = ex.untuned_features(trained, pixels)
    assert "LoRA disabled" in note
    assert tuned.shape == untuned.shape == (8, TINY_IMAGE // 14, TINY_IMAGE // 14, backbone.embed_dim)
    assert not np.allclose(tuned, untuned)
    cfg = trained.model.config
    plain = build_backbone(cfg.backbone.name, cfg.backbone.pretrained, cfg.backbone.init_seed)
    np.testing.assert_allclose(untuned, ex.patch_features(plain, pixels), atol=1e-5)
    # the adapters come back afterwards, trainable as before
    np.testing.assert_allclose(ex.patch_features(backbone, pixels), tuned, atol=1e-6)
    assert {n: p.requires_grad for n, p in backbone.named_parameters()} == flags


def test_the_first_component_follows_the_strongest_pattern() -> None:
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=(3, 4, 4))
    direction = rng.normal(size=16)
    features = pattern[..., None] * direction + 0.01 * rng.normal(size=(3, 4, 4, 16))
    pc = ex.first_component(features)
    assert pc.shape == (3, 4, 4) and pc.min() == 0.0 and pc.max() == 1.0
    assert abs(np.corrcoef(pc.ravel(), pattern.ravel())[0, 1]) > 0.99
    # the sign is fixed: the patch farthest from the mean scores 1, whichever sign the SVD picks
    for seed in range(8):
        rng = np.random.default_rng(seed)
        f = rng.normal(size=(2, 3, 3, 1)) * rng.normal(size=8) + 0.01 * rng.normal(size=(2, 3, 3, 8))
        centred = np.linalg.norm(f - f.reshape(-1, 8).mean(axis=0), axis=-1)
        assert ex.first_component(f).flat[np.argmax(centred)] == 1.0
    assert not ex.first_component(np.ones((2, 3, 3, 4))).any()


@pytest.mark.parametrize(
    ("fusion", "attention"),
    [({"variant": "full", "iffa": "paper"}, True), ({"variant": "no_stfa", "iffa": "official"}, True)]
    + [({"variant": "no_iffa"}, False), ({"variant": "none"}, False)],
)
def test_each_fusion_variant_gets_its_attention_map_or_a_note(fusion, attention, clip, tmp_path) -> None:
    trained = trained_of(fusion=fusion)
    result = ex.explain_clip(trained, clip, tmp_path, apex_index=2, name="c")
    assert result.has_attention is attention
    assert any("no inter-frame fusion" in n for n in result.notes) is (not attention)
    for path in result.paths:
        if path.suffix == ".png":
            assert_picture(path)


def test_a_fully_fine_tuned_model_is_compared_with_its_original_backbone(clip, tmp_path) -> None:
    trained = trained_of(backbone={"finetune": "full"})
    with torch.no_grad():
        trained.model.backbone.model.layernorm.weight.mul_(3.0)
    pixels = ex.clip_tensor(trained, clip)[0]
    untuned, note = ex.untuned_features(trained, pixels)
    assert "original weights" in note
    assert not np.allclose(untuned, ex.patch_features(trained.model.backbone, pixels))


def test_a_clip_that_does_not_fit_the_model_is_refused(clip, tmp_path) -> None:
    trained = trained_of()
    with pytest.raises(UserError, match=r"shape \(6, 28, 28, 3\).*takes uint8 clips of shape \(8, 28, 28, 3\)"):
        ex.explain_clip(trained, clip[:6], tmp_path)
    with pytest.raises(UserError, match="apex index 9 is outside"):
        ex.explain_clip(trained, clip, tmp_path, apex_index=9)
    assert not list(tmp_path.iterdir())


def test_cli_explain_a_sample_of_the_run(cache_run, tmp_path, capsys) -> None:
    out = tmp_path / "figs"
    assert main(["-q", "explain", "--sample", "toy/02/c1", "--model", str(cache_run), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    # the run has a checkpoint per fold: the one that tested the sample is used
    assert f"toy/02/c1: model {cache_run / 'folds' / 'seed0' / 'toy__02' / 'checkpoint'}" in printed
    assert f"apex {APEX}" in printed and f"(true: {CLASSES[1]})" in printed
    for name in ("toy_02_c1_pca", "toy_02_c1_iffa"):
        assert_picture(out / f"{name}.png")
        assert f"wrote {out / name}.png" in printed


@pytest.mark.parametrize("kind", ["frames", "video"])
def test_cli_explain_a_frame_folder_or_a_video(kind, cache_run, tmp_path, capsys) -> None:
    if kind == "frames":
        folder = tmp_path / "new_clip"
        write_frames(folder, clip_frames(99))
    else:
        pytest.importorskip("av")
        from hlora_mer.data.video import write_video

        folder = tmp_path / "new_clip.mp4"
        write_video(folder, clip_frames(99, size=48))
    checkpoint = cache_run / "folds" / "seed0" / "toy__01" / "checkpoint"
    argv = ["-q", "explain", str(folder), "--model", str(checkpoint), "--apex", "5", "-o", str(tmp_path / "fig")]
    assert main([*argv, "--cache", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "new_clip: model" in printed and "apex 5" in printed
    assert_picture(tmp_path / "fig" / "new_clip_pca.png")
    assert_picture(tmp_path / "fig" / "new_clip_iffa.png")
    # the clip was prepared by the same code and cache as 'hlora-mer predict'
    assert len(list((tmp_path / "cache").glob("*/clips/**/*.npy"))) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sample", "toy/09/nothing"], "toy/09/nothing is not a sample of this run"),
        (["--sample", "toy/01/c9"], "samples are e.g. toy/01/c0, toy/01/c1, toy/01/c2"),
        ([], "pass either a CLIP"),
        (["/nonexistent/clip.mp4"], "does not exist"),
    ],
)
def test_cli_explain_mistakes_are_one_line(argv, message, cache_run, tmp_path, capsys) -> None:
    model = cache_run / "folds" / "seed0" / "toy__01"
    assert main(["explain", *argv, "--model", str(model), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_cli_explain_a_sample_not_in_the_run_names_some_that_are(cache_run, tmp_path, capsys) -> None:
    # with the run folder (several checkpoints) as with one of its folds: the same plain message
    for model in (cache_run, cache_run / "folds" / "seed0" / "toy__02"):
        assert main(["explain", "--sample", "toy/7/x", "--model", str(model), "-o", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: toy/7/x is not a sample of this run ({cache_run}, 6 samples)")
        assert "samples are e.g. toy/01/c0, toy/01/c1, toy/01/c2, toy/02/c0, toy/02/c1 (samples.csv" in err
        assert "checkpoint" not in err.split("samples are")[0].replace(str(cache_run), "")
