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


def test_the_fold_folder_is_the_documented_layout(tmp_path, table) -> None:
    fold = loso_folds(table)[1]
    assert rf.fold_dir(tmp_path, 3, fold) == tmp_path / "folds" / "seed3" / fold.key


def test_another_data_root_resumes_but_another_version_does_not(tmp_path, table) -> None:
    cfg = tiny_experiment(train={"steps": 3}, eval={"seeds": [0]}, data={"roots": {"toy": "/data/a"}})
    run_dir, folds, csv = _run(tmp_path, cfg, table)
    moved = tiny_experiment(train={"steps": 3}, eval={"seeds": [0]}, data={"roots": {"toy": "/data/b"}})
    assert rf.check_resume(run_dir, moved, folds, csv)[0].endswith("1 fold run(s) finished")
    other = tiny_experiment(train={"steps": 3}, eval={"seeds": [0]}, data={"versions": {"toy": "v2"}})
    with pytest.raises(ConfigError, match="other settings \\(data.versions: "):
        rf.check_resume(run_dir, other, folds, csv)


def test_samples_csv_keeps_ids_as_text_and_leaves_absent_columns_empty(table) -> None:
    records = table.assign(sample_id=[f"{i:04d}" for i in range(len(table))], onset="03")  # no apex, offset, clip
    text = rf.samples_text(records)
    assert text.splitlines()[0] == ",".join(rf.SAMPLE_COLUMNS)
    samples = rf.parse_samples(text)
    assert list(samples.index) == list(records["sample_id"])
    assert samples.loc["0002", ["onset", "apex", "clip"]].tolist() == ["03", "", ""]


def test_empty_cells_compare_equal_and_a_filled_one_is_named(tmp_path, cfg, table) -> None:
    records = table.assign(onset=3)  # apex, offset and clip empty
    run_dir, folds, _ = _run(tmp_path, cfg, table)
    csv = rf.samples_text(records)
    (run_dir / rf.SAMPLES_FILE).write_text(csv, encoding="utf-8")
    for fold in folds[:1]:  # the finished fold's hashes for these records
        result = {"ids_hash": rf.ids_hash(fold), "data_hash": rf.data_hash(rf.parse_samples(csv), fold)}
        (rf.fold_dir(run_dir, 0, fold) / rf.RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    assert rf.check_resume(run_dir, cfg, folds, csv)[0].endswith("1 fold run(s) finished")
    filled = records.assign(clip=["fp"] + [""] * (len(records) - 1))
    with pytest.raises(ConfigError, match=f"1 sample\\(s\\) changed: {records['sample_id'][0]} \\(clip - -> fp\\)"):
        rf.check_resume(run_dir, cfg, folds, rf.samples_text(filled))


def test_describe_changes_names_added_samples_and_counts_only_beyond_the_limit(table) -> None:
    new = rf.parse_samples(rf.samples_text(_records(table)))
    old = rf.parse_samples(rf.samples_text(_records(table).iloc[2:]))
    ids = list(table["sample_id"])
    assert rf.describe_changes(old, new) == [f"2 sample(s) added: {ids[0]}, {ids[1]}"]
    for n, more in ((5, ""), (6, " and 1 more")):  # the default limit is 5 names
        changed = rf.parse_samples(rf.samples_text(_records(table).assign(onset=4).iloc[:n]))
        line = rf.describe_changes(changed, new)[0]
        assert line.startswith(f"{n} sample(s) changed: ") and line.endswith(f"{ids[4]} (onset 4 -> 3){more}")


def test_a_file_as_run_folder_and_a_missing_samples_csv_are_refused(tmp_path, cfg, table) -> None:
    path = tmp_path / "file"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file; choose another folder with --output"):
        rf.check_resume(path, cfg, loso_folds(table), "")
    run_dir, folds, csv = _run(tmp_path, cfg, table)
    (run_dir / rf.SAMPLES_FILE).unlink()
    with pytest.raises(ConfigError, match=f"has finished folds but no {rf.SAMPLES_FILE}.*or delete"):
        rf.check_resume(run_dir, cfg, folds, csv)


def test_a_fold_with_the_same_samples_split_otherwise_refuses_the_resume(tmp_path, cfg, table) -> None:
    run_dir, folds, csv = _run(tmp_path, cfg, table)
    first = folds[0]  # the last training id becomes a test id: the same samples in the same order
    moved = rf.Fold(first.name, first.index, first.train_ids[:-1], (first.train_ids[-1], *first.test_ids))
    samples = rf.parse_samples(csv)
    assert rf.data_hash(samples, moved) == rf.data_hash(samples, first)
    with pytest.raises(ConfigError) as err:
        rf.check_resume(run_dir, cfg, [moved, *folds[1:]], csv)
    assert str(err.value).startswith(f"{rf.fold_dir(run_dir, 0, first)} was trained on other samples than fold")
