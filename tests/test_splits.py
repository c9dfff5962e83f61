"""Folds as data: no test subject in its training set, on toy tables and on the real annotation files."""

from __future__ import annotations

import pandas as pd
import pytest

from hlora_mer.errors import ConfigError, DatasetError
from hlora_mer.training.splits import all_folds, hde_folds, loso_folds, make_folds, validation_split
from train_fixtures import tiny_table


def _subjects(table: pd.DataFrame, ids: tuple[str, ...]) -> set[str]:
    return set(table.set_index("sample_id").loc[list(ids), "subject"])


def check_loso(table: pd.DataFrame) -> None:
    folds = loso_folds(table)
    assert len(folds) == table["subject"].nunique()
    seen = []
    for fold in folds:
        test_subjects = _subjects(table, fold.test_ids)
        assert test_subjects == {fold.name}
        assert not test_subjects & _subjects(table, fold.train_ids)
        assert set(fold.train_ids) | set(fold.test_ids) == set(table["sample_id"])
        seen.extend(fold.test_ids)
    assert sorted(seen) == sorted(table["sample_id"])  # every sample is tested exactly once


def test_loso_on_toy_table() -> None:
    table = tiny_table(subjects=4, per_class=2)
    check_loso(table)
    assert [f.index for f in loso_folds(table)] == [0, 1, 2, 3]


def test_loso_needs_two_subjects_and_unique_ids() -> None:
    with pytest.raises(DatasetError, match="two subjects"):
        loso_folds(tiny_table(subjects=1))
    table = tiny_table(subjects=2)
    with pytest.raises(DatasetError, match="more than once"):
        loso_folds(pd.concat([table, table.iloc[:1]]))


def test_hde_folds_train_on_one_dataset_and_test_on_the_other() -> None:
    table = pd.concat([tiny_table(3, dataset="casme2"), tiny_table(2, dataset="samm")], ignore_index=True)
    folds = hde_folds(table, ("casme2->samm", "samm->casme2"))
    assert [f.name for f in folds] == ["casme2->samm", "samm->casme2"]
    c2s = folds[0]
    assert set(table.set_index("sample_id").loc[list(c2s.train_ids), "dataset"]) == {"casme2"}
    assert set(table.set_index("sample_id").loc[list(c2s.test_ids), "dataset"]) == {"samm"}
    assert len(hde_folds(table)) == 2  # default: every ordered pair
    with pytest.raises(ConfigError, match="smic"):
        hde_folds(table, ("casme2->smic",))


def test_all_folds_and_fold_subset() -> None:
    table = tiny_table(3)
    (fold,) = all_folds(table)
    assert fold.test_ids == () and len(fold.train_ids) == len(table)
    only = make_folds(table, "loso", only=("toy/02",))
    assert [(f.name, f.index) for f in only] == [("toy/02", 1)]  # the index (and seed) of the full list
    with pytest.raises(ConfigError, match="unknown fold"):
        make_folds(table, "loso", only=("toy/99",))


def test_fold_key_is_a_safe_folder_name() -> None:
    table = pd.concat([tiny_table(2, dataset="casme2"), tiny_table(2, dataset="samm")], ignore_index=True)
    assert loso_folds(table)[0].key == "casme2__01"
    assert hde_folds(table)[0].key == "casme2-to-samm"


def test_validation_split_takes_whole_training_subjects() -> None:
    table = tiny_table(subjects=6)
    fold = loso_folds(table)[0]
    train, val = validation_split(table, fold.train_ids, 0.4, seed=3)
    assert len(_subjects(table, val)) == 2
    assert not _subjects(table, val) & _subjects(table, train)
    assert fold.name not in _subjects(table, val) | _subjects(table, train)
    assert validation_split(table, fold.train_ids, 0.4, seed=3) == (train, val)
    assert validation_split(table, fold.train_ids, 0, seed=3) == (fold.train_ids, ())
    _, val2 = validation_split(table, fold.train_ids, 2, seed=3)
    assert len(_subjects(table, val2)) == 2


REAL = [
    ("casme2", "casme2_5cls", "CASME2-coding-20190701.xlsx", 249, 26),
    ("casme2", "casme2_3cls", "CASME2-coding-20190701.xlsx", 156, 25),
    ("samm", "samm_5cls", "SAMM_Micro_FACS_Codes_v2.xlsx", 136, 27),
    ("samm", "samm_3cls", "SAMM_Micro_FACS_Codes_v2.xlsx", 133, 28),
]


@pytest.mark.parametrize(("dataset", "scheme", "file", "samples", "subjects"), REAL)
def test_loso_on_real_annotations(annotations_dir, tmp_path, dataset, scheme, file, samples, subjects) -> None:
    """Property: on the real label files, no fold's test subject is among its training subjects."""
    import shutil

    from hlora_mer.data import apply_label_scheme, load_dataset

    root = tmp_path / dataset
    root.mkdir()
    shutil.copy(annotations_dir / file, root / file)
    loaded = load_dataset(dataset, root)
    table, _ = apply_label_scheme(loaded.table, scheme)
    assert len(table) == samples
    assert len(loso_folds(table)) == subjects
    check_loso(table)


def test_hde_on_real_annotations(annotations_dir, tmp_path) -> None:
    import shutil

    from hlora_mer.data import apply_label_scheme, load_dataset

    tables = []
    for dataset, file in (("casme2", "CASME2-coding-20190701.xlsx"), ("samm", "SAMM_Micro_FACS_Codes_v2.xlsx")):
        (tmp_path / dataset).mkdir()
        shutil.copy(annotations_dir / file, tmp_path / dataset / file)
        tables.append(load_dataset(dataset, tmp_path / dataset).table)
    table, _ = apply_label_scheme(pd.concat(tables, ignore_index=True), "hde_3cls")
    c2s, s2c = hde_folds(table, ("casme2->samm", "samm->casme2"))
    assert (len(c2s.train_ids), len(c2s.test_ids)) == (159, 67)
    assert (len(s2c.train_ids), len(s2c.test_ids)) == (67, 159)
    assert not _subjects(table, c2s.train_ids) & _subjects(table, c2s.test_ids)
