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
from hlora_mer.inference import explain as ex
from hlora_mer.inference.load import TrainedModel, load_trained
from hlora_mer.models.backbones import build_backbone
from hlora_mer.models.lora import lora_layers
from hlora_mer.models.mer_model import build_model
from hlora_mer.preprocess.cache import open_cache_dir
from hlora_mer.preprocess.run import PreprocessParams
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


# --------------------------------------------------------------------------------------------------
# Fig. 4: one scale, a colour bar, the difference and the size of the change


def test_both_backbones_share_one_pca_and_one_scale() -> None:
    rng = np.random.default_rng(1)
    untuned = rng.normal(size=(2, 3, 3, 1)) * rng.normal(size=6) + 0.01 * rng.normal(size=(2, 3, 3, 6))
    tuned = 3.0 * untuned  # the same pattern, three times as strong
    u, t = ex.shared_component(untuned, tuned)
    # separately scaled, both would be the same picture; on one scale the tuned one spans more
    np.testing.assert_allclose(ex.first_component(untuned), ex.first_component(tuned), atol=1e-9)
    assert min(u.min(), t.min()) == 0.0 and max(u.max(), t.max()) == 1.0
    assert np.ptp(t) == pytest.approx(3 * np.ptp(u), rel=1e-3)
    assert ex.relative_change(tuned, untuned) == pytest.approx(2.0)


def test_fig4_has_one_colour_bar_for_both_rows_and_the_difference_row(clip) -> None:
    trained = trained_of()
    pixels = ex.clip_tensor(trained, clip)[0]
    tuned = ex.backbone_tokens(trained.model.backbone, pixels)
    plain, note = ex.untuned_tokens(trained, pixels)
    change = ex.TuningChange(ex.relative_change(tuned.cls, plain.cls), ex.relative_change(tuned.patches, plain.patches))
    assert change.cls > 1e-3 and change.patches > 1e-3 and change.cls != change.patches
    u, t = ex.shared_component(plain.patches, tuned.patches)
    fig = ex.pca_figure(clip, t, u, apex_index=2, frame_numbers=None, labels=(note, "tuned"), title="c", change=change)
    rows = {name: [ax for ax in fig.axes if ax.get_label() == f"pca:{name}"] for name in ("untuned", "tuned")}
    rows["difference"] = [ax for ax in fig.axes if ax.get_label() == "pca:difference"]
    assert [len(r) for r in rows.values()] == [8, 8, 8]
    untuned_images = [ax.get_images()[0] for ax in rows["untuned"]]
    tuned_images = [ax.get_images()[0] for ax in rows["tuned"]]
    diff_images = [ax.get_images()[0] for ax in rows["difference"]]
    assert {im.get_clim() for im in untuned_images + tuned_images} == {(0.0, 1.0)}
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 2
    bars = [im.colorbar for ax in fig.axes for im in ax.get_images() if im.colorbar is not None]
    assert len(bars) == 2
    (shared,) = [b for b in bars if b.mappable in tuned_images + untuned_images]
    assert shared.mappable.get_clim() == (0.0, 1.0)
    assert {im.get_cmap().name for im in untuned_images + tuned_images} == {shared.cmap.name}
    assert [b.mappable in diff_images for b in bars].count(True) == 1
    for c, (ui, ti, di) in enumerate(zip(untuned_images, tuned_images, diff_images, strict=True)):
        np.testing.assert_allclose(ui.get_array(), u[c])
        np.testing.assert_allclose(ti.get_array(), t[c])
        np.testing.assert_allclose(di.get_array(), t[c] - u[c])
    assert np.abs(t - u).max() > 0
    low, high = diff_images[0].get_clim()
    assert low == -high == pytest.approx(-np.abs(t - u).max())
    suptitle = fig.get_suptitle()
    assert f"CLS token by {100 * change.cls:.0f} %" in suptitle
    assert f"patch tokens by {100 * change.patches:.0f} %" in suptitle


def test_explain_clip_reports_how_much_the_lora_changes_the_tokens(clip, tmp_path) -> None:
    trained = trained_of()
    result = ex.explain_clip(trained, clip, tmp_path, apex_index=2, name="c")
    pixels = ex.clip_tensor(trained, clip)[0]
    tuned = ex.backbone_tokens(trained.model.backbone, pixels)
    with ex.adapters_disabled(trained.model.backbone):
        plain = ex.backbone_tokens(trained.model.backbone, pixels)
    assert result.change is not None
    assert result.change.cls == pytest.approx(ex.relative_change(tuned.cls, plain.cls))
    assert result.change.patches == pytest.approx(ex.relative_change(tuned.patches, plain.patches))


# --------------------------------------------------------------------------------------------------
# Fig. 5: neighbours, non-neighbours and how far from uniform


def test_attention_spread_is_one_for_uniform_rows_and_zero_for_one_hot_rows() -> None:
    neighbours = np.array([[False, True, True, True], [True, False, True, True]])
    attention = np.array([[0.0, 1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0, 0.0]])
    entropy, deviation = ex.attention_spread(attention, neighbours)
    np.testing.assert_allclose(entropy, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(deviation, [0.0, 2 / 3], atol=1e-12)


@pytest.mark.parametrize("iffa", ["paper", "official"])
def test_fig5_hatches_the_non_neighbours_and_gives_each_rows_spread(iffa, clip) -> None:
    trained = trained_of(fusion={"variant": "full", "iffa": iffa, "num_neighbors": 3})
    x = ex.clip_tensor(trained, clip)
    _, attention, neighbours, shown = ex._attention_with_neighbours(trained.model, x)
    assert attention is not None and neighbours is not None
    if iffa == "paper":
        assert (neighbours.sum(axis=1) == 3).all() and not neighbours.diagonal().any()
        assert "k = 3 nearest frames" in shown
    else:
        idx = np.arange(8)
        np.testing.assert_array_equal(neighbours, np.abs(idx[:, None] - idx[None, :]) <= 1)
        assert "adjacent frames" in shown
    assert not attention[~neighbours].any()
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, atol=1e-5)
    fig = ex.attention_figure(
        clip, attention, apex_index=2, frame_numbers=None, title="c", neighbours=neighbours, shown=shown
    )
    (ax,) = [a for a in fig.axes if a.get_label() == "attention"]
    (image,) = ax.get_images()
    np.testing.assert_array_equal(np.ma.getmaskarray(image.get_array()), ~neighbours)
    hatched = {(round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in ax.patches if p.get_hatch()}
    assert hatched == set(zip(*np.nonzero(~neighbours), strict=True))
    entropy, deviation = ex.attention_spread(attention, neighbours)
    spread = [t.get_text() for t in ax.texts if t.get_gid() == "spread"]
    assert spread == [f"{h:.3f}      {d:.3f}" for h, d in zip(entropy, deviation, strict=True)]
    assert "hatched: not a neighbour" in fig.get_suptitle()


def test_figs_4_and_5_say_when_the_marked_frame_is_only_nearest_the_apex(clip, tmp_path) -> None:
    numbers = [3, 5, 8, 10, 13, 15, 18, 20]
    maps = np.random.default_rng(0).random((8, 2, 2))
    nearest = "nearest sampled frame to the apex (frame 10; apex: frame 9)"
    for apex_frame, marked in ((10, "apex (frame 10)"), (9, nearest)):
        pca = ex.pca_figure(
            clip, maps, maps, apex_index=3, frame_numbers=numbers, labels=("u", "t"), title="c", apex_frame=apex_frame
        )
        attention = ex.attention_figure(
            clip, np.full((8, 8), 1 / 8), apex_index=3, frame_numbers=numbers, title="c", apex_frame=apex_frame
        )
        for fig in (pca, attention):
            assert f"red: {marked}" in fig.get_suptitle()
            heads = {ax.get_title() for ax in fig.axes}
            short = "apex" if apex_frame == 10 else "nearest to apex"
            assert any(h.endswith(f"10\n{short}") for h in heads)
    trained = trained_of()
    result = ex.explain_clip(trained, clip, tmp_path, apex_index=3, frame_numbers=numbers, apex_frame=9)
    assert result.marked == nearest
