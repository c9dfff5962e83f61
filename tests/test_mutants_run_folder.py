"""Mutation-testing companions for run_folder.py: the resume check, on a run folder written by hand.

The other tests of the resume check train real folds (minutes); these write the files a finished fold
leaves (config.yaml, samples.csv, result.json) and ask check_resume directly.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from hlora_mer import run_folder as rf
from hlora_mer.config import to_dict
from hlora_mer.errors import ConfigError
from hlora_mer.training.splits import loso_folds
from train_fixtures import tiny_experiment, tiny_table


def _records(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(onset=3, apex=5, offset=9, clip=[f"fp{i}" for i in range(len(table))])


def _run(tmp_path, cfg, table: pd.DataFrame, finished: int = 1):
    """A run folder whose first ``finished`` folds of seed 0 are finished; returns (run_dir, folds, csv)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / rf.CONFIG_FILE).write_text(yaml.safe_dump(to_dict(cfg)), encoding="utf-8")
    csv = rf.samples_text(_records(table))
    (run_dir / rf.SAMPLES_FILE).write_text(csv, encoding="utf-8")
    folds = loso_folds(table)
    samples = rf.parse_samples(csv)
    for fold in folds[:finished]:
        d = rf.fold_dir(run_dir, 0, fold)
        d.mkdir(parents=True)
        result = {"ids_hash": rf.ids_hash(fold), "data_hash": rf.data_hash(samples, fold)}
        (d / rf.RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    return run_dir, folds, csv


@pytest.fixture
def cfg():
    return tiny_experiment(train={"steps": 3}, eval={"seeds": [0]})


@pytest.fixture
def table() -> pd.DataFrame:
    return tiny_table(3)


def test_a_new_folder_and_an_unfinished_one(tmp_path, cfg, table) -> None:
    assert rf.check_resume(tmp_path / "new", cfg, loso_folds(table), "") == []
    run_dir, folds, csv = _run(tmp_path, cfg, table, finished=0)
    assert rf.check_resume(run_dir, cfg, folds, csv) == [f"{run_dir} holds no finished fold; starting it again"]


def test_the_same_settings_and_data_resume_counting_finished_folds(tmp_path, cfg, table) -> None:
    run_dir, folds, csv = _run(tmp_path, cfg, table, finished=2)
    assert rf.check_resume(run_dir, cfg, folds, csv) == [f"resuming the run in {run_dir}: 2 fold run(s) finished"]
    assert rf.is_finished(run_dir, 0, folds[1]) and not rf.is_finished(run_dir, 0, folds[2])
    # report-only settings may change
    other = tiny_experiment(train={"steps": 3}, eval={"seeds": [0], "bootstrap": 7}, name="renamed")
    assert rf.check_resume(run_dir, other, folds, csv)[0].endswith("2 fold run(s) finished")


@pytest.mark.parametrize(
    "change, shown",
    [
        ({"train": {"steps": 4}}, "train.steps: 3 -> 4"),
        ({"model": {"num_frames": 6}}, "model.num_frames: 8 -> 6"),
        ({"model": {"lora": {"last_n_blocks": 1}}}, "model.lora.last_n_blocks: 2 -> 1"),
        ({"train": {"precision": "bf16"}}, "train.precision: 'fp32' -> 'bf16'"),
    ],
)
def test_a_changed_setting_refuses_the_resume(tmp_path, cfg, table, change, shown) -> None:
    run_dir, folds, csv = _run(tmp_path, cfg, table)
    changed = tiny_experiment(**{"eval": {"seeds": [0]}, **change, "train": {"steps": 3, **change.get("train", {})}})
    with pytest.raises(ConfigError, match=f"holds a run with other settings \\({shown}\\)"):
        rf.check_resume(run_dir, changed, folds, csv)


def test_changed_samples_are_named(tmp_path, cfg, table) -> None:
    run_dir, folds, _ = _run(tmp_path, cfg, table)
    records = _records(table)
    other = next(label for label in table["label"] if label != table["label"][0])  # a real change of label
    records.loc[0, "label"] = other
    records.loc[1, "apex"] = 6
    with pytest.raises(ConfigError) as err:
        rf.check_resume(run_dir, cfg, folds, rf.samples_text(records))
    text = str(err.value)
    assert "its 1 finished fold run(s) were trained on other data" in text
    first, second = records["sample_id"][:2]
    assert f"2 sample(s) changed: {first} (label {table['label'][0]} -> {other}), {second} (apex 5 -> 6)" in text


def test_describe_changes_counts_beyond_the_limit(table) -> None:
    old = rf.parse_samples(rf.samples_text(_records(table)))
    records = _records(table).assign(onset=4)
    lines = rf.describe_changes(old, rf.parse_samples(rf.samples_text(records.iloc[1:])), limit=3)
    assert lines[0].startswith(f"{len(table) - 1} sample(s) changed: ")
    assert lines[0].endswith(f" and {len(table) - 1 - 3} more")
    assert lines[1] == f"1 sample(s) removed: {table['sample_id'][0]}"


def test_a_fold_trained_on_other_samples_refuses_the_resume(tmp_path, cfg, table) -> None:
    run_dir, folds, csv = _run(tmp_path, cfg, table)
    moved = rf.Fold(folds[0].name, folds[0].index, folds[0].train_ids[1:], folds[0].test_ids)  # one id less
    with pytest.raises(ConfigError, match="was trained on other samples than fold"):
        rf.check_resume(run_dir, cfg, [moved, *folds[1:]], csv)


def test_the_hashes_follow_ids_and_records(table) -> None:
    fold = loso_folds(table)[0]
    samples = rf.parse_samples(rf.samples_text(_records(table)))
    swapped = rf.Fold(fold.name, fold.index, fold.train_ids[::-1], fold.test_ids)
    assert rf.ids_hash(swapped) != rf.ids_hash(fold)
    assert len(rf.ids_hash(fold)) == len(rf.data_hash(samples, fold)) == 16
    changed = rf.parse_samples(rf.samples_text(_records(table).assign(offset=10)))
    assert rf.data_hash(changed, fold) != rf.data_hash(samples, fold)
