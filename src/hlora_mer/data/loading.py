"""Shared machinery of the dataset loaders: the result type, annotation reading, fixes and table building.

A loader reads the owner's annotation into a *raw* frame of text fields (one row per annotation row,
with its Excel row number), applies documented fixes (:class:`Fix`), then :func:`build_loaded` turns it
into the canonical table (``table.py``): it parses frame numbers, builds unique sample ids, finds each
clip's frames and records every row it leaves out, with the reason, in ``LoadedDataset.excluded``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import pandas as pd

from hlora_mer.data.frames import VIDEO_EXTENSIONS, list_frames
from hlora_mer.data.table import EXCLUDED_COLUMNS, concat_tables, empty_table, make_table, validate_table
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

RAW_FIELDS: tuple[str, ...] = (
    "subject_raw",
    "clip",
    "onset",
    "apex",
    "offset",
    "emotion",
    "objective_class",
    "action_units",
    "source_row",
)
"""Columns of a raw annotation frame. Values are text as written in the file (or None); ``source_row``
is the 1-based row in the file (the Excel row number for spreadsheets)."""

_MISSING_TEXT = {"", "/", "-", "nan", "none", "null", "n/a", "na"}


@dataclass
class LoadedDataset:
    """A dataset read from its owner's files.

    Attributes:
        name: registry name used to load it (``casme2``, ``megc2019``, ...).
        table: canonical sample table (``hlora_mer.data.table.COLUMNS``), one row per usable sample.
        excluded: rows of the annotation that are not in ``table``, with ``kind`` and ``reason``.
        annotation_path: the annotation file that was read (None for folder-labelled datasets).
        annotation_md5: md5 of that file, to tell copies and versions apart.
        version: annotation version (``20190701``, ``v2``, ...), None where there is only one.
        root: the dataset root folder.
        notes: facts worth printing with the summary (fixes applied, secondary files read).
        parts: for composites, the loaded part datasets by name.
        flagged: sample id -> the owners' own remark that the row is wrong (an errata list the owners
            publish beside the annotation, e.g. CAS(ME)^3 v1); ``data check`` reports each one.
    """

    name: str
    table: pd.DataFrame
    excluded: pd.DataFrame
    annotation_path: Path | None
    annotation_md5: str | None
    version: str | None
    root: Path | None = None
    notes: list[str] = field(default_factory=list)
    parts: dict[str, LoadedDataset] = field(default_factory=dict)
    flagged: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True)
class Fix:
    """A known error in an owner's annotation file and its correction.

    The fix applies only where a row matches ``match`` *and* still holds the erroneous values in
    ``expect``, so a corrected or different copy of the file is left alone (and a note says so).

    Attributes:
        match: raw field -> value identifying the row (text as in the file).
        expect: raw field -> the erroneous value the row must hold.
        replace: raw field -> corrected value.
        source: where the error and the correction are documented.
        versions: annotation versions the fix is for; None for all.
        condition: an extra test on the raw row (for errors that only some copies have, such as an
            apex outside its interval); the fix applies only where it returns True.
    """

    match: Mapping[str, str]
    expect: Mapping[str, str]
    replace: Mapping[str, str]
    source: str
    versions: tuple[str, ...] | None = None
    condition: Callable[[Mapping[str, Any]], bool] | None = None

    def describe(self) -> str:
        key = " ".join(f"{k}={v}" for k, v in self.match.items())
        old = {**self.match, **self.expect}
        change = ", ".join(f"{k} {old.get(k, '?')}->{v}" for k, v in self.replace.items())
        return f"{key}: {change} ({self.source})"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def text(value: Any) -> str | None:
    """A cell as stripped text, None when empty. Integral floats lose their ``.0`` (``46.0`` -> ``46``)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    out = str(value).strip()
    return out or None


def _is_missing(value: Any) -> bool:
    """An empty cell as pandas gives it back: None, NaN or ``pd.NA``."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def parse_frame_value(value: Any, *, zero_is_missing: bool = False) -> int | None:
    """Parse an onset/apex/offset cell.

    Returns None for an empty cell and for the documented "no value" markers (``/`` in CASME II;
    ``0`` where ``zero_is_missing``, as in CAS(ME)^2).

    Raises:
        ValueError: the cell holds something else that is not a whole number.
    """
    raw = text(value)
    if raw is None or raw.lower() in _MISSING_TEXT:
        return None
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a frame number") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{raw!r} is not a frame number")
    if zero_is_missing and number == 0:
        return None
    return int(number)


def roman(value: Any) -> str | None:
    """Objective class as a Roman numeral: ``3``, ``3.0`` and ``III`` all give ``III``."""
    raw = text(value)
    if raw is None:
        return None
    numerals = ("I", "II", "III", "IV", "V", "VI", "VII")
    if raw.upper() in numerals:
        return raw.upper()
    try:
        number = int(float(raw))
    except ValueError:
        return raw
    return numerals[number - 1] if 1 <= number <= len(numerals) else raw


# ---------------------------------------------------------------------------------------------------
# Reading spreadsheets and CSV files


def read_sheet(
    path: Path,
    *,
    sheet: str | int | None,
    header: int | None,
    required: Sequence[str | int],
    dataset: str,
) -> pd.DataFrame:
    """Read one sheet with every cell as text, checking the sheet and the required columns.

    Args:
        path: ``.xlsx`` / ``.xls`` / ``.csv`` file.
        sheet: sheet name, index, or None for the first sheet (ignored for CSV).
        header: 0-based row holding the column names (pandas ``header``), None for no header.
        required: column names (or positions when ``header`` is None) that must exist.
        dataset: dataset name for error messages.

    Raises:
        DatasetError: unreadable file, missing sheet or missing columns; the message lists what exists.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, header=header, dtype=str, keep_default_na=False, skip_blank_lines=True)
        else:
            engine: Literal["xlrd"] | None = "xlrd" if suffix == ".xls" else None
            with pd.ExcelFile(path, engine=engine) as book:
                names = list(book.sheet_names)
                if isinstance(sheet, str) and sheet not in names:
                    raise DatasetError(
                        f"{dataset}: {path.name} has no sheet {sheet!r}; its sheets are {names}. "
                        "Is this the right annotation file?"
                    )
                frame = pd.read_excel(book, sheet_name=sheet if sheet is not None else 0, header=header, dtype=str)
    except DatasetError:
        raise
    except ImportError as err:
        raise DatasetError(
            f"{dataset}: reading {path.name} needs an optional package ({err}); "
            "for .xls files run: pip install 'hlora-mer[xls]' (xlrd)"
        ) from err
    except Exception as err:  # pandas/openpyxl raise many types for a damaged file
        raise DatasetError(f"{dataset}: cannot read annotation file {path} ({type(err).__name__}: {err})") from err
    if header is not None:
        frame.columns = [str(c).strip() if not str(c).startswith("Unnamed:") else str(c) for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if not str(c).startswith("Unnamed:")]
        where = f"sheet {sheet!r}" if sheet is not None else "the first sheet"
        raise DatasetError(
            f"{dataset}: {path.name} ({where}) lacks columns {missing}; found {found}. "
            "Is this the right annotation file and version?"
        )
    return frame


def drop_blank_columns(frame: pd.DataFrame, dataset: str, path: Path) -> pd.DataFrame:
    """Drop columns with a blank header (pandas ``Unnamed: N``), warning if one holds data."""
    blank = [c for c in frame.columns if str(c).startswith("Unnamed:")]
    for col in blank:
        if frame[col].notna().any() and (frame[col].astype(str).str.strip() != "").any():
            logger.warning("%s: %s has data in a column without header (%s); ignoring it", dataset, path.name, col)
    return frame.drop(columns=blank)


def raw_frame(frame: pd.DataFrame, columns: Mapping[str, str | int | None], first_row: int) -> pd.DataFrame:
    """Select and rename owner columns to ``RAW_FIELDS``; ``first_row`` is the file row of the first record."""
    out = {}
    for name in RAW_FIELDS:
        if name == "source_row":
            continue
        col = columns.get(name)
        out[name] = [text(v) for v in frame[col]] if col is not None else [None] * len(frame)
    raw = pd.DataFrame(out, dtype=object)
    raw["source_row"] = list(range(first_row, first_row + len(frame)))
    # Rows with every field empty are trailing blank rows of a spreadsheet.
    keep = raw[[c for c in RAW_FIELDS if c != "source_row"]].notna().any(axis=1)
    return raw[keep].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------
# Fixes


def apply_fixes(raw: pd.DataFrame, fixes: Iterable[Fix], *, version: str | None, dataset: str) -> list[str]:
    """Apply ``fixes`` to ``raw`` in place; returns one note per fix applied or skipped."""
    notes = []
    for fix in fixes:
        if fix.versions is not None and version not in fix.versions:
            continue
        mask = pd.Series(True, index=raw.index)
        for col, value in fix.match.items():
            mask &= raw[col] == value
        hits = raw.index[mask]
        if len(hits) == 0:
            logger.debug("%s: fix not applicable, no row matches %s", dataset, fix.match)
            continue
        for idx in hits:
            row = raw.loc[idx].to_dict()
            holds = all(row[col] == value for col, value in fix.expect.items())
            if holds and (fix.condition is None or fix.condition(row)):
                for col, value in fix.replace.items():
                    raw.at[idx, col] = value
                notes.append(f"fixed row {raw.at[idx, 'source_row']!s}: {fix.describe()}")
                logger.info("%s: %s", dataset, notes[-1])
            else:
                held = {col: row[col] for col in (fix.expect or fix.replace)}
                notes.append(f"fix not needed, row {row['source_row']} holds {held}: {fix.describe()}")
                logger.info("%s: %s", dataset, notes[-1])
    return notes


# ---------------------------------------------------------------------------------------------------
# Annotation to canonical table

Locator = Callable[[Mapping[str, Any]], Path | None]


class _FrameCache:
    """Lists each frame folder once (CAS(ME)^3 keeps many clips in one long-video folder)."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, ...], tuple[str, ...]]] = {}

    def __call__(self, folder: Path) -> tuple[tuple[int, ...], tuple[str, ...]]:
        if folder not in self._cache:
            self._cache[folder] = list_frames(folder)
        return self._cache[folder]


def build_loaded(
    raw: pd.DataFrame,
    *,
    name: str,
    dataset: str,
    sample_id: Callable[[Mapping[str, Any]], str],
    locate: Locator,
    fps: float,
    require_frames: bool,
    annotation_path: Path | None,
    version: str | None,
    root: Path | None,
    notes: list[str] | None = None,
    zero_is_missing: bool = False,
    bounds_from_frames: bool = False,
) -> LoadedDataset:
    """Turn a raw annotation frame into a :class:`LoadedDataset`.

    Args:
        raw: ``RAW_FIELDS`` columns, with ``subject_raw`` already in canonical form (``01``, ``006``).
        name: registry name reported in ``LoadedDataset.name``.
        dataset: value of the ``dataset`` column and the subject namespace.
        sample_id: row -> unique sample id.
        locate: row -> the clip's frame folder or video file, or None where it does not exist.
        fps: frame rate of the recording.
        require_frames: exclude rows whose frames are not found (kind ``no_frames``) instead of keeping
            them with empty ``frame_paths``.
        zero_is_missing: an onset/apex/offset of 0 means "no value" (CAS(ME)^2).
        bounds_from_frames: a missing onset/offset is taken from the first/last frame on disk (SMIC,
            folder trees, manifests); otherwise the row is excluded.
    """
    cache = _FrameCache()
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    seen: dict[str, int] = {}

    # pandas-stubs types column labels as Hashable; the raw frame's are the RAW_FIELDS names.
    for cells in cast(list[dict[str, Any]], raw.to_dict("records")):
        # A loader that rewrites a column (subject canonical forms) gets NaN back for its None cells.
        rec: dict[str, Any] = {k: None if _is_missing(v) else v for k, v in cells.items()}
        row: dict[str, Any] = {
            "dataset": dataset,
            "subject": f"{dataset}/{rec['subject_raw']}",
            "subject_raw": rec["subject_raw"],
            "clip": rec["clip"],
            "emotion": rec["emotion"],
            "fps": fps,
            "objective_class": roman(rec.get("objective_class")),
            "action_units": rec.get("action_units"),
        }
        where = f"row {rec['source_row']}" + (f" of {annotation_path.name}" if annotation_path is not None else "")

        def exclude(kind: str, reason: str, row: dict[str, Any] = row, where: str = where) -> None:
            dropped.append({**row, "kind": kind, "reason": f"{where}: {reason}"})

        if rec["subject_raw"] is None or rec["clip"] is None:
            row["sample_id"] = f"{dataset}/{rec['subject_raw']}/{rec['clip']}@{rec['source_row']}"
            blank = [name for name, key in (("subject", "subject_raw"), ("clip name", "clip")) if rec[key] is None]
            exclude("missing_key", f"{' and '.join(blank)} {'are' if len(blank) > 1 else 'is'} blank")
            continue
        row["sample_id"] = sample_id(rec)

        values: dict[str, int | None] = {}
        bad = None
        for col in ("onset", "apex", "offset"):
            try:
                values[col] = parse_frame_value(rec[col], zero_is_missing=zero_is_missing)
            except ValueError as err:
                bad = f"{col} {err}"
                values[col] = None
        row.update(values)
        if bad:
            exclude("bad_frame_value", bad)
            continue
        if row["sample_id"] in seen:
            exclude("duplicate_key", f"repeats sample {row['sample_id']} of row {seen[row['sample_id']]}; first kept")
            continue
        seen[row["sample_id"]] = rec["source_row"]

        target = locate(rec)
        numbers: tuple[int, ...] = ()
        paths: tuple[str, ...] = ()
        if target is not None and target.suffix.lower() in VIDEO_EXTENSIONS and not target.is_dir():
            # kept even when the file is missing, so that check reports the missing video by name
            row["video_path"] = str(target)
        elif target is not None and target.is_dir():
            numbers, paths = cache(target)
        if bounds_from_frames and numbers:
            row["onset"] = numbers[0] if row["onset"] is None else row["onset"]
            row["offset"] = numbers[-1] if row["offset"] is None else row["offset"]
        # Without bounds in the annotation, a missing folder (check reports it) or a video (the whole
        # video is the clip) keeps the row; a folder without frames cannot be bounded.
        unbounded_ok = bounds_from_frames and (target is None or row.get("video_path") is not None)
        for col in ("onset", "offset"):
            if row[col] is None and not unbounded_ok:
                exclude(f"missing_{col}", f"no {col} frame in the annotation ({rec[col]!r})")
                break
        else:
            if row["onset"] is not None and row["offset"] is not None and row["offset"] < row["onset"]:
                exclude("invalid_interval", f"offset {row['offset']} is before onset {row['onset']}")
                continue
            if numbers and row["onset"] is not None:
                pairs = [(n, p) for n, p in zip(numbers, paths, strict=True) if row["onset"] <= n <= row["offset"]]
                numbers = tuple(n for n, _ in pairs)
                paths = tuple(p for _, p in pairs)
            row["frame_numbers"], row["frame_paths"] = numbers, paths
            if require_frames and not paths and row.get("video_path") is None:
                found = "folder has no frames in the interval" if target is not None else "not found"
                exclude("no_frames", f"frames {found} (require_frames=True)")
                continue
            kept.append(row)

    table = make_table(kept)
    excluded = make_table(dropped, EXCLUDED_COLUMNS) if dropped else empty_table(EXCLUDED_COLUMNS)
    validate_table(table)
    without = int(sum(1 for p, v in zip(table["frame_paths"], table["video_path"], strict=True) if not p and v is None))
    if without and _REPORT_MISSING_FRAMES.get():
        logger.warning(
            "%s: %d of %d samples have no frames on disk; 'hlora-mer data check' lists them", name, without, len(table)
        )
    if len(excluded):
        logger.warning(
            "%s: %d annotation rows excluded: %s", name, len(excluded), excluded["kind"].value_counts().to_dict()
        )
    md5 = md5sum(annotation_path) if annotation_path is not None else None
    logger.info(
        "%s: %d samples from %s (version %s, md5 %s); per class %s",
        name,
        len(table),
        annotation_path.name if annotation_path else "folders",
        version,
        md5,
        table["emotion"].value_counts().to_dict(),
    )
    return LoadedDataset(
        name=name,
        table=table,
        excluded=excluded,
        annotation_path=annotation_path,
        annotation_md5=md5,
        version=version,
        root=root,
        notes=list(notes or []),
    )


def merge_loaded(name: str, parts: Mapping[str, LoadedDataset], **fields: Any) -> LoadedDataset:
    """Concatenate part datasets into one (composites)."""
    table = concat_tables(p.table for p in parts.values())
    excluded = concat_tables((p.excluded for p in parts.values()), EXCLUDED_COLUMNS)
    validate_table(table)
    flagged = {sid: message for p in parts.values() for sid, message in p.flagged.items()}
    return LoadedDataset(name=name, table=table, excluded=excluded, parts=dict(parts), flagged=flagged, **fields)


_REPORT_MISSING_FRAMES: ContextVar[bool] = ContextVar("report_missing_frames", default=True)


@contextmanager
def annotations_only() -> Iterator[None]:
    """Load annotations without the missing-frames warning, where frames do not matter (``data diff``
    compares annotation files). Frames are still looked up and every exclusion is still reported."""
    token = _REPORT_MISSING_FRAMES.set(False)
    try:
        yield
    finally:
        _REPORT_MISSING_FRAMES.reset(token)


def first_existing(root: Path, candidates: Iterable[str]) -> Path | None:
    for rel in candidates:
        path = root / rel
        if path.exists():
            return path
    return None


def find_child(folder: Path, name: str) -> Path | None:
    """``folder/name``, or the one entry whose name matches case-insensitively (``J`` vs ``j``)."""
    exact = folder / name
    if exact.exists():
        return exact
    if not folder.is_dir():
        return None
    matches = [p for p in folder.iterdir() if p.name.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None
