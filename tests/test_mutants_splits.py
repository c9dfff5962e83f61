"""Mutation-testing companions of tests/test_splits.py: every protocol of make_folds, pinned fold by fold."""

from __future__ import annotations

import pandas as pd
import pytest

from hlora_mer.errors import ConfigError
from hlora_mer.training.splits import Fold, all_folds, hde_folds, loso_folds, make_folds
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
    with pytest.raises(ConfigError, match=r"eval.folds names unknown fold\(s\) \['nobody'\]"):
        make_folds(two_datasets, "loso", only=(names[0], "nobody"))
