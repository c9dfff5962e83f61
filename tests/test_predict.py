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
from conftest import TINY_IMAGE
from hlora_mer.cli import main
from hlora_mer.data.sampling import select_frames
from hlora_mer.errors import UserError
from hlora_mer.inference import load_trained
from hlora_mer.predict import (
    ClipRequest,
    default_cache_dir,
    predict_clips,
    requests_from_inputs,
)
from hlora_mer.training.clip_dataset import AlignedClipDataset, normalize_clip
from hlora_mer.training.runner import run_experiment
from train_fixtures import CLASSES, tiny_experiment, tiny_source


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """An all-subjects run (one checkpoint: ``runs / "all"``), detector none, 28 px, label scheme casme2_3cls."""
    base = tmp_path_factory.mktemp("runs")
    run_experiment(tiny_experiment(eval={"protocol": "all"}), base / "all", tiny_source(subjects=2))
    return base


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


def test_frame_folder_prediction_is_the_model_on_the_clip_sampled_as_in_training(runs, tmp_path) -> None:
    images = frames(12)
    folder = frame_folder(tmp_path / "clip", images, first=5)
    trained = load_trained(runs / "all")
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


def test_a_video_and_a_frame_folder_on_the_command_line(runs, tmp_path, capsys) -> None:
    pytest.importorskip("av")
    from hlora_mer.data.video import read_video_frames, write_video

    video = tmp_path / "clip.mp4"
    write_video(video, frames(10, seed=1))
    folder = frame_folder(tmp_path / "folder", frames(9, seed=2))
    out = tmp_path / "predictions.csv"
    assert predict_cli(video, folder, "--model", runs / "all", "--cache", tmp_path / "cache", "--out", out) == 0
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
    trained = load_trained(runs / "all")
    chosen = [int(n) for n in rows[0]["frames"].split()]
    assert chosen == list(select_frames(range(10), 0, 9, trained.num_frames))
    direct = softmax_of_model(trained.model, read_video_frames(video, chosen))
    np.testing.assert_allclose([float(rows[0][f"p_{c}"]) for c in CLASSES], direct, atol=2e-6)


def test_a_manifest_with_bad_clips_predicts_the_good_ones_and_says_why_the_others_failed(
    runs, tmp_path, capsys
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
    code = predict_cli(manifest, "--model", runs / "all", "--cache", tmp_path / "cache", "--out", out)
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


def test_a_clip_without_a_face_fails_and_the_others_go_on(runs, tmp_path) -> None:
    trained = load_trained(runs / "all")
    trained.params = dataclasses.replace(trained.params, detector="dlib")  # as if trained on aligned faces
    face = frame_folder(tmp_path / "face", frames(8, seed=6))
    blank = frame_folder(tmp_path / "blank", [np.full((TINY_IMAGE, TINY_IMAGE, 3), 90, np.uint8)] * 8)
    requests = requests_from_inputs([face, blank])
    report = predict_clips(trained, requests, tmp_path / "cache", workers=1, detector=FixedDetector())
    assert report.clips[0].error is None and report.clips[0].probabilities is not None
    assert "no face found" in report.clips[1].error and report.clips[1].probabilities is None
    assert [c.name for c in report.failed] == [str(blank)]


def test_aligned_clips_are_reused_until_their_files_change(runs, tmp_path, caplog) -> None:
    trained = load_trained(runs / "all")
    folder = frame_folder(tmp_path / "clip", frames(10, seed=7))
    requests = requests_from_inputs([folder])
    with caplog.at_level(logging.INFO, logger="hlora_mer.predict"):
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
def test_mistakes_are_refused_before_any_work(runs, tmp_path, capsys, extra, message) -> None:
    frame_folder(tmp_path / "a", frames(8))
    frame_folder(tmp_path / "b", frames(8))
    (tmp_path / "notes.txt").write_text("hello")
    args = [a.format(tmp=tmp_path) for a in extra]
    code = predict_cli(tmp_path / "a", *args, "--model", runs / "all", "--cache", tmp_path / "cache")
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # nothing aligned, nothing written


def test_a_manifest_without_a_path_column_is_refused(runs, tmp_path, capsys) -> None:
    manifest = tmp_path / "clips.csv"
    manifest.write_text("file,onset\na,1\n")
    assert predict_cli(manifest, "--model", runs / "all", "--cache", tmp_path / "cache") == 2
    assert "has no 'path' column (found: file, onset)" in capsys.readouterr().err
    manifest.write_text("path,id\na,x\nb,x\n")
    assert predict_cli(manifest, "--model", runs / "all", "--cache", tmp_path / "cache") == 2
    assert "appear more than once: x" in capsys.readouterr().err


def test_videos_without_pyav_are_one_message(runs, tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(UserError, match="needs PyAV: pip install 'hlora-mer\\[video\\]'"):
        predict_clips(load_trained(runs / "all"), requests_from_inputs([tmp_path / "clip.mp4"]), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_requests_name_clips_as_the_user_did(tmp_path) -> None:
    folder = frame_folder(tmp_path / "a", frames(3))
    (request,) = requests_from_inputs([folder], onset=2)
    assert request == ClipRequest(str(folder), str(folder), "frames", 2, None, None)
    with pytest.raises(UserError, match="does not exist"):
        requests_from_inputs([tmp_path / "b"])


# --------------------------------------------------------------------------------------------------
# Models that do not fit what they are asked to do


def test_a_checkpoint_trained_on_other_backbone_weights_is_refused_unless_allowed(runs, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs / "all", run)
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


def test_a_model_with_other_classes_is_refused(runs, tmp_path, capsys) -> None:
    folder = frame_folder(tmp_path / "clip", frames(8))
    base = [folder, "--model", runs / "all", "--cache", tmp_path / "cache"]
    assert predict_cli(*base, "--expect-labels", "happiness,surprise,others") == 2
    err = capsys.readouterr().err
    assert f"predicts {list(CLASSES)} (label scheme casme2_3cls)" in err
    assert "--expect-labels asks for ['happiness', 'surprise', 'others']" in err
    assert predict_cli(*base, "--label-scheme", "casme2_5cls") == 2
    err = capsys.readouterr().err
    assert "(label scheme casme2_3cls)" in err and "label scheme casme2_5cls has classes ['happiness'," in err
    assert predict_cli(*base, "--label-scheme", "no_such_scheme") == 2
    assert "unknown label scheme 'no_such_scheme'" in capsys.readouterr().err
    # the same classes, in any order, or a scheme with the same classes, are accepted
    assert predict_cli(*base, "--expect-labels", "surprise, negative,positive") == 0
    assert predict_cli(*base, "--label-scheme", "samm_3cls") == 0


def test_a_run_with_several_checkpoints_asks_for_one(tmp_path, capsys) -> None:
    run_experiment(tiny_experiment(), tmp_path / "loso", tiny_source(subjects=2))
    folder = frame_folder(tmp_path / "clip", frames(8))
    assert predict_cli(folder, "--model", tmp_path / "loso", "--cache", tmp_path / "cache") == 2
    err = capsys.readouterr().err
    assert "holds 2 checkpoints" in err and "toy__01/checkpoint" in err and "toy__02/checkpoint" in err
    fold = tmp_path / "loso" / "folds" / "seed0" / "toy__01"
    assert predict_cli(folder, "--model", fold, "--cache", tmp_path / "cache") == 0
    assert f"model: {fold / 'checkpoint'}" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# A dataset root


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    pytest.importorskip("skimage")  # SynthME draws its faces from scikit-image's sample image
    from hlora_mer.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(subjects=2, clips_per_class=1, frame_size=32, min_frames=8, max_frames=10))
    return root


def test_a_dataset_is_predicted_and_scored_with_the_models_label_scheme(runs, synth_root, tmp_path, capsys) -> None:
    from hlora_mer.evaluation.metrics import scores

    out = tmp_path / "out.csv"
    code = predict_cli(synth_root, "--dataset", "casme2", "--model", runs / "all", "--cache", tmp_path / "c", "-o", out)
    screen = capsys.readouterr().out
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10 and all(r["clip"].startswith("casme2/") for r in rows)
    # casme2_3cls (the model's scheme) classifies 8 of SynthME's 10 clips; 'others' has no class in it
    labelled = [r for r in rows if r["truth"]]
    assert len(labelled) == 8 and {r["truth"] for r in labelled} <= set(CLASSES)
    assert "2 clip(s) have no class in label scheme casme2_3cls; predicted, not scored" in screen
    expected = scores(
        [CLASSES.index(r["truth"]) for r in labelled], [CLASSES.index(r["prediction"]) for r in labelled], 3
    )
    assert f"accuracy {expected['acc']:.3f}, UF1 {expected['uf1']:.3f} over 8 labelled clip(s)" in screen
    assert screen.splitlines()[1].split()[:3] == ["clip", "truth", "prediction"]
    # the root without --dataset is a folder without frames: said so, with the way out
    assert predict_cli(synth_root, "--model", runs / "all", "--cache", tmp_path / "c") == 1
    assert "for a dataset root, add --dataset NAME" in capsys.readouterr().out


def test_a_dataset_with_a_scheme_that_does_not_cover_it_is_refused(runs, synth_root, tmp_path, capsys) -> None:
    args = [synth_root, "--dataset", "casme2", "--model", runs / "all", "--cache", tmp_path / "c"]
    assert predict_cli(*args, "--label-scheme", "samm_3cls") == 2
    assert "label scheme samm_3cls does not cover dataset 'casme2'" in capsys.readouterr().err
    assert predict_cli(*args, "--onset", "3") == 2
    assert "--onset cannot be used with --dataset" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_inputs_may_follow_the_options(runs, tmp_path, capsys) -> None:
    a = frame_folder(tmp_path / "a", frames(9, seed=5))
    b = frame_folder(tmp_path / "b", frames(9, seed=6))
    assert predict_cli(a, "--model", runs / "all", "--cache", tmp_path / "cache", b) == 0
    assert "2 clip(s): 2 predicted, 0 failed" in capsys.readouterr().out
