"""Finding and rebuilding a trained model outside its run (the start of predict, export and explain)."""

from __future__ import annotations

import json

import pytest

from apply_fixtures import APPLY_CLASSES, APPLY_FRAMES, APPLY_SCHEME
from hlora_mer.errors import UserError
from hlora_mer.inference.load import load_trained, resolve_checkpoint
from hlora_mer.training.runner import run_experiment
from train_fixtures import tiny_experiment, tiny_source


@pytest.fixture(scope="module")
def runs(tmp_path_factory, apply_run):
    """``loso``: a run of 2 folds; ``all``: a symlink to the shared all-subjects run (``apply_fixtures``)."""
    base = tmp_path_factory.mktemp("runs")
    run_experiment(tiny_experiment(), base / "loso", tiny_source(subjects=2))
    (base / "all").symlink_to(apply_run)
    return base


def test_a_run_folder_with_one_checkpoint_resolves_to_it(runs) -> None:
    assert resolve_checkpoint(runs / "all") == runs / "all" / "folds" / "seed0" / "all" / "checkpoint"
    fold = runs / "loso" / "folds" / "seed0" / "toy__01"
    assert resolve_checkpoint(fold) == fold / "checkpoint" == resolve_checkpoint(fold / "checkpoint")


def test_a_run_with_several_checkpoints_lists_them(runs, tmp_path) -> None:
    with pytest.raises(UserError, match=r"(?s)holds 2 checkpoints.*eval.protocol=all.*toy__01/checkpoint"):
        resolve_checkpoint(runs / "loso")
    with pytest.raises(UserError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_the_trained_model_comes_with_its_labels_and_preprocessing(runs) -> None:
    trained = load_trained(runs / "all")
    assert trained.labels == list(APPLY_CLASSES) and not trained.model.training
    assert (trained.num_frames, trained.image_size, trained.params.detector) == (APPLY_FRAMES, 28, "none")
    assert (trained.params.sampling, trained.meta["label_scheme"]) == ("apex", APPLY_SCHEME)


def test_an_older_checkpoint_takes_its_preprocessing_from_the_run_folder(runs, tmp_path) -> None:
    import shutil

    run = tmp_path / "all"
    shutil.copytree(runs / "all", run)
    meta_path = run / "folds" / "seed0" / "all" / "checkpoint" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    del meta["preprocess"]
    meta_path.write_text(json.dumps(meta))
    assert load_trained(run).params == load_trained(runs / "all").params
    (run / "config.yaml").unlink()
    with pytest.raises(UserError, match="records neither the preprocessing"):
        load_trained(run)


def test_a_damaged_checkpoint_json_is_one_message(runs, tmp_path) -> None:
    import shutil

    from hlora_mer.inference.load import checkpoint_meta

    checkpoint, meta = checkpoint_meta(runs / "all")
    assert meta["labels"] == list(APPLY_CLASSES) and meta["label_scheme"] == APPLY_SCHEME
    shutil.copytree(checkpoint, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "checkpoint.json").write_text('{"labels": [')  # cut short
    with pytest.raises(UserError, match=r"checkpoint.json cannot be read \(JSONDecodeError.*damaged"):
        load_trained(tmp_path / "ckpt")


def _damage(checkpoint, how: str) -> None:
    path = checkpoint / "model.safetensors"
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[1000:]
    else:  # bytes flipped inside a tensor (far past the header), same size
        for k in range(len(data) - 400, len(data) - 300):
            data[k] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped"])
@pytest.mark.parametrize("command", ["predict", "export", "explain"])
def test_a_damaged_checkpoint_is_one_message_in_every_command(runs, tmp_path, capsys, how, command) -> None:
    import shutil

    import numpy as np
    from PIL import Image

    from hlora_mer.cli import main

    if command == "explain":
        pytest.importorskip("matplotlib")
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint(runs / "all"), checkpoint)
    assert load_trained(checkpoint).labels == list(APPLY_CLASSES)  # the copy is sound
    _damage(checkpoint, how)
    folder = tmp_path / "clip"
    folder.mkdir()
    for k in range(1, 9):
        Image.fromarray(np.full((28, 28, 3), 20 * k, np.uint8)).save(folder / f"img{k}.png")
    argv = {
        "predict": ["predict", str(folder), "--model", str(checkpoint), "--cache", str(tmp_path / "cache")],
        "export": ["export", str(checkpoint), "--format", "merged", "-o", str(tmp_path / "out")],
        "explain": ["explain", str(folder), "--model", str(checkpoint), "-o", str(tmp_path / "out")],
    }[command]
    assert main(["-q", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: checkpoint ") and "is damaged" in captured.err
    assert "copy the checkpoint again" in captured.err and "Traceback" not in captured.err
    assert "SafetensorError" not in captured.err
    assert not captured.out and not (tmp_path / "out").exists()


def test_a_checkpoint_without_a_checksum_still_loads_and_a_damaged_one_says_so(runs, tmp_path) -> None:
    import shutil

    from hlora_mer.models.checkpoint import CHECKSUM_KEY

    checkpoint = tmp_path / "old"
    shutil.copytree(resolve_checkpoint(runs / "all"), checkpoint)
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    assert len(meta.pop(CHECKSUM_KEY)) == 64  # written by training
    (checkpoint / "checkpoint.json").write_text(json.dumps(meta))
    import torch

    clips = torch.randn(1, APPLY_FRAMES, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_trained(checkpoint).model(clips), load_trained(runs / "all").model(clips))
    _damage(checkpoint, "truncated")  # without a checksum, an unreadable file is still one message
    with pytest.raises(UserError, match=r"is damaged: .*model.safetensors cannot be read"):
        load_trained(checkpoint)
