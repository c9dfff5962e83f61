"""Mutation-testing companions of tests/test_splits.py: every protocol of make_folds, pinned fold by fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hlora_mer.errors import ConfigError, DatasetError
from hlora_mer.training.splits import Fold, all_folds, hde_folds, loso_folds, make_folds, validation_split
from train_fixtures import tiny_table


@pytest.fixture
def two_datasets() -> pd.DataFrame:
    # Subjects of two datasets, rows not in subject order; "samm" sorts after "casme2".
    table = pd.concat([tiny_table(2, dataset="samm"), tiny_table(3, dataset="casme2")], ignore_index=True)
    return table.iloc[::-1].reset_index(drop=True)


@pytest.mark.parametrize("protocol", ["loso", "composite"])
def test_loso_and_composite_are_leave_one_subject_out(two_datasets: pd.DataFrame, protocol: str) -> None:
    folds = make_folds(two_datasets, protocol)
    assert folds == loso_folds(two_datasets)
    assert len(folds) == two_datasets["subject"].nunique() == 5


def test_hde_protocol_follows_the_directions(two_datasets: pd.DataFrame) -> None:
    folds = make_folds(two_datasets, "hde", directions=("samm->casme2",))
    assert folds == hde_folds(two_datasets, ("samm->casme2",))
    (fold,) = folds
    ids = two_datasets.set_index("sample_id")["dataset"]
    assert fold.name == "samm->casme2" and fold.index == 0
    assert {ids[s] for s in fold.train_ids} == {"samm"} and {ids[s] for s in fold.test_ids} == {"casme2"}
    assert [f.name for f in make_folds(two_datasets, "hde")] == ["casme2->samm", "samm->casme2"]


def test_all_protocol_is_one_fold_named_all(two_datasets: pd.DataFrame) -> None:
    expected = [Fold("all", 0, tuple(two_datasets["sample_id"].astype(str)), ())]
    assert all_folds(two_datasets) == expected
    assert make_folds(two_datasets, "all") == expected
    assert expected[0].key == "all"


def test_unknown_protocol_is_refused(two_datasets: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="unknown protocol 'loocv'; expected loso, composite, hde or all"):
        make_folds(two_datasets, "loocv")


def test_only_keeps_the_named_folds_with_their_indices(two_datasets: pd.DataFrame) -> None:
    everything = make_folds(two_datasets, "loso")
    names = [f.name for f in everything]
    picked = make_folds(two_datasets, "loso", only=(names[3], names[1]))
    assert picked == [everything[1], everything[3]]
    assert [f.index for f in picked] == [1, 3]
    with pytest.raises(
        ConfigError, match=r"eval.folds names unknown fold\(s\) \[.nobody.\]; folds are: " + ", ".join(sorted(names))
    ):
        make_folds(two_datasets, "loso", only=(names[0], "nobody"))


def _val_subjects(table: pd.DataFrame, ids: tuple[str, ...]) -> list[str]:
    return sorted(set(table.set_index("sample_id").loc[list(ids), "subject"]))


@pytest.mark.parametrize(
    "subjects, amount, held",
    [
        (2, 1, 1),  # two training subjects are enough
        (4, 1, 1),  # 1 is a count, not the fraction 100 %
        (4, 0.1, 1),  # a fraction rounds up to one subject
        (4, 0.6, 2),
        (4, 0.9, 3),  # ...and down to all but one
        (4, 3, 3),  # the largest count allowed
    ],
)
def test_validation_split_holds_out_that_many_subjects(subjects: int, amount: float, held: int) -> None:
    table = tiny_table(subjects)
    train, val = validation_split(table, tuple(table["sample_id"]), amount, seed=11)
    assert len(_val_subjects(table, val)) == held
    assert len(_val_subjects(table, train)) == subjects - held
    assert sorted(train + val) == sorted(table["sample_id"])


@pytest.mark.parametrize("seed", [0, 5, 123])
def test_validation_subjects_are_the_seeded_draw(seed: int) -> None:
    # The held-out subjects are numpy's draw without replacement from the sorted training subjects, seeded by
    # the fold's seed: a run's validation set can be rebuilt from its config.
    table = tiny_table(7).iloc[::-1].reset_index(drop=True)
    train_ids = tuple(table["sample_id"])
    _, val = validation_split(table, train_ids, 3, seed=seed)
    expected = np.random.default_rng(seed).choice(sorted(table["subject"].unique()), size=3, replace=False)
    assert _val_subjects(table, val) == sorted(expected)


def test_too_many_validation_subjects_are_refused_with_the_limit() -> None:
    table = tiny_table(3)
    with pytest.raises(
        ConfigError,
        match=r"trains on 3 subjects and at least one must stay in training, so at most 2 are available; "
        r"set train.val_subjects to at most 2",
    ):
        validation_split(table, tuple(table["sample_id"]), 3, seed=0)
    with pytest.raises(DatasetError, match="at least two training subjects; fold x has 1"):
        validation_split(tiny_table(1), tuple(tiny_table(1)["sample_id"]), 0.5, seed=0, fold="x")


def test_loso_on_two_subjects() -> None:
    table = tiny_table(2)
    folds = loso_folds(table)
    assert [(f.name, f.index, len(f.train_ids), len(f.test_ids)) for f in folds] == [
        ("toy/01", 0, 3, 3),
        ("toy/02", 1, 3, 3),
    ]


def test_fold_to_dict_is_what_folds_json_holds() -> None:
    fold = Fold("casme2->samm", 3, ("a", "b"), ("c",))
    assert fold.to_dict() == {"name": "casme2->samm", "index": 3, "train_ids": ["a", "b"], "test_ids": ["c"]}
    assert fold.key == "casme2-to-samm"


def test_a_table_without_the_columns_or_with_repeated_ids_is_refused_by_name() -> None:
    table = tiny_table(2)
    with pytest.raises(ValueError, match=r"the sample table lacks column\(s\) \['dataset'\]"):
        loso_folds(table.drop(columns="dataset"))
    with pytest.raises(DatasetError, match="sample_id 'toy/01/clip00' appears more than once"):
        loso_folds(pd.concat([table, table.iloc[:1]]))
