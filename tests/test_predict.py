"""``hlora-mer predict`` with a tiny model trained on every subject: inputs, outputs, failures, refusals."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from align_fixtures import FixedDetector
from apply_fixtures import APPLY_CLASSES as CLASSES
from apply_fixtures import APPLY_FRAMES, APPLY_SCHEME
from conftest import TINY_IMAGE
from hlora_mer.cli import main
from hlora_mer.data.sampling import select_frames
from hlora_mer.errors import UserError
from hlora_mer.inference.load import load_trained
from hlora_mer.inference.predict import (
    ClipRequest,
    default_cache_dir,
    predict_clips,
    requests_from_inputs,
)
from hlora_mer.training.clip_dataset import AlignedClipDataset, normalize_clip
from hlora_mer.training.runner import run_experiment
from train_fixtures import tiny_experiment, tiny_source


@pytest.fixture
def model(apply_run) -> Path:
    """The shared all-subjects run (``apply_fixtures``): detector none, 28 px, T = 6, apex sampling, hde_3cls."""
    return apply_run


def frames(n: int = 12, seed: int = 0, size: int = TINY_IMAGE) -> list[np.ndarray]:
    """Distinct noise frames, already the model's size (the 'none' detector then leaves pixels as they are)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def frame_folder(folder: Path, images: list[np.ndarray], first: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        Image.fromarray(image).save(folder / f"img{first + k}.png")
    return folder


def predict_cli(*args: str) -> int:
    return main(["-q", "predict", *map(str, args)])


def softmax_of_model(model, clip: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(normalize_clip(clip)[None]), dim=-1)[0].numpy()


# --------------------------------------------------------------------------------------------------
# The path from files to probabilities


def test_frame_folder_prediction_is_the_model_on_the_clip_sampled_as_in_training(model, tmp_path) -> None:
    images = frames(12)
    folder = frame_folder(tmp_path / "clip", images, first=5)
    trained = load_trained(model)
    requests = requests_from_inputs([folder], onset=6, offset=15)
    report = predict_clips(trained, requests, tmp_path / "cache")
    (clip,) = report.clips
    assert clip.error is None and (clip.onset, clip.offset) == (6, 15)
    # the frames are chosen by the training sampler over onset..offset
    assert clip.frames == list(select_frames(range(5, 17), 6, 15, trained.num_frames))
    probs = np.array([clip.probabilities[label] for label in trained.labels])
    assert list(clip.probabilities) == list(CLASSES) and clip.prediction == CLASSES[int(probs.argmax())]

    # the model's own forward on those source frames (a 28 px frame passes the 'none' alignment unchanged)
    direct = softmax_of_model(trained.model, np.stack([images[n - 5] for n in clip.frames]))
    np.testing.assert_allclose(probs, direct, rtol=1e-5, atol=1e-6)
    # and on the aligned clip as training reads it from the cache
    table = pd.DataFrame({"sample_id": [clip.cache_key], "subject": [""], "label_index": [0]})
    aligned = AlignedClipDataset(table, report.cache_dir, num_frames=trained.num_frames)[0]["clip"]
    with torch.no_grad():
        cached = torch.softmax(trained.model(aligned[None]), dim=-1)[0].numpy()
    np.testing.assert_allclose(probs, cached, rtol=1e-5, atol=1e-6)


def test_a_video_and_a_frame_folder_on_the_command_line(model, tmp_path, capsys) -> None:
    pytest.importorskip("av")
    from hlora_mer.data.video import read_video_frames, write_video

    video = tmp_path / "clip.mp4"
    write_video(video, frames(10, seed=1))
    folder = frame_folder(tmp_path / "folder", frames(9, seed=2))
    out = tmp_path / "predictions.csv"
    assert predict_cli(video, folder, "--model", model, "--cache", tmp_path / "cache", "--out", out) == 0
    screen = capsys.readouterr().out
    assert "clip" in screen and "prediction" in screen and all(label in screen for label in CLASSES)
    assert "2 clip(s): 2 predicted, 0 failed" in screen

    rows = list(csv.DictReader(out.open()))
    assert [r["clip"] for r in rows] == [str(video), str(folder)]
    assert list(rows[0]) == [
        "clip",
        "prediction",
        *(f"p_{c}" for c in CLASSES),
        *"source onset offset frames error".split(),
    ]
    for row in rows:
        probs = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        assert abs(probs.sum() - 1) < 1e-4 and row["prediction"] == CLASSES[int(probs.argmax())] and not row["error"]
    # the whole clip by default: 0..9 of the video (frames numbered from 0), 1..9 of the folder
    assert (rows[0]["onset"], rows[0]["offset"], rows[1]["onset"], rows[1]["offset"]) == ("0", "9", "1", "9")

    # the video's probabilities are the model's on the decoded frames the sampler chose
    trained = load_trained(model)
    chosen = [int(n) for n in rows[0]["frames"].split()]
    assert chosen == list(select_frames(range(10), 0, 9, trained.num_frames))
    direct = softmax_of_model(trained.model, read_video_frames(video, chosen))
    np.testing.assert_allclose([float(rows[0][f"p_{c}"]) for c in CLASSES], direct, atol=2e-6)


def test_a_manifest_with_bad_clips_predicts_the_good_ones_and_says_why_the_others_failed(
    model, tmp_path, capsys
) -> None:
    frame_folder(tmp_path / "good", frames(12, seed=3))
    frame_folder(tmp_path / "also_good", frames(6, seed=4), first=100)
    frame_folder(tmp_path / "single", frames(1, seed=5))
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video")
    (tmp_path / "empty").mkdir()
    manifest = tmp_path / "clips.csv"
    manifest.write_text(
        "path,onset,offset,id\n"
        "good,2,11,first\n"
        "broken.mp4,,,broken\n"
        "single,,,single\n"
        "missing_folder,,,missing\n"
        "empty,,,empty\n"
        "good,seven,,badonset\n"
        f"{tmp_path / 'also_good'},,,second\n"
    )
    out = tmp_path / "out.json"
    code = predict_cli(manifest, "--model", model, "--cache", tmp_path / "cache", "--out", out)
    screen = capsys.readouterr().out
    assert code == 1  # some clips failed
    reasons = {
        "broken": "cannot decode video",
        "single": "too few frames: 1 frame(s)",
        "missing": "missing_folder does not exist",
        "empty": "no frames in",
        "badonset": "onset 'seven' is not a frame number",
    }
    for name, reason in reasons.items():
        line = next(line for line in screen.splitlines() if line.startswith(f"failed: {name}: "))
        assert reason in line, line
    assert "7 clip(s): 2 predicted, 5 failed" in screen

    data = json.loads(out.read_text())
    by_name = {c["clip"]: c for c in data["clips"]}
    assert list(by_name) == ["first", "broken", "single", "missing", "empty", "badonset", "second"]
    assert data["labels"] == list(CLASSES) and data["summary"] == {"clips": 7, "predicted": 2, "failed": 5}
    for name in ("first", "second"):
        clip = by_name[name]
        assert clip["error"] is None and set(clip["probabilities"]) == set(CLASSES)
        assert clip["prediction"] == max(clip["probabilities"], key=clip["probabilities"].get)
    assert (by_name["first"]["onset"], by_name["first"]["offset"], by_name["second"]["onset"]) == (2, 11, 100)
    for name, reason in reasons.items():
        assert reason in by_name[name]["error"] and by_name[name]["probabilities"] is None


def test_a_clip_without_a_face_fails_and_the_others_go_on(model, tmp_path) -> None:
    trained = load_trained(model)
    trained.params = dataclasses.replace(trained.params, detector="dlib")  # as if trained on aligned faces
    face = frame_folder(tmp_path / "face", frames(8, seed=6))
    blank = frame_folder(tmp_path / "blank", [np.full((TINY_IMAGE, TINY_IMAGE, 3), 90, np.uint8)] * 8)
    requests = requests_from_inputs([face, blank])
    report = predict_clips(trained, requests, tmp_path / "cache", workers=1, detector=FixedDetector())
    assert report.clips[0].error is None and report.clips[0].probabilities is not None
    assert "no face found" in report.clips[1].error and report.clips[1].probabilities is None
    assert [c.name for c in report.failed] == [str(blank)]


def test_aligned_clips_are_reused_until_their_files_change(model, tmp_path, caplog) -> None:
    trained = load_trained(model)
    folder = frame_folder(tmp_path / "clip", frames(10, seed=7))
    requests = requests_from_inputs([folder])
    with caplog.at_level(logging.INFO, logger="hlora_mer.inference.predict"):
        first = predict_clips(trained, requests, tmp_path / "cache").clips[0].probabilities
        assert "1 new, 0 from the cache" in caplog.text
        caplog.clear()
        assert predict_clips(trained, requests, tmp_path / "cache").clips[0].probabilities == first
        assert "0 new, 1 from the cache" in caplog.text
        caplog.clear()
        shutil.rmtree(folder)
        changed = frames(10, seed=8)
        frame_folder(folder, changed)
        clip = predict_clips(trained, requests, tmp_path / "cache").clips[0]
        assert "1 new, 0 from the cache" in caplog.text
    assert clip.probabilities != first
    direct = softmax_of_model(trained.model, np.stack([changed[n - 1] for n in clip.frames]))
    np.testing.assert_allclose([clip.probabilities[c] for c in CLASSES], direct, rtol=1e-5, atol=1e-6)


def test_the_default_cache_is_under_the_users_cache_folder(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "hlora-mer" / "predict"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "hlora-mer" / "predict"


# --------------------------------------------------------------------------------------------------
# Mistakes in the command: exit 2, one message, nothing done


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "{tmp}/predictions.txt"], "unknown format '.txt'; name the file .csv or .json"),
        (["--out", "{tmp}"], "it is a folder, not a file"),
        (["{tmp}/b", "--onset", "3"], "--onset applies to one video or frame folder"),
        (["--onset", "5", "--offset", "2"], "--offset 2 is before --onset 5"),
        (["{tmp}/nothere.mp4"], "nothere.mp4 does not exist"),
        (["{tmp}/notes.txt"], "is neither a video"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_mistakes_are_refused_before_any_work(model, tmp_path, capsys, extra, message) -> None:
    frame_folder(tmp_path / "a", frames(8))
    frame_folder(tmp_path / "b", frames(8))
    (tmp_path / "notes.txt").write_text("hello")
    args = [a.format(tmp=tmp_path) for a in extra]
    code = predict_cli(tmp_path / "a", *args, "--model", model, "--cache", tmp_path / "cache")
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # nothing aligned, nothing written


def test_a_manifest_without_a_path_column_is_refused(model, tmp_path, capsys) -> None:
    manifest = tmp_path / "clips.csv"
    manifest.write_text("file,onset\na,1\n")
    assert predict_cli(manifest, "--model", model, "--cache", tmp_path / "cache") == 2
    assert "has no 'path' column (found: file, onset)" in capsys.readouterr().err
    manifest.write_text("path,id\na,x\nb,x\n")
    assert predict_cli(manifest, "--model", model, "--cache", tmp_path / "cache") == 2
    assert "appear more than once: x" in capsys.readouterr().err


def test_videos_without_pyav_are_one_message(model, tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(UserError, match="needs PyAV: pip install 'hlora-mer\\[video\\]'"):
        predict_clips(load_trained(model), requests_from_inputs([tmp_path / "clip.mp4"]), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_requests_name_clips_as_the_user_did(tmp_path) -> None:
    folder = frame_folder(tmp_path / "a", frames(3))
    (request,) = requests_from_inputs([folder], onset=2)
    assert request == ClipRequest(str(folder), str(folder), "frames", 2, None, None)
    with pytest.raises(UserError, match="does not exist"):
        requests_from_inputs([tmp_path / "b"])


# --------------------------------------------------------------------------------------------------
# Models that do not fit what they are asked to do


def test_a_checkpoint_trained_on_other_backbone_weights_is_refused_unless_allowed(model, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(model, run)
    meta_path = next(run.rglob("checkpoint.json"))
    meta = json.loads(meta_path.read_text())
    meta["backbone_weights"] = "/models/dinov2@0123456789abcdef"  # the backbone has other weights now
    meta_path.write_text(json.dumps(meta))
    folder = frame_folder(tmp_path / "clip", frames(8))
    assert predict_cli(folder, "--model", run, "--cache", tmp_path / "cache") == 2
    err = capsys.readouterr().err
    assert "checkpoint: backbone test_vit_reg (weights /models/dinov2@0123456789abcdef)" in err
    assert "model:      backbone test_vit_reg (weights random-init:test_vit_reg:seed=0)" in err
    assert "--allow-mismatch" in err and "Traceback" not in err
    assert predict_cli(folder, "--model", run, "--cache", tmp_path / "cache", "--allow-mismatch") == 0


def test_a_model_with_other_classes_is_refused(model, tmp_path, capsys) -> None:
    folder = frame_folder(tmp_path / "clip", frames(8))
    base = [folder, "--model", model, "--cache", tmp_path / "cache"]
    assert predict_cli(*base, "--expect-labels", "negative,positive,surprise") == 2
    err = capsys.readouterr().err
    assert "predicts ['happiness', 'surprise', 'others'] (label scheme hde_3cls)" in err
    assert "--expect-labels asks for ['negative', 'positive', 'surprise']" in err
    assert predict_cli(*base, "--label-scheme", "casme2_5cls") == 2
    err = capsys.readouterr().err
    assert "(label scheme hde_3cls)" in err and "label scheme casme2_5cls has classes ['happiness'," in err
    assert predict_cli(*base, "--label-scheme", "no_such_scheme") == 2
    assert "unknown label scheme 'no_such_scheme'" in capsys.readouterr().err
    # the same classes, in any order, or the model's own scheme, are accepted
    assert predict_cli(*base, "--expect-labels", "others, happiness,surprise") == 0
    assert predict_cli(*base, "--label-scheme", APPLY_SCHEME) == 0


@pytest.fixture(scope="module")
def loso(tmp_path_factory) -> Path:
    """A LOSO run of 2 folds (a checkpoint each), label scheme casme2_3cls."""
    run = tmp_path_factory.mktemp("loso") / "run"
    run_experiment(tiny_experiment(), run, tiny_source(subjects=2))
    return run


def test_a_run_with_several_checkpoints_asks_for_one(loso, tmp_path, capsys) -> None:
    folder = frame_folder(tmp_path / "clip", frames(8))
    assert predict_cli(folder, "--model", loso, "--cache", tmp_path / "cache") == 2
    err = capsys.readouterr().err
    assert "holds 2 checkpoints" in err and "toy__01/checkpoint" in err and "toy__02/checkpoint" in err
    fold = loso / "folds" / "seed0" / "toy__01"
    assert predict_cli(folder, "--model", fold, "--cache", tmp_path / "cache") == 0
    assert f"model: {fold / 'checkpoint'}" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# A dataset root


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    pytest.importorskip("skimage")  # SynthME draws its faces from scikit-image's sample image
    from hlora_mer.synthme.generate import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(subjects=2, clips_per_class=1, frame_size=32, min_frames=8, max_frames=10))
    return root


def test_a_dataset_is_predicted_and_scored_with_the_models_label_scheme(model, synth_root, tmp_path, capsys) -> None:
    from hlora_mer.evaluation.metrics import scores

    out = tmp_path / "out.csv"
    code = predict_cli(synth_root, "--dataset", "casme2", "--model", model, "--cache", tmp_path / "c", "-o", out)
    screen = capsys.readouterr().out
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10 and all(r["clip"].startswith("casme2/") for r in rows)
    # hde_3cls (the model's scheme) classifies 6 of SynthME's 10 clips; disgust and repression have no class
    labelled = [r for r in rows if r["truth"]]
    assert len(labelled) == 6 and {r["truth"] for r in labelled} == set(CLASSES)
    assert "4 clip(s) have no class in label scheme hde_3cls; predicted, not scored" in screen
    expected = scores(
        [CLASSES.index(r["truth"]) for r in labelled], [CLASSES.index(r["prediction"]) for r in labelled], 3
    )
    assert f"accuracy {expected['acc']:.3f}, UF1 {expected['uf1']:.3f} over 6 labelled clip(s)" in screen
    assert screen.splitlines()[1].split()[:3] == ["clip", "truth", "prediction"]
    # the root without --dataset is a folder without frames: said so, with the way out
    assert predict_cli(synth_root, "--model", model, "--cache", tmp_path / "c") == 1
    assert "for a dataset root, add --dataset NAME" in capsys.readouterr().out


def test_a_dataset_with_a_scheme_that_does_not_cover_it_is_refused(loso, synth_root, tmp_path, capsys) -> None:
    fold = loso / "folds" / "seed0" / "toy__01"
    args = [synth_root, "--dataset", "casme2", "--model", fold, "--cache", tmp_path / "c"]
    assert predict_cli(*args, "--label-scheme", "samm_3cls") == 2
    assert "label scheme samm_3cls does not cover dataset 'casme2'" in capsys.readouterr().err
    assert predict_cli(*args, "--onset", "3") == 2
    assert "--onset cannot be used with --dataset" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_inputs_may_follow_the_options(model, tmp_path, capsys) -> None:
    a = frame_folder(tmp_path / "a", frames(9, seed=5))
    b = frame_folder(tmp_path / "b", frames(9, seed=6))
    assert predict_cli(a, "--model", model, "--cache", tmp_path / "cache", b) == 0
    assert "2 clip(s): 2 predicted, 0 failed" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Every preprocessing setting the checkpoint records reaches the clip; outputs in the model's label order

PEAK = 8  # the frame of the peak clip that differs most from its onset (its apex)


def peak_frames(n: int = 14, height: int = 20) -> list[np.ndarray]:
    """Non-square (28 x ``height``) frames, near-copies of the first but frame ``PEAK``, which differs most: the
    apex that ``estimate_apex`` finds; the padding to the square shows the ``fill`` grey."""
    rng = np.random.default_rng(11)
    base = rng.integers(40, 200, (height, TINY_IMAGE, 3)).astype(np.int16)
    out = []
    for k in range(1, n + 1):
        frame = base + rng.integers(-3, 4, base.shape)
        if k == PEAK:
            frame = 255 - frame
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


def _with_preprocess(model: Path, tmp_path: Path, changes: dict) -> Path:
    """A copy of the model's checkpoint whose recorded preprocessing has ``changes`` (as a model trained with
    them would record)."""
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(load_trained(model).checkpoint, checkpoint)
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    meta["preprocess"].update(changes)
    (checkpoint / "checkpoint.json").write_text(json.dumps(meta))
    return checkpoint


# (field, what the checkpoint records beyond the trained model's, its value, the field's default, apex given)
_SMALL_FACE = {"eyes": ((10, 6), (18, 6)), "mouth": ((11, 14), (17, 14))}
FIELDS = [
    ("num_frames", {}, APPLY_FRAMES, 8, PEAK),
    ("size", {}, TINY_IMAGE, 224, PEAK),
    ("sampling", {}, "apex", "uniform", PEAK),
    ("detector", {}, "none", "dlib", PEAK),
    ("fill", {"fill": 37}, 37, 128, PEAK),
    ("margin", {"detector": "dlib", "margin": 1.3}, 1.3, 0.5, PEAK),
    ("estimate_apex", {"estimate_apex": "max_grey_diff_from_onset"}, True, False, None),
]


@pytest.mark.parametrize(("field", "changes", "value", "default", "apex"), FIELDS, ids=[f[0] for f in FIELDS])
def test_predict_prepares_clips_with_every_preprocessing_setting_of_the_checkpoint(
    field, changes, value, default, apex, model, tmp_path
) -> None:
    from hlora_mer.inference.predict import prepare_clip
    from hlora_mer.preprocess.apex import APEX_ESTIMATE_METHOD
    from hlora_mer.preprocess.cache import open_cache_dir
    from hlora_mer.preprocess.run import PreprocessParams

    if field == "estimate_apex":
        changes = {"estimate_apex": APEX_ESTIMATE_METHOD}
    checkpoint = _with_preprocess(model, tmp_path, changes)
    folder = frame_folder(tmp_path / "clip", peak_frames())
    detector = FixedDetector(**_SMALL_FACE) if changes.get("detector") == "dlib" else None
    trained = load_trained(checkpoint)
    report = predict_clips(trained, requests_from_inputs([folder], apex=apex), tmp_path / "cache", detector=detector)
    (clip,) = report.clips
    assert clip.error is None, clip.error
    got = open_cache_dir(report.cache_dir).load_clip(clip.cache_key)

    # what the training clips went through, written out here, not read back from the checkpoint
    recorded = {"num_frames": APPLY_FRAMES, "size": TINY_IMAGE, "detector": "none", "sampling": "apex"}
    recorded.update({k: v for k, v in changes.items() if k != "estimate_apex"})
    expected_params = PreprocessParams(**recorded, estimate_apex=field == "estimate_apex")
    assert getattr(expected_params, field) == value
    expected, numbers = prepare_clip(
        dataclasses.replace(trained, params=expected_params),
        folder,
        apex=apex,
        cache_dir=tmp_path / "c1",
        detector=detector,
    )
    np.testing.assert_array_equal(got, expected)
    assert clip.frames == numbers and got.shape == (APPLY_FRAMES, TINY_IMAGE, TINY_IMAGE, 3)
    if field in ("sampling", "estimate_apex"):
        assert PEAK in clip.frames  # the apex, given or estimated, is sampled
    # the field's default would have made another clip, so the check above can fail
    if field in ("num_frames", "size"):
        return  # the default's clip does not fit the model at all (load_trained refuses it)
    other_params = dataclasses.replace(expected_params, **{field: default})
    if field == "detector":
        other_params = dataclasses.replace(other_params, margin=0.5)
    other, other_numbers = prepare_clip(
        dataclasses.replace(trained, params=other_params),
        folder,
        apex=apex,
        cache_dir=tmp_path / "c2",
        detector=FixedDetector(**_SMALL_FACE) if other_params.detector == "dlib" else None,
    )
    assert other_numbers != numbers or not np.array_equal(other, expected)
    probs = np.array([clip.probabilities[c] for c in CLASSES])
    np.testing.assert_allclose(probs, softmax_of_model(trained.model, expected), rtol=1e-5, atol=1e-6)


def test_outputs_follow_the_models_label_order(model, tmp_path, capsys) -> None:
    assert list(CLASSES) != sorted(CLASSES)  # the fixture can tell the model's order from the alphabet's
    folder = frame_folder(tmp_path / "clip", frames(10, seed=21))
    base = [folder, "--model", model, "--cache", tmp_path / "cache", "--apex", "4"]
    assert predict_cli(*base, "-o", tmp_path / "p.csv") == 0
    screen = capsys.readouterr().out.splitlines()
    assert predict_cli(*base, "-o", tmp_path / "p.json") == 0
    header = screen[1].split()
    assert header == ["clip", "prediction", *CLASSES]
    trained = load_trained(model)
    (row,) = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(row)[2:5] == [f"p_{c}" for c in CLASSES]
    direct = softmax_of_model(
        trained.model, np.stack([frames(10, seed=21)[n - 1] for n in map(int, row["frames"].split())])
    )
    np.testing.assert_allclose([float(row[f"p_{c}"]) for c in CLASSES], direct, atol=2e-6)
    assert row["prediction"] == CLASSES[int(direct.argmax())]
    on_screen = [float(v) for v in screen[2].split()[2:]]
    np.testing.assert_allclose(on_screen, direct, atol=6e-4)
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["labels"] == list(CLASSES)
    (clip,) = data["clips"]
    assert list(clip["probabilities"]) == list(CLASSES)
    np.testing.assert_allclose([clip["probabilities"][c] for c in CLASSES], direct, atol=2e-6)


# --------------------------------------------------------------------------------------------------
# A model trained with its own dlib landmark model


@pytest.fixture(scope="module")
def landmark_run(tmp_path_factory) -> tuple[Path, Path]:
    """A model trained with data.landmark_model: a file of another name and place than dlib's default."""
    pytest.importorskip("dlib")
    from apply_fixtures import apply_experiment, apply_source
    from hlora_mer.preprocess.landmarks import find_dlib_model

    base = tmp_path_factory.mktemp("landmarks")
    model_file = base / "models" / "my_landmarks.dat"
    model_file.parent.mkdir()
    model_file.symlink_to(find_dlib_model())
    run = base / "run"
    run_experiment(apply_experiment(data={"detector": "dlib", "landmark_model": str(model_file)}), run, apply_source())
    return run, model_file


def test_a_custom_landmark_model_is_carried_in_the_checkpoint_and_used_or_its_absence_refused(
    landmark_run, tmp_path, capsys
) -> None:
    pytest.importorskip("skimage")
    from align_fixtures import make_clip, similarity
    from hlora_mer.files import sha256_file
    from hlora_mer.inference.load import checkpoint_meta

    run, model_file = landmark_run
    checkpoint, meta = checkpoint_meta(run)
    recorded = meta["preprocess"]["landmark_model"]
    assert recorded["path"] == str(model_file) and recorded["sha256"] == sha256_file(model_file)

    folder = frame_folder(tmp_path / "face", make_clip(similarity(5, 0.8, 10, -5), 7))
    cache = tmp_path / "cache"
    assert predict_cli(folder, "--model", run, "--cache", cache, "--apex", "3") == 0
    (params_file,) = cache.glob("*/params.json")
    assert json.loads(params_file.read_text())["landmark_model"] == recorded  # aligned with the model's own file
    capsys.readouterr()

    model_file.unlink()  # gone: refused, never the default model
    assert predict_cli(folder, "--model", run, "--cache", tmp_path / "c2") == 2
    err = capsys.readouterr().err
    assert f"trained with the dlib landmark model {model_file}, which is not there any more" in err
    assert "Traceback" not in err and not (tmp_path / "c2").exists()
    pytest.importorskip("matplotlib")
    assert main(["-q", "explain", str(folder), "--model", str(run), "-o", str(tmp_path / "fig")]) == 2
    assert "which is not there any more" in capsys.readouterr().err

    model_file.write_bytes(b"another model")  # another file at the same place: refused too
    assert predict_cli(folder, "--model", run, "--cache", tmp_path / "c2") == 2
    assert "but the file there now is another one" in capsys.readouterr().err

    old = tmp_path / "old"  # a checkpoint written when only the name and size were recorded
    shutil.copytree(checkpoint, old)
    meta["preprocess"]["landmark_model"] = {"name": model_file.name, "size": recorded["size"]}
    (old / "checkpoint.json").write_text(json.dumps(meta))
    assert predict_cli(folder, "--model", old, "--cache", tmp_path / "c2") == 2
    assert "does not record where that file was" in capsys.readouterr().err


def test_a_folder_whose_name_is_not_utf8_is_predicted_and_written(model, tmp_path, capsys) -> None:
    import os

    folder = frame_folder(tmp_path / os.fsdecode(b"clip-\xff\xfe"), frames(8, seed=9))
    out = tmp_path / "p.csv"
    assert predict_cli(folder, "--model", model, "--cache", tmp_path / "cache", "--apex", "3", "-o", out) == 0
    screen = capsys.readouterr().out
    assert "1 clip(s): 1 predicted, 0 failed" in screen and "clip-\ufffd\ufffd" in screen  # shown, replaced
    assert bytes(folder).endswith(b"clip-\xff\xfe") and bytes(folder) in out.read_bytes()  # written as it is
    (row,) = csv.DictReader(out.open(encoding="utf-8", errors="surrogateescape"))
    assert row["clip"] == row["source"] == str(folder) and row["prediction"] in CLASSES
    assert predict_cli(folder, "--model", model, "--cache", tmp_path / "cache", "-o", tmp_path / "p.json") == 0
    assert json.loads((tmp_path / "p.json").read_text())["clips"][0]["clip"] == str(folder)


# --------------------------------------------------------------------------------------------------
# Clips that are not quite what they seem: said so, never passed over


def test_a_video_that_ends_before_its_header_says_is_predicted_with_a_warning(model, tmp_path, capsys) -> None:
    pytest.importorskip("av")
    from hlora_mer.data.video import count_video_frames, write_video

    video = tmp_path / "cut.avi"
    write_video(video, frames(20, seed=12))
    with video.open("r+b") as handle:  # a download cut off: the AVI header still says 20 frames
        handle.truncate(int(video.stat().st_size * 0.6))
    left = count_video_frames(video)
    assert 2 <= left < 20
    out = tmp_path / "p.json"
    assert predict_cli(video, "--model", model, "--cache", tmp_path / "cache", "-o", out) == 0
    captured = capsys.readouterr()
    said = f"the video's header says 20 frames but only {left} decode (0..{left - 1})"
    assert said in captured.err and said in captured.out  # a warning, and a note under the table
    data = json.loads(out.read_text())
    assert any(said in n for n in data["notes"]) and data["clips"][0]["offset"] == left - 1


def test_a_range_past_the_end_reports_the_requested_and_the_available_frames(model, tmp_path, capsys) -> None:
    pytest.importorskip("av")
    from hlora_mer.data.video import write_video

    video = tmp_path / "short.mp4"
    write_video(video, frames(14, seed=13))
    base = ["--model", model, "--cache", tmp_path / "cache", "--onset", "0", "--offset", "100"]
    assert predict_cli(video, *base) == 1
    out = capsys.readouterr().out
    assert "frames 0..100 were asked for, but the video decodes to 14 frames (0..13)" in out
    folder = frame_folder(tmp_path / "folder", frames(12, seed=14))  # frames 1..12: predicted on what is there
    assert predict_cli(folder, *base) == 0
    err = capsys.readouterr().err
    assert "frames 0..100 were asked for, but the folder holds 1..12; predicted on the 12 frame(s) there" in err


def test_an_apex_outside_the_clip_is_refused(model, tmp_path, capsys) -> None:
    folder = frame_folder(tmp_path / "clip", frames(12, seed=15))
    args = [folder, "--model", model, "--cache", tmp_path / "cache", "--onset", "2", "--offset", "8"]
    assert predict_cli(*args, "--apex", "10") == 1
    assert "apex 10 is outside the clip's onset..offset (2..8)" in capsys.readouterr().out
    manifest = tmp_path / "clips.csv"
    manifest.write_text(f"path,onset,offset,apex,id\n{folder},3,9,2,early\n{folder},3,9,5,inside\n")
    assert predict_cli(manifest, "--model", model, "--cache", tmp_path / "cache") == 1
    out = capsys.readouterr().out
    assert "failed: early: apex 2 is outside the clip's onset..offset (3..9)" in out
    assert "2 clip(s): 1 predicted, 1 failed" in out


def test_frames_of_two_sizes_in_one_clip_are_reported(model, tmp_path, capsys) -> None:
    images = frames(10, seed=16)
    images[6:] = [image[:20] for image in images[6:]]  # the last 4 frames 28 x 20
    folder = frame_folder(tmp_path / "mixed", images)
    assert predict_cli(folder, "--model", model, "--cache", tmp_path / "cache", "--apex", "4") == 0
    captured = capsys.readouterr()
    said = "its frames have 2 sizes: 28x20 (4 frame(s)), 28x28 (6 frame(s))"
    assert said in captured.err and said in captured.out


def test_a_model_trained_on_a_composite_of_the_users_own_yaml_scores_a_dataset(synth_root, tmp_path, capsys) -> None:
    from apply_fixtures import apply_experiment, apply_source

    composite = tmp_path / "elsewhere" / "mine.yaml"
    composite.parent.mkdir()
    composite.write_text(
        "name: my_three\n"
        "description: happiness, surprise and others of CASME II\n"
        f"classes: [{', '.join(CLASSES)}]\n"
        "members:\n"
        "  casme2:\n"
        "    labels: {happiness: happiness, surprise: surprise, others: others}\n"
        "    drop: [disgust, repression, fear, sadness]\n"
    )
    cfg = apply_experiment(data={"composite": str(composite), "datasets": ["casme2"], "label_scheme": "my_three"})
    run_experiment(cfg, tmp_path / "run", apply_source())
    composite.unlink()  # the model travels without the YAML: its checkpoint carries the scheme
    out = tmp_path / "out.csv"
    args = [synth_root, "--dataset", "casme2", "--model", tmp_path / "run", "--cache", tmp_path / "c", "-o", out]
    assert predict_cli(*args) == 0
    captured = capsys.readouterr()
    assert "not known" not in captured.err
    assert "4 clip(s) have no class in label scheme my_three; predicted, not scored" in captured.out
    assert "over 6 labelled clip(s)" in captured.out and "label scheme my_three" in captured.out
    rows = list(csv.DictReader(out.open()))
    truth = {r["clip"]: r["truth"] for r in rows if r["truth"]}
    assert sorted(truth.values()) == sorted(CLASSES * 2)
    assert predict_cli(*args, "--label-scheme", "my_three") == 0  # naming the model's own scheme works too
