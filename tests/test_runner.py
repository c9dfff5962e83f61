"""The fold runner: run folder contents, resume equals uninterrupted, determinism, protocols."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from hlora_mer.errors import ConfigError
from hlora_mer.evaluation.report import compare_runs
from hlora_mer.models.checkpoint import load_checkpoint
from hlora_mer.training.runner import RunCallbacks, run_experiment
from train_fixtures import CLASSES, tiny_experiment, tiny_source


def test_loso_run_folder(tmp_path) -> None:
    source = tiny_source(subjects=3)
    events = []
    cb = RunCallbacks(
        on_start=lambda n, done: events.append(("start", n, done)),
        on_fold_end=lambda f, s, skipped: events.append((f, skipped)),
    )
    metrics = run_experiment(tiny_experiment(), tmp_path / "run", source, callbacks=cb)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "run.json",
        "folds.json",
        "predictions.csv",
        "metrics.json",
        "report.md",
        "confusion.png",
    ):
        assert (run / name).is_file(), name
    preds = pd.read_csv(run / "predictions.csv")
    assert list(preds.columns[:7]) == [
        "sample_id",
        "subject",
        "dataset",
        "label",
        "label_index",
        "prediction",
        "prediction_index",
    ]
    assert {f"prob_{c}" for c in CLASSES} <= set(preds.columns) and {"fold", "seed"} <= set(preds.columns)
    assert sorted(preds["sample_id"]) == sorted(source.table["sample_id"])
    assert (preds["subject"] == preds["fold"]).all()  # each sample is predicted by its own subject's fold
    assert events[0] == ("start", 3, 0) and [e[1] for e in events[1:]] == [False] * 3
    assert metrics["complete"] and metrics["pooled"]["acc"]["n"] == 1
    info = json.loads((run / "run.json").read_text())
    assert info["hlora_mer_version"] and "commit" in info and info["classes"] == list(CLASSES)
    model, meta = load_checkpoint(run / "folds" / "seed0" / "toy__01" / "checkpoint")
    assert meta["labels"] == list(CLASSES) and meta["fold"] == "toy/01"
    # what a new clip needs to be prepared as this model was trained: the same preprocessing identity
    assert meta["label_scheme"] == "casme2_3cls" and meta["preprocess"]["num_frames"] == 8
    assert meta["preprocess"]["detector"] == "none" and meta["preprocess"]["size"] == 28
    result = json.loads((run / "folds" / "seed0" / "toy__01" / "result.json").read_text())
    assert len(result["losses"]) == 2 and result["losses"][-1] == result["final_loss"]
    assert "toy/01" not in meta["train_subjects"]
    assert "| tiny |" in compare_runs([run])


def test_resume_gives_identical_metrics(tmp_path) -> None:
    source = tiny_source(subjects=3)
    cfg = tiny_experiment(eval={"seeds": [0, 1], "bootstrap": 30})
    full = tmp_path / "full"
    run_experiment(cfg, full, source)
    reference = (full / "metrics.json").read_bytes()

    resumed = tmp_path / "resumed"
    run_experiment(cfg, resumed, source)
    # simulate an interruption: one fold never finished (no result.json), another left a half-written file
    shutil.rmtree(resumed / "folds" / "seed1" / "toy__02")
    (resumed / "folds" / "seed0" / "toy__03" / "result.json").unlink()
    for name in ("metrics.json", "predictions.csv", "report.md"):
        (resumed / name).unlink()
    skipped = []
    run_experiment(
        cfg, resumed, source, callbacks=RunCallbacks(on_fold_end=lambda f, s, sk: skipped.append((f, s, sk)))
    )
    assert sorted((f, s) for f, s, sk in skipped if not sk) == [("toy/02", 1), ("toy/03", 0)]
    assert (resumed / "metrics.json").read_bytes() == reference
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "predictions.csv"), pd.read_csv(full / "predictions.csv"))


def test_resume_refuses_other_training_settings(tmp_path) -> None:
    source = tiny_source(subjects=2)
    run_experiment(tiny_experiment(), tmp_path / "run", source)
    with pytest.raises(ConfigError, match="train.steps"):
        run_experiment(tiny_experiment(train={"steps": 3}), tmp_path / "run", source)
    # report-only settings may change
    run_experiment(tiny_experiment(eval={"bootstrap": 10}), tmp_path / "run", source)


def test_composite_and_validation_split(tmp_path) -> None:
    source = tiny_source(subjects=3, datasets=("casme2", "samm"))
    cfg = tiny_experiment(
        eval={"protocol": "composite", "metrics": ["uf1", "uar"]},
        train={"val_subjects": 1, "select": "val", "eval_every": 1},
    )
    metrics = run_experiment(cfg, tmp_path / "run", source)
    assert len(metrics["per_fold"]) == 6
    assert set(metrics["groups"]["scores"]) == {"casme2", "samm"}
    assert [c["group"] for c in metrics["table"]] == ["composite"] * 2 + ["casme2"] * 2 + ["samm"] * 2
    result = json.loads((tmp_path / "run" / "folds" / "seed0" / "casme2__01" / "result.json").read_text())
    assert len(result["val_subjects"]) == 1 and "casme2/01" not in result["val_subjects"]
    assert result["n_train"] + result["n_val"] == 15


def test_hde_reports_directions_and_average(tmp_path) -> None:
    source = tiny_source(subjects=2, datasets=("casme2", "samm"))
    cfg = tiny_experiment(
        data={"datasets": ["casme2", "samm"]},
        eval={"protocol": "hde", "directions": ["casme2->samm", "samm->casme2"], "metrics": ["war", "uar"]},
    )
    metrics = run_experiment(cfg, tmp_path / "run", source)
    groups = metrics["groups"]["scores"]
    assert list(groups) == ["casme2->samm", "samm->casme2"]
    assert metrics["hde_average"]["war"]["mean"] == pytest.approx(
        (groups["casme2->samm"]["war"]["mean"] + groups["samm->casme2"]["war"]["mean"]) / 2
    )
    assert [c["group"] for c in metrics["table"]][-2:] == ["Avg.", "Avg."]


def test_all_subjects_writes_only_a_checkpoint(tmp_path) -> None:
    cfg = tiny_experiment(description="tiny model, 3 classes, LOSO", eval={"protocol": "all"})
    metrics = run_experiment(cfg, tmp_path / "run", tiny_source(2))
    assert metrics["table"] == [] and not (tmp_path / "run" / "predictions.csv").exists()
    assert (tmp_path / "run" / "folds" / "seed0" / "all" / "checkpoint" / "model.safetensors").is_file()
    # the report names the protocol that ran, also where the config's description speaks of another
    report = (tmp_path / "run" / "report.md").read_text()
    assert "- protocol: **all** (trained on every subject: one model, no test subject, no scores)" in report
    assert "this run's protocol is **all**" in report


def test_leaky_column_is_separate_and_labelled(tmp_path) -> None:
    cfg = tiny_experiment(eval={"leaky_best_epoch": True}, train={"eval_every": 1})
    metrics = run_experiment(cfg, tmp_path / "run", tiny_source(2))
    assert "LEAKY" in metrics["leaky_best_epoch_on_test"]["note"]
    assert all("leaky_best_acc" in r for r in metrics["per_fold"])
    assert "NOT the result" in (tmp_path / "run" / "report.md").read_text()
    # the reported result is the last model: the same run without the leaky column reports the same scores
    plain = run_experiment(tiny_experiment(train={"eval_every": 1}), tmp_path / "plain", tiny_source(2))
    assert plain["pooled"] == metrics["pooled"] and "leaky_best_epoch_on_test" not in plain


def test_a_run_extended_with_more_seeds_reuses_the_finished_ones(tmp_path) -> None:
    source = tiny_source(subjects=2)
    run_experiment(tiny_experiment(), tmp_path / "run", source)
    first = (tmp_path / "run" / "folds" / "seed0" / "toy__01" / "result.json").read_bytes()
    trained = []
    cb = RunCallbacks(on_fold_end=lambda f, s, skipped: trained.append((f, s)) if not skipped else None)
    metrics = run_experiment(tiny_experiment(eval={"seeds": [0, 1]}), tmp_path / "run", source, callbacks=cb)
    assert trained == [("toy/01", 1), ("toy/02", 1)]  # only the new seed's folds are trained
    assert (tmp_path / "run" / "folds" / "seed0" / "toy__01" / "result.json").read_bytes() == first
    assert metrics["seeds"] == [0, 1] and metrics["complete"]
    fresh = run_experiment(tiny_experiment(eval={"seeds": [0, 1]}), tmp_path / "fresh", source)
    assert fresh["pooled"] == metrics["pooled"]
