"""Evaluation protocols as data: a fold is a name plus training and test sample ids.

- :func:`loso_folds`: one fold per subject that has a sample in the labelled table; it trains on every
  other subject (HLoRA-MER §4.1.2; with a multi-dataset table this is the MEGC2019 composite, whose
  subjects are namespaced ``casme2/01``, ``samm/006``, ``smic/s1``, so 68 folds).
- :func:`hde_folds`: train on every sample of one dataset, test on every sample of another (Table 7).
- :func:`all_folds`: one fold that trains on everything and tests on nothing (a deployable model).
- :func:`validation_split`: subjects held out from a fold's TRAINING subjects, for honest selection.

The table is the labelled canonical sample table (``sample_id``, ``subject``, ``dataset``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hlora_mer.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class Fold:
    """One train/test split.

    Attributes:
        name: human name, e.g. ``casme2/01`` (LOSO), ``casme2->samm`` (HDE) or ``all``.
        index: position in the protocol's fold list (part of the fold's seed).
        train_ids: sample ids the model trains on.
        test_ids: sample ids it predicts; never overlapping ``train_ids`` by subject.
    """

    name: str
    index: int
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        """A file-system-safe folder name (``casme2__01``, ``casme2-to-samm``)."""
        text = self.name.replace("->", "-to-").replace("/", "__")
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "index": self.index,
            "train_ids": list(self.train_ids),
            "test_ids": list(self.test_ids),
        }


def _check(table: pd.DataFrame) -> None:
    missing = [c for c in ("sample_id", "subject", "dataset") if c not in table.columns]
    if missing:
        raise ValueError(f"the sample table lacks column(s) {missing}")
    if table["sample_id"].duplicated().any():
        dup = table.loc[table["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise DatasetError(f"sample_id {dup!r} appears more than once in the table; sample ids must be unique")


def loso_folds(table: pd.DataFrame) -> list[Fold]:
    """Leave-one-subject-out: one fold per subject present in ``table``, in sorted subject order."""
    _check(table)
    if table.empty:
        raise DatasetError("no samples left to split: the labelled table is empty")
    subjects = sorted(table["subject"].astype(str).unique())
    if len(subjects) < 2:
        raise DatasetError(f"LOSO needs at least two subjects; the table has {subjects}")
    ids = table["sample_id"].astype(str).to_numpy()
    subj = table["subject"].astype(str).to_numpy()
    return [Fold(s, i, tuple(ids[subj != s]), tuple(ids[subj == s])) for i, s in enumerate(subjects)]


def hde_folds(table: pd.DataFrame, directions: tuple[str, ...] | list[str] = ()) -> list[Fold]:
    """Holdout-database folds, one per ``train->test`` direction; default: every ordered pair of datasets."""
    _check(table)
    datasets = sorted(table["dataset"].astype(str).unique())
    if not directions:
        directions = [f"{a}->{b}" for a in datasets for b in datasets if a != b]
    folds = []
    ids = table["sample_id"].astype(str).to_numpy()
    ds = table["dataset"].astype(str).to_numpy()
    for i, direction in enumerate(directions):
        a, _, b = (p.strip() for p in direction.partition("->"))
        for name in (a, b):
            if name not in datasets:
                raise ConfigError(f"HDE direction {direction!r} names {name!r}, but the table holds {datasets}")
        folds.append(Fold(f"{a}->{b}", i, tuple(ids[ds == a]), tuple(ids[ds == b])))
    if not folds:
        raise DatasetError(f"HDE needs two datasets in the table; it holds {datasets}")
    return folds


def all_folds(table: pd.DataFrame) -> list[Fold]:
    """One fold that trains on every sample (no test set): the model to deploy."""
    _check(table)
    return [Fold("all", 0, tuple(table["sample_id"].astype(str)), ())]


def make_folds(
    table: pd.DataFrame, protocol: str, directions: tuple[str, ...] = (), only: tuple[str, ...] = ()
) -> list[Fold]:
    """The folds of ``protocol`` (``loso``, ``composite``, ``hde`` or ``all``), optionally only those named."""
    if protocol in ("loso", "composite"):
        folds = loso_folds(table)
    elif protocol == "hde":
        folds = hde_folds(table, directions)
    elif protocol == "all":
        folds = all_folds(table)
    else:
        raise ConfigError(f"unknown protocol {protocol!r}; expected loso, composite, hde or all")
    if only:
        names = {f.name for f in folds}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"eval.folds names unknown fold(s) {unknown}; folds are: {', '.join(sorted(names))}")
        folds = [f for f in folds if f.name in only]  # indices (and so seeds) stay those of the full list
    return folds


def validation_split(
    table: pd.DataFrame, train_ids: tuple[str, ...], amount: float, seed: int, *, fold: str | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Hold out whole subjects from the training ids: ``amount`` is a fraction (< 1) or a count (>= 1).

    Returns ``(train_ids, val_ids)``; at least one subject stays in training. ``amount == 0`` returns
    ``(train_ids, ())``. ``fold`` names the fold in error messages.

    Raises:
        ConfigError: ``amount`` is a count that leaves no training subject.
        DatasetError: fewer than two training subjects.
    """
    if amount <= 0:
        return tuple(train_ids), ()
    rows = table.set_index("sample_id").loc[list(train_ids)]
    subjects = sorted(rows["subject"].astype(str).unique())
    where = f"fold {fold}" if fold else "this fold"
    if len(subjects) < 2:
        raise DatasetError(f"a validation split needs at least two training subjects; {where} has {len(subjects)}")
    if amount >= 1 and int(amount) > len(subjects) - 1:
        raise ConfigError(
            f"train.val_subjects={int(amount)} asks for {int(amount)} validation subjects, but {where} trains on "
            f"{len(subjects)} subjects and at least one must stay in training, so at most {len(subjects) - 1} "
            f"are available; set train.val_subjects to at most {len(subjects) - 1}, or to a fraction such as 0.2"
        )
    count = int(round(amount * len(subjects))) if amount < 1 else int(amount)
    count = min(max(count, 1), len(subjects) - 1)  # a fraction rounds to at least one, at most all but one
    rng = np.random.default_rng(seed)
    held = set(rng.choice(subjects, size=count, replace=False).tolist())
    subj = rows["subject"].astype(str).to_numpy()
    ids = np.asarray(train_ids)
    return tuple(ids[~np.isin(subj, list(held))]), tuple(ids[np.isin(subj, list(held))])
