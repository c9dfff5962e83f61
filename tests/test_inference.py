"""Finding and rebuilding a trained model outside its run (the start of predict, export and explain)."""

from __future__ import annotations

import json

import pytest

from apply_fixtures import APPLY_CLASSES, APPLY_FRAMES, APPLY_SCHEME
from hlora_mer.errors import UserError
from hlora_mer.inference import load_trained, resolve_checkpoint
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

    from hlora_mer.inference import checkpoint_meta

    checkpoint, meta = checkpoint_meta(runs / "all")
    assert meta["labels"] == list(APPLY_CLASSES) and meta["label_scheme"] == APPLY_SCHEME
    shutil.copytree(checkpoint, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "checkpoint.json").write_text('{"labels": [')  # cut short
    with pytest.raises(UserError, match=r"checkpoint.json cannot be read \(JSONDecodeError.*damaged"):
        load_trained(tmp_path / "ckpt")
