"""Datasets beyond the HLoRA-MER paper: MMEW, CASME, CAS(ME)^2 and 4DME, from their documented columns.

No copy of these annotation files was available while writing this module: the sheet names, columns and
layouts are those read by ``tvaranka/meb`` and third-party code (``docs/datasets.md``), and
the facts marked UNCONFIRMED there are UNCONFIRMED here too. Every reader checks the columns it needs
and says which it found, so a file that differs fails with a clear message rather than a wrong table.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hlora_mer.data.loading import (
    LoadedDataset,
    build_loaded,
    drop_blank_columns,
    find_child,
    raw_frame,
    read_sheet,
    text,
)
from hlora_mer.data.registry import DatasetSpec, register_dataset
from hlora_mer.data.table import EXCLUDED_COLUMNS, concat_tables
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)


def _first_dir(root: Path, candidates: tuple[str, ...]) -> Path:
    return next((root / c for c in candidates if (root / c).is_dir()), root)


def _load_sheet_dataset(
    root: Path,
    annotation: Path,
    *,
    name: str,
    columns: Mapping[str, str | None],
    required: tuple[str, ...],
    locate: Callable[[Mapping[str, Any]], Path | None],
    fps: float,
    require_frames: bool,
    version: str | None,
    subject: Callable[[str | None], str | None] = lambda s: s,
) -> LoadedDataset:
    frame = read_sheet(annotation, sheet=None, header=0, required=required, dataset=name)
    frame = drop_blank_columns(frame, name, annotation)
    cols = {k: v for k, v in columns.items() if v is None or v in frame.columns}
    raw = raw_frame(frame, cols, first_row=2)
    raw["subject_raw"] = [subject(s) for s in raw["subject_raw"]]
    return build_loaded(
        raw,
        name=name,
        dataset=name,
        sample_id=lambda rec: f"{name}/{rec['subject_raw']}/{rec['clip']}",
        locate=locate,
        fps=fps,
        require_frames=require_frames,
        annotation_path=annotation,
        version=version,
        root=root,
    )


def _pad2(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.removeprefix("sub")
    return value.zfill(2) if value.isdigit() else value


# --- MMEW ----------------------------------------------------------------------------------------------

MMEW_LAYOUT = """\
ROOT/                               (the MMEW_Final folder, or the folder holding it)
  MMEW_Micro_Exp.xlsx               first sheet; Subject, Filename, OnsetFrame, ApexFrame, OffsetFrame,
                                    Action Units, Estimated Emotion
  Micro_Expression/<emotion>/<Filename>/1.jpg ...   (some releases name the others folder 'repression')"""


def load_mmew(
    root: Path, *, annotation: Path, version: str, fps: float = 90.0, require_frames: bool = False
) -> LoadedDataset:
    """Read MMEW micro-expressions (frame indices are taken as the numbers of the files in the clip folder).

    Args:
        fps: frame rate (90 per third-party sources; UNCONFIRMED).
        require_frames: exclude samples whose frame folder is missing.
    """
    frames_root = _first_dir(root, ("MMEW_Final/Micro_Expression", "Micro_Expression"))

    def locate(rec: Mapping[str, Any]) -> Path | None:
        emotion = (rec["emotion"] or "").lower()
        # tvaranka/meb rewrites others -> repression before building paths: releases differ.
        for folder in (emotion, "repression" if emotion == "others" else None):
            if folder:
                base = find_child(frames_root, folder)
                clip = find_child(base, rec["clip"]) if base is not None else None
                if clip is not None and clip.is_dir():
                    return clip
        return None

    return _load_sheet_dataset(
        root,
        annotation,
        name="mmew",
        columns={
            "subject_raw": "Subject",
            "clip": "Filename",
            "onset": "OnsetFrame",
            "apex": "ApexFrame",
            "offset": "OffsetFrame",
            "emotion": "Estimated Emotion",
            "action_units": "Action Units",
        },
        required=("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"),
        locate=locate,
        fps=float(fps),
        require_frames=require_frames,
        version=version,
    )


# --- CASME ---------------------------------------------------------------------------------------------

CASME_LAYOUT = """\
ROOT/
  casme.xlsx                        the coding file (distributed name UNCONFIRMED: pass annotation=PATH);
                                    Subject, Filename, OnsetF, ApexF1, OffsetF, AU, Emotion
  CASME_raw_selected/sub01/<Filename>/<Filename>-001.jpg ..."""


def load_casme(
    root: Path, *, annotation: Path, version: str, fps: float = 60.0, require_frames: bool = False
) -> LoadedDataset:
    """Read the first CASME (apex = ``ApexF1``).

    Args:
        fps: frame rate (60, UNCONFIRMED).
        require_frames: exclude samples whose frame folder is missing.
    """
    frames_root = _first_dir(root, ("CASME_raw_selected", "CASME_RAW_selected", "CASME_Cropped"))

    def locate(rec: Mapping[str, Any]) -> Path | None:
        folder = frames_root / f"sub{rec['subject_raw']}" / rec["clip"]
        return folder if folder.is_dir() else None

    return _load_sheet_dataset(
        root,
        annotation,
        name="casme",
        columns={
            "subject_raw": "Subject",
            "clip": "Filename",
            "onset": "OnsetF",
            "apex": "ApexF1",
            "offset": "OffsetF",
            "emotion": "Emotion",
            "action_units": "AU",
        },
        required=("Subject", "Filename", "OnsetF", "OffsetF", "Emotion"),
        locate=locate,
        fps=float(fps),
        require_frames=require_frames,
        version=version,
        subject=_pad2,
    )


# --- 4DME ----------------------------------------------------------------------------------------------

FOURDME_LAYOUT = """\
ROOT/
  4DME_Labelling_Micro_release v1.xlsx   sub_ID, fold_name, Onset, Apex, Offset, AUs, Emotion
  gray_micro/<sub_ID>/<fold_name>/...    grayscale frames (numbers at the end of file names)"""


def load_4dme(
    root: Path, *, annotation: Path, version: str, fps: float = math.nan, require_frames: bool = False
) -> LoadedDataset:
    """Read 4DME micro-expressions (grayscale frames; ``read_frame`` serves them as 3 channels).

    Args:
        fps: frame rate (UNCONFIRMED; NaN unless given).
        require_frames: exclude samples whose frame folder is missing.
    """
    frames_root = _first_dir(root, ("gray_micro", "gray_micro_crop"))

    def locate(rec: Mapping[str, Any]) -> Path | None:
        folder = frames_root / rec["subject_raw"] / rec["clip"]
        return folder if folder.is_dir() else None

    return _load_sheet_dataset(
        root,
        annotation,
        name="4dme",
        columns={
            "subject_raw": "sub_ID",
            "clip": "fold_name",
            "onset": "Onset",
            "apex": "Apex",
            "offset": "Offset",
            "emotion": "Emotion",
            "action_units": "AUs",
        },
        required=("sub_ID", "fold_name", "Onset", "Offset", "Emotion"),
        locate=locate,
        fps=float(fps),
        require_frames=require_frames,
        version=version,
    )


# --- CAS(ME)^2 -----------------------------------------------------------------------------------------

CASME_SQ_LAYOUT = """\
ROOT/
  CAS(ME)^2code_final.xlsx          first sheet without header: participant, expression id, onset, apex,
                                    offset (0 = missing), AUs, emotion, expression type, self-report;
                                    sheets 'naming rule1' / 'naming rule2' map participants and videos
  rawpic/s15/15_0401girlcrashing/img1.jpg ...   (or selectedpic/, cropped/; frame naming UNCONFIRMED)"""

_SUBJECT_FOLDER = re.compile(r"^s(\d+)$", re.IGNORECASE)
_VIDEO_CODE = re.compile(r"^\d{4}$")


def _naming_rules(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """participant index -> ``sNN`` and video name (``anger1``) -> code (``0401``), where the sheets exist."""
    subjects: dict[str, str] = {}
    videos: dict[str, str] = {}
    try:
        with pd.ExcelFile(path) as book:
            for sheet, target in (("naming rule1", subjects), ("naming rule2", videos)):
                if sheet not in book.sheet_names:
                    continue
                for row in pd.read_excel(book, sheet_name=sheet, header=None, dtype=str).itertuples(index=False):
                    cells = [c for c in (text(v) for v in row) if c]
                    if sheet == "naming rule1":
                        folder = next((c for c in cells if _SUBJECT_FOLDER.match(c)), None)
                        index = next((c for c in cells if c.isdigit() and c != folder), None)
                        if folder and index:
                            target.setdefault(str(int(index)), folder.lower())
                    else:
                        code = next((c.zfill(4) for c in cells if _VIDEO_CODE.match(c.zfill(4)) and c.isdigit()), None)
                        names = [c for c in cells if not c.isdigit()]
                        if code and names:
                            target.setdefault(names[0].lower(), code)
    except Exception as err:  # naming sheets are optional helpers
        logger.warning("cas_me_2: cannot read the naming-rule sheets of %s (%s)", path.name, err)
    return subjects, videos


def load_cas_me_2(
    root: Path,
    *,
    annotation: Path,
    version: str,
    expression_type: str = "micro",
    fps: float = 30.0,
    require_frames: bool = False,
) -> LoadedDataset:
    """Read CAS(ME)^2 (``cas_me_2``); offsets/onsets of 0 mean "missing".

    Args:
        expression_type: ``micro`` (57 rows), ``macro`` or ``all``; the others are listed as excluded.
        fps: frame rate (30, third-party).
        require_frames: exclude samples whose frame folder is missing.
    """
    if expression_type not in ("micro", "macro", "all"):
        raise DatasetError(f"cas_me_2: expression_type must be micro, macro or all, got {expression_type!r}")
    frame = read_sheet(annotation, sheet=None, header=None, required=tuple(range(8)), dataset="cas_me_2")
    raw = raw_frame(
        frame,
        {"subject_raw": 0, "clip": 1, "onset": 2, "apex": 3, "offset": 4, "action_units": 5, "emotion": 6},
        first_row=1,
    )
    types = {r: (text(v) or "").lower() for r, v in zip(range(1, 1 + len(frame)), frame[7], strict=True)}
    subjects, videos = _naming_rules(annotation)
    raw["subject_raw"] = [subjects.get(str(int(s)) if s and s.isdigit() else s, s) for s in raw["subject_raw"]]
    frames_root = _first_dir(root, ("rawpic", "selectedpic", "cropped"))

    def locate(rec: Mapping[str, Any]) -> Path | None:
        subject_dir = find_child(frames_root, rec["subject_raw"])
        video = rec["clip"].rsplit("_", 1)[0].lower()
        code = videos.get(video)
        if subject_dir is None or code is None:
            return None
        matches = [p for p in subject_dir.iterdir() if p.is_dir() and code in p.name]
        return matches[0] if len(matches) == 1 else None

    loaded = build_loaded(
        raw,
        name="cas_me_2",
        dataset="cas_me_2",
        sample_id=lambda rec: f"cas_me_2/{rec['subject_raw']}/{rec['clip']}",
        locate=locate,
        fps=float(fps),
        require_frames=require_frames,
        annotation_path=annotation,
        version=version,
        root=root,
        zero_is_missing=True,
    )
    if expression_type != "all":
        by_id = {
            f"cas_me_2/{s}/{c}": types[r]
            for s, c, r in zip(raw["subject_raw"], raw["clip"], raw["source_row"], strict=True)
        }
        wanted = f"{expression_type}-expression"
        keep = [by_id.get(s, "") == wanted for s in loaded.table["sample_id"]]
        dropped = loaded.table[[not k for k in keep]].copy()
        dropped["kind"] = "expression_type"
        dropped["reason"] = [f"{by_id.get(s) or 'no expression type'}, not {wanted}" for s in dropped["sample_id"]]
        loaded.excluded = concat_tables([loaded.excluded, dropped[list(EXCLUDED_COLUMNS)]], EXCLUDED_COLUMNS)
        loaded.table = loaded.table[keep].reset_index(drop=True)
    return loaded


register_dataset(
    DatasetSpec(
        name="mmew",
        title="MMEW",
        loader=load_mmew,
        layout=MMEW_LAYOUT,
        annotations={
            "v1": ("MMEW_Micro_Exp.xlsx", "MMEW_Final/MMEW_Micro_Exp.xlsx"),
            "v2": ("MMEW_Micro_Exp_v2.xlsx", "MMEW_Final/MMEW_Micro_Exp_v2.xlsx"),
        },
        default_version="v1",
    )
)
register_dataset(
    DatasetSpec(
        name="casme",
        title="CASME",
        loader=load_casme,
        layout=CASME_LAYOUT,
        annotations={"default": ("casme.xlsx", "CASME.xlsx")},
        default_version="default",
    )
)
register_dataset(
    DatasetSpec(
        name="4dme",
        title="4DME",
        loader=load_4dme,
        layout=FOURDME_LAYOUT,
        annotations={"v1": ("4DME_Labelling_Micro_release v1.xlsx",)},
        default_version="v1",
    )
)
register_dataset(
    DatasetSpec(
        name="cas_me_2",
        title="CAS(ME)^2",
        loader=load_cas_me_2,
        layout=CASME_SQ_LAYOUT,
        annotations={"final": ("CAS(ME)^2code_final.xlsx",), "updated": ("CAS(ME)^2code_final(Updated).xlsx",)},
        default_version="final",
    )
)
