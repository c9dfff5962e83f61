"""What changed between two annotation versions of a dataset, compared on the loaders' sample tables.

:func:`diff_tables` compares two canonical sample tables (``table.py``) by ``sample_id``: samples added
and removed, and for samples in both every field of :data:`DIFF_FIELDS` that differs. Comparing the
tables, not the spreadsheets, means both versions go through the same loader (its documented fixes,
exclusions and sample ids), so a difference is one the rest of the framework would see.

:func:`load_version` reads one side of a diff from an annotation file or a dataset root, inferring the
dataset and version from the owner's file names where it can (``hlora-mer data diff A B``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hlora_mer.data.loading import LoadedDataset, annotations_only, first_existing
from hlora_mer.data.registry import get_dataset_spec, list_datasets, load_dataset
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

DIFF_FIELDS: tuple[str, ...] = ("emotion", "onset", "apex", "offset", "action_units", "objective_class")
"""Per-sample fields compared, in report order."""

DIFF_COLUMNS: tuple[str, ...] = ("sample_id", "field", "a", "b")
"""Columns of :func:`diff_tables`' result. ``field`` is ``sample`` for a sample only one side has (``a``/``b``
``absent``/``present``), else the table column that differs; ``a``/``b`` are its values as text (None where
missing)."""

ADDED, REMOVED = ("absent", "present"), ("present", "absent")


def _value(value: Any, field: str) -> str | None:
    """A table cell as comparable text; action units lose their inner spaces (``R12 + R15`` = ``R12+R15``)."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return None
    out = str(int(value)) if field in ("onset", "apex", "offset") else str(value).strip()
    if field == "action_units":
        out = re.sub(r"\s+", "", out)
    return out or None


def _dataset_names(table: pd.DataFrame) -> set[str]:
    return set(table["dataset"].dropna().astype(str)) if "dataset" in table else set()


def one_sided_fields(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, str]:
    """Fields of :data:`DIFF_FIELDS` that one version does not have at all: field -> ``"a"`` or ``"b"``,
    the side that has values (CASME II 20190701 has an objective-class column, 20140508 none).

    Such a field is a column added or removed, not a change per sample, so :func:`diff_tables` skips it.
    """
    out = {}
    for name in DIFF_FIELDS:
        has_a = bool(len(a)) and a[name].notna().any()
        has_b = bool(len(b)) and b[name].notna().any()
        if has_a != has_b:
            out[name] = "a" if has_a else "b"
    return out


def diff_tables(a: pd.DataFrame, b: pd.DataFrame, fields: Sequence[str] | None = None) -> pd.DataFrame:
    """Every difference between two sample tables of one dataset, one row each (``DIFF_COLUMNS``).

    Rows come in this order: removed samples, added samples, then per field of ``fields`` the samples
    in both tables whose value differs, each group sorted by ``sample_id``.

    Args:
        a: the older (or first) canonical sample table.
        b: the newer (or second) one.
        fields: the fields to compare; default: :data:`DIFF_FIELDS` without those only one side has
            (:func:`one_sided_fields`).

    Raises:
        DatasetError: the tables come from different datasets, or lack the canonical columns.
    """
    for side, table in (("A", a), ("B", b)):
        missing = [c for c in ("dataset", "sample_id", *DIFF_FIELDS) if c not in table.columns]
        if missing:
            raise DatasetError(f"data diff: table {side} lacks columns {missing}; pass two loaders' sample tables")
    names_a, names_b = _dataset_names(a), _dataset_names(b)
    if names_a and names_b and names_a != names_b:
        raise DatasetError(
            f"data diff: it compares two versions of one dataset, but A is {sorted(names_a)} and B is "
            f"{sorted(names_b)}; pass two annotation files (or roots) of the same dataset"
        )
    if fields is None:
        skipped = one_sided_fields(a, b)
        fields = [f for f in DIFF_FIELDS if f not in skipped]
    unknown = [f for f in fields if f not in DIFF_FIELDS]
    if unknown:
        raise DatasetError(f"data diff: unknown field(s) {unknown}; comparable fields: {list(DIFF_FIELDS)}")

    ia, ib = a.set_index("sample_id"), b.set_index("sample_id")
    rows: list[tuple[str, str, str | None, str | None]] = []
    rows += [(sid, "sample", *REMOVED) for sid in sorted(set(ia.index) - set(ib.index))]
    rows += [(sid, "sample", *ADDED) for sid in sorted(set(ib.index) - set(ia.index))]
    common = sorted(set(ia.index) & set(ib.index))
    for name in fields:
        for sid in common:
            va, vb = _value(ia.at[sid, name], name), _value(ib.at[sid, name], name)
            if va != vb:
                rows.append((sid, name, va, vb))
    return pd.DataFrame(rows, columns=list(DIFF_COLUMNS), dtype=object)


def count_changes(diff: pd.DataFrame) -> dict[str, int]:
    """``added``, ``removed`` and one count per field of :data:`DIFF_FIELDS` (samples whose value changed)."""
    samples = diff[diff["field"] == "sample"]
    counts = {
        "added": int((samples["b"] == "present").sum()),
        "removed": int((samples["a"] == "present").sum()),
    }
    for name in DIFF_FIELDS:
        counts[name] = int((diff["field"] == name).sum())
    return counts


# ---------------------------------------------------------------------------------------------------
# Reading one side of a diff


@dataclass(frozen=True)
class Version:
    """One side of a diff: what was read and how it was identified."""

    loaded: LoadedDataset
    dataset: str
    version: str | None
    path: Path

    def describe(self) -> str:
        what = self.loaded.annotation_path.name if self.loaded.annotation_path is not None else str(self.path)
        return f"{self.dataset} {self.version or '-'} ({what}, {len(self.loaded.table)} samples)"


def _file_matches(path: Path) -> list[tuple[str, str]]:
    """(dataset, version) whose owner's annotation file is named like ``path``."""
    found = []
    for name in list_datasets():
        spec = get_dataset_spec(name)
        for version, candidates in spec.annotations.items():
            if any(Path(c).name.lower() == path.name.lower() for c in candidates):
                found.append((name, version))
    return found


def _root_matches(root: Path) -> list[tuple[str, str]]:
    """(dataset, version) whose owner's annotation file is in ``root``."""
    found = []
    for name in list_datasets():
        spec = get_dataset_spec(name)
        for version, candidates in spec.annotations.items():
            if first_existing(root, candidates) is not None:
                found.append((name, version))
    return found


def _plain(names: set[str]) -> list[str]:
    """Matched names without the composites of another matched name (same annotation files, name extended):
    ``casme3_ac`` (Part A + C) reads the Part A file too, but a Part A file or root is a ``casme3`` version."""

    def composite_of(n: str, m: str) -> bool:
        return n.startswith(f"{m}_") and dict(get_dataset_spec(n).annotations) == dict(get_dataset_spec(m).annotations)

    return sorted(n for n in names if not any(composite_of(n, m) for m in names if m != n))


def _must_exist(where: Path, side: str) -> None:
    if not where.exists():
        raise DatasetError(f"data diff: {side} ({where}) does not exist; pass an annotation file or a dataset root")


def infer_dataset(path: str | Path) -> str | None:
    """The dataset an annotation file's name or a root's annotation files tell, or None if not exactly one."""
    where = Path(path).expanduser()
    if not where.exists():
        return None
    names = _plain({m[0] for m in (_file_matches(where) if where.is_file() else _root_matches(where))})
    return names[0] if len(names) == 1 else None


def load_pair(
    a: str | Path,
    b: str | Path,
    *,
    dataset: str | None = None,
    version_a: str | None = None,
    version_b: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[Version, Version]:
    """Read both sides of a diff (:func:`load_version`); B defaults to A's dataset where its name tells none.

    Raises:
        DatasetError: as :func:`load_version`, and when A and B are files or roots of different datasets.
    """
    for side, path in (("A", a), ("B", b)):
        _must_exist(Path(path).expanduser(), side)
    if dataset is None:
        names = infer_dataset(a), infer_dataset(b)
        if None not in names and names[0] != names[1]:
            raise DatasetError(
                f"data diff: it compares two versions of one dataset, but A ({a}) is {names[0]} and "
                f"B ({b}) is {names[1]}; pass two annotation files (or roots) of the same dataset"
            )
    first = load_version(a, dataset=dataset, version=version_a, options=options, side="A")
    second = load_version(b, dataset=dataset or first.dataset, version=version_b, options=options, side="B")
    return first, second


def load_version(
    path: str | Path,
    *,
    dataset: str | None = None,
    version: str | None = None,
    options: Mapping[str, Any] | None = None,
    side: str = "A",
) -> Version:
    """Read one annotation version for a diff, from an annotation file or a dataset root.

    A file is read on its own: the dataset and version come from its name when it is an owner's file
    name (``CASME2-coding-20140508.xlsx``), else from ``dataset`` / ``version`` (default version).
    Secondary files beside it are not read (CASME II objective classes come from the coding file's own
    column), so what is compared is that file. A root is read as ``load_dataset`` reads it; the
    dataset and version come from the owner's file found in it.

    Args:
        path: annotation file or dataset root.
        dataset: registry name, needed where the file name or root does not tell it.
        version: annotation version, needed where a root holds several.
        options: loader options (``DatasetSpec.options()``), as for ``load_dataset``.
        side: ``A`` or ``B``, for messages.

    Raises:
        DatasetError: ``path`` does not exist, or the dataset or version cannot be told (the message
            says which option to pass).
    """
    where = Path(path).expanduser()
    _must_exist(where, side)
    spec = get_dataset_spec(dataset) if dataset is not None else None
    if where.is_file():
        matches = _file_matches(where)
        kind = f"the file name {where.name!r}"
    else:
        matches = _root_matches(where)
        kind = f"the annotation files in {where}"
    if spec is not None:
        matches = [m for m in matches if m[0] == spec.name]
    if version is not None:
        matches = [m for m in matches if m[1] == str(version)]
    names = _plain({m[0] for m in matches})
    if spec is None:
        if len(names) != 1:
            found = f"it could be {', '.join(names)}" if names else "it matches no registered dataset"
            raise DatasetError(
                f"data diff: cannot tell the dataset of {side} from {kind} ({found}); "
                "pass --dataset NAME (see 'hlora-mer data list')"
            )
        spec = get_dataset_spec(names[0])
    versions = sorted({m[1] for m in matches if m[0] == spec.name})
    if version is None:
        if len(versions) > 1:
            raise DatasetError(
                f"data diff: {side} ({where}) holds {spec.name} versions {versions}; "
                f"pass --version-{side.lower()} with one of them"
            )
        version = versions[0] if versions else None
    opts = dict(options or {})
    with annotations_only():  # a diff compares annotations: no warning about frames missing
        if where.is_file():
            if "objective_classes" in spec.options():
                opts.setdefault("objective_classes", "coding")
            loaded = load_dataset(spec.name, where.parent, annotation=where, version=version, **opts)
        else:
            loaded = load_dataset(spec.name, where, version=version, **opts)
    logger.info("data diff: %s is %s version %s", side, spec.name, loaded.version)
    return Version(loaded=loaded, dataset=spec.name, version=loaded.version, path=where)
