"""CASME II (Yan et al., 2014): coding workbooks 20190701 / 20140508 / "updated" and the frame folders.

Facts used here are in ``docs/datasets.md``:

* sheet ``Sheet1``, header on Excel row 1; two columns with a blank header (ignored);
* ``Subject`` is text ``'01'`` (an integer in the "updated" file: zero-padded here);
* ``Filename`` repeats across subjects, so samples are keyed on (subject, filename);
* ``ApexFrame`` is ``'/'`` for ``04/EP12_01f``: read as <NA>;
* frames ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`` or, in the cropped release,
  ``Cropped/sub01/EP02_01f/reg_img46.jpg``; the number is the annotation frame number.

The 20190701 file reproduces the HLoRA-MER paper's counts (5-class 249, 3-class 156) and is the default.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hlora_mer.data.loading import (
    LoadedDataset,
    build_loaded,
    drop_blank_columns,
    md5sum,
    raw_frame,
    read_sheet,
    text,
)
from hlora_mer.data.registry import DatasetSpec, register_dataset
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

FPS = 200.0
OBJECTIVE_FILE = "CASME2-ObjectiveClasses.xlsx"
ANNOTATIONS = {
    "20190701": ("CASME2-coding-20190701.xlsx",),
    "20140508": ("CASME2-coding-20140508.xlsx",),
    "updated": ("CASME2-coding-updated.xlsx",),
}
# Frame folders of the owner's releases, tried in this order when frames="auto".
FRAME_FOLDERS = {
    "raw": ("CASME2_RAW_selected", "CASME2_RAW_selected/CASME2_RAW_selected", "CASME2_RAW"),
    "cropped": ("Cropped", "CASME2_Cropped", "Cropped_original", "CASME2_cropped"),
}

LAYOUT = """\
ROOT/
  CASME2-coding-20190701.xlsx     coding file (default; version=20140508 or updated picks the others)
  CASME2-ObjectiveClasses.xlsx    optional: objective classes I-VII (MEGC2018 protocol)
  CASME2_RAW_selected/            raw release, or Cropped/ (frames reg_imgN.jpg)
    sub01/EP02_01f/img46.jpg ... img86.jpg
ROOT may also be the folder that holds sub01/ ... sub26/ directly."""


def _subject(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.removeprefix("sub")
    return value.zfill(2) if value.isdigit() else value


def find_frames_root(root: Path, frames: str) -> Path | None:
    """The folder holding ``subNN/`` for the chosen release (``auto``, ``raw``, ``cropped`` or a path)."""
    if frames not in ("auto", "raw", "cropped"):
        path = Path(frames) if Path(frames).is_absolute() else root / frames
        if not path.is_dir():
            raise DatasetError(f"casme2: frames folder {path} does not exist")
        return path
    kinds = ("raw", "cropped") if frames == "auto" else (frames,)
    for kind in kinds:
        for rel in FRAME_FOLDERS[kind]:
            if (root / rel).is_dir():
                return root / rel
    if frames == "auto" and any(p.is_dir() and p.name.startswith("sub") for p in root.iterdir()):
        return root
    return None


def read_objective_classes(path: Path) -> dict[tuple[str, str], str]:
    """(subject, filename) -> objective class from ``CASME2-ObjectiveClasses.xlsx``."""
    frame = read_sheet(
        path, sheet="Sheet1", header=0, required=("Subject", "Filename", "Objective Class"), dataset="casme2"
    )
    return {
        (_subject(text(s)) or "", text(f) or ""): text(c) or ""
        for s, f, c in zip(frame["Subject"], frame["Filename"], frame["Objective Class"], strict=True)
    }


def load_casme2(
    root: Path,
    *,
    annotation: Path,
    version: str,
    frames: str = "auto",
    require_frames: bool = False,
    objective_classes: str = "auto",
) -> LoadedDataset:
    """Read CASME II.

    Args:
        root: dataset root (layout in ``LAYOUT``).
        annotation: the coding workbook.
        version: ``20190701``, ``20140508`` or ``updated``.
        frames: ``auto`` (raw release, then cropped, then ROOT itself), ``raw``, ``cropped`` or a folder.
        require_frames: exclude samples whose frame folder is missing instead of keeping them frameless.
        objective_classes: ``auto`` (``CASME2-ObjectiveClasses.xlsx`` when in ROOT, else the coding
            file's own column, which only 20190701 has), ``coding``, ``file`` or a path to the workbook.
    """
    frame = read_sheet(
        annotation,
        sheet=0,
        header=0,
        required=("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Estimated Emotion"),
        dataset="casme2",
    )
    frame = drop_blank_columns(frame, "casme2", annotation)
    raw = raw_frame(
        frame,
        {
            "subject_raw": "Subject",
            "clip": "Filename",
            "onset": "OnsetFrame",
            "apex": "ApexFrame",
            "offset": "OffsetFrame",
            "emotion": "Estimated Emotion",
            "objective_class": "Objective Classes" if "Objective Classes" in frame.columns else None,
            "action_units": "Action Units" if "Action Units" in frame.columns else None,
        },
        first_row=2,
    )
    raw["subject_raw"] = [_subject(s) for s in raw["subject_raw"]]
    notes = []

    objective_path: Path | None = None
    if objective_classes == "auto":
        objective_path = root / OBJECTIVE_FILE if (root / OBJECTIVE_FILE).is_file() else None
    elif objective_classes == "file":
        objective_path = root / OBJECTIVE_FILE
        if not objective_path.is_file():
            raise DatasetError(f"casme2: objective_classes='file' but {objective_path} does not exist")
    elif objective_classes != "coding":
        objective_path = Path(objective_classes)
        if not objective_path.is_file():
            raise DatasetError(f"casme2: objective-class file {objective_path} does not exist")
    if objective_path is not None:
        # Two objective-class versions exist and disagree on 37 rows (docs/datasets.md, CASME II): record it.
        table = read_objective_classes(objective_path)
        raw["objective_class"] = [table.get((s, c)) for s, c in zip(raw["subject_raw"], raw["clip"], strict=True)]
        notes.append(f"objective classes from {objective_path.name} (md5 {md5sum(objective_path)})")
    elif raw["objective_class"].notna().any():
        notes.append(f"objective classes from the 'Objective Classes' column of {annotation.name}")

    frames_root = find_frames_root(root, frames)
    if frames_root is None:
        logger.warning("casme2: no frame folder (CASME2_RAW_selected/, Cropped/ or sub*/) under %s", root)
    else:
        notes.append(f"frames from {frames_root}")

    def locate(rec: Mapping[str, Any]) -> Path | None:
        if frames_root is None:
            return None
        folder = frames_root / f"sub{rec['subject_raw']}" / rec["clip"]
        return folder if folder.is_dir() else None

    return build_loaded(
        raw,
        name="casme2",
        dataset="casme2",
        sample_id=lambda rec: f"casme2/{rec['subject_raw']}/{rec['clip']}",
        locate=locate,
        fps=FPS,
        require_frames=require_frames,
        annotation_path=annotation,
        version=version,
        root=root,
        notes=notes,
    )


SPEC = register_dataset(
    DatasetSpec(
        name="casme2",
        title="CASME II",
        loader=load_casme2,
        layout=LAYOUT,
        annotations=ANNOTATIONS,
        default_version="20190701",
    )
)
