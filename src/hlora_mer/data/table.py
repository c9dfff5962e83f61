"""The canonical sample table: one row per micro-expression clip, whatever dataset it came from.

Every loader in ``hlora_mer.data`` returns a ``pandas.DataFrame`` with exactly these columns, and
everything downstream (preprocessing, folds, predictions, reports) keys samples on ``sample_id``.

===============  ==========  ===============================================================
column           dtype       meaning
===============  ==========  ===============================================================
dataset          str         registry name of the dataset (``casme2``, ``samm``, ``casme3``...)
subject          str         subject namespaced by dataset (``casme2/01``, ``samm/006``)
subject_raw      str         the subject as written in the annotation file (``01``, ``006``)
clip             str         the clip name as written in the annotation file (``EP02_01f``)
sample_id        str         unique across datasets (``casme2/01/EP02_01f``)
frame_paths      object      tuple of frame file paths, sorted by frame number; ``()`` for video
                             and for clips whose frame folder was not found
frame_numbers    object      tuple of int frame numbers, parallel to ``frame_paths``
video_path       str | None  a video file when the clip comes from video, else None
onset            Int64       first frame number of the expression (inclusive)
apex             Int64       apex frame number, <NA> where the annotation has none
offset           Int64       last frame number of the expression (inclusive)
emotion          str         native emotion label, as written by the dataset owner
fps              float       frame rate of the recording (NaN where unknown)
objective_class  str | None  objective class ``I``..``VII`` where the annotation has one
action_units     str | None  the action-unit code as written by the owner (``4+7``, ``R12``)
===============  ==========  ===============================================================

For video clips, frame numbers refer to decoded frames (0-based). ``onset``/``offset`` are <NA> only
where the input gives no bounds and there are no frames to take them from: a video listed without
onset/offset (the whole video is the clip), or a clip folder that is missing (e.g. an SMIC clip of the
MEGC2019 list that is not on disk; ``hlora-mer data check`` lists those).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from hlora_mer.errors import DatasetError

COLUMNS: tuple[str, ...] = (
    "dataset",
    "subject",
    "subject_raw",
    "clip",
    "sample_id",
    "frame_paths",
    "frame_numbers",
    "video_path",
    "onset",
    "apex",
    "offset",
    "emotion",
    "fps",
    "objective_class",
    "action_units",
)

FRAME_COLUMNS: tuple[str, ...] = ("onset", "apex", "offset")

EXCLUDED_COLUMNS: tuple[str, ...] = (*COLUMNS, "kind", "reason")
"""Columns of ``LoadedDataset.excluded``: the canonical ones (partly empty), a short ``kind`` code
(``invalid_interval``, ``duplicate_key``, ...) and a sentence saying why the row was left out."""


def _defaults() -> dict[str, Any]:
    return {
        "frame_paths": (),
        "frame_numbers": (),
        "video_path": None,
        "apex": pd.NA,
        "fps": float("nan"),
        "objective_class": None,
        "action_units": None,
    }


def make_table(records: Iterable[Mapping[str, Any]], columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """Build a table with the canonical columns and dtypes from row dicts.

    Missing optional fields get their defaults (``()`` frames, ``None`` video, <NA> apex, NaN fps).

    Args:
        records: one mapping per row; keys outside ``columns`` are an internal error.
        columns: the column set (``COLUMNS`` or ``EXCLUDED_COLUMNS``).
    """
    rows = []
    for record in records:
        unknown = set(record) - set(columns)
        if unknown:
            raise KeyError(f"unknown table columns {sorted(unknown)}")
        row = {**_defaults(), **record}
        rows.append({col: row.get(col) for col in columns})
    table = pd.DataFrame(rows, columns=list(columns))
    return normalize_dtypes(table)


def normalize_dtypes(table: pd.DataFrame) -> pd.DataFrame:
    """Cast frame columns to nullable ``Int64``, ``fps`` to float and text columns to ``object``."""
    table = table.copy()
    for col in FRAME_COLUMNS:
        if col in table:
            table[col] = pd.array([None if _is_missing(v) else int(v) for v in table[col]], dtype="Int64")
    if "fps" in table:
        table["fps"] = table["fps"].astype(float)
    for col in table.columns:
        if col in FRAME_COLUMNS or col == "fps":
            continue
        values = list(table[col])
        if col in ("video_path", "objective_class", "action_units"):
            # Optional text keeps Python ``None`` (not NaN) for "absent", so ``is None`` checks work.
            values = [None if _is_missing(v) else v for v in values]
        # object dtype throughout: pandas 3 would otherwise infer its ``str`` dtype for some columns only.
        table[col] = pd.Series(values, index=table.index, dtype=object)
    return table.reset_index(drop=True)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def empty_table(columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """A table with the canonical columns and no rows."""
    return make_table([], columns)


def validate_table(table: pd.DataFrame) -> None:
    """Check the invariants every loader guarantees.

    Raises:
        DatasetError: a column is missing, a ``sample_id`` repeats, or frame paths and numbers
            disagree in length or order.
    """
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"sample table lacks columns {missing}; expected {list(COLUMNS)}")
    dup = table["sample_id"][table["sample_id"].duplicated(keep=False)]
    if len(dup):
        raise DatasetError(f"sample_id must be unique; repeated: {sorted(set(dup))[:10]}")
    for sid, paths, numbers in zip(table["sample_id"], table["frame_paths"], table["frame_numbers"], strict=True):
        if len(paths) != len(numbers):
            raise DatasetError(f"{sid}: {len(paths)} frame paths but {len(numbers)} frame numbers")
        if list(numbers) != sorted(numbers):
            raise DatasetError(f"{sid}: frame numbers are not sorted")


def concat_tables(tables: Iterable[pd.DataFrame], columns: tuple[str, ...] = COLUMNS) -> pd.DataFrame:
    """Concatenate tables with the same columns, keeping the canonical dtypes."""
    parts = [t for t in tables if len(t)]
    if not parts:
        return empty_table(columns)
    return normalize_dtypes(pd.concat(parts, ignore_index=True)[list(columns)])
