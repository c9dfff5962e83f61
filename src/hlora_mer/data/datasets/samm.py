"""SAMM (Davison et al., 2016): ``SAMM_Micro_FACS_Codes_v2.xlsx`` and the grayscale frame folders.

Facts (``docs/datasets.md``):

* sheet ``MICRO_ONLY``; Excel rows 1-13 are notes and the **header is Excel row 14**;
* ``Subject`` is text ``'006'`` (a CSV export loses the zeros: padded back to 3 digits here);
* ``Duration`` is an Excel formula (offset - onset + 1) and is not read;
* frames ``006/006_1_2/006_05562.jpg``, 8-bit grayscale; the number after the last ``_`` is the
  absolute frame number used by the annotation. ``read_frame`` serves them as 3 identical channels.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hlora_mer.data.loading import (
    Fix,
    LoadedDataset,
    apply_fixes,
    build_loaded,
    parse_frame_value,
    raw_frame,
    read_sheet,
)
from hlora_mer.data.registry import DatasetSpec, register_dataset

logger = logging.getLogger(__name__)

FPS = 200.0
SHEET = "MICRO_ONLY"
HEADER_ROW = 13  # 0-based: Excel row 14
ANNOTATIONS = {"v2": ("SAMM_Micro_FACS_Codes_v2.xlsx",)}
FRAME_FOLDERS = ("SAMM", "SAMM_CROP", "samm")

LAYOUT = """\
ROOT/
  SAMM_Micro_FACS_Codes_v2.xlsx   sheet MICRO_ONLY, header on Excel row 14
  006/006_1_2/006_05562.jpg ...   subject folder / clip folder (= Filename) / frames (grayscale)
  (the subject folders may also sit in ROOT/SAMM/)"""


def _apex_outside(row: Mapping[str, Any]) -> bool:
    try:
        onset, apex, offset = (parse_frame_value(row[c]) for c in ("onset", "apex", "offset"))
    except ValueError:
        return True
    return apex is None or onset is None or offset is None or not onset <= apex <= offset


# Apexes that some copies of the file place outside [onset, offset] (davidnvq/me_recognition README;
# tvaranka/meb overwrites them with 1105, 4945 and 5130, "missing apex in file"). The shipped v2 copy has
# in-range apexes (1113, 4930, 5127), so these apply only where the apex really is outside the interval.
FIXES: tuple[Fix, ...] = tuple(
    Fix(
        match={"clip": clip},
        expect={},
        replace={"apex": apex},
        source="datasets.md §4.1, tvaranka/meb; applied only if the apex lies outside onset-offset",
        condition=_apex_outside,
    )
    for clip, apex in (("028_4_1", "1105"), ("032_3_1", "4945"), ("032_3_2", "5130"))
)


def _subject(value: str | None) -> str | None:
    if value is None:
        return None
    return value.zfill(3) if value.isdigit() else value


def load_samm(root: Path, *, annotation: Path, version: str, require_frames: bool = False) -> LoadedDataset:
    """Read SAMM.

    Args:
        root: dataset root (layout in ``LAYOUT``).
        annotation: ``SAMM_Micro_FACS_Codes_v2.xlsx`` (or a CSV export with the same columns).
        version: ``v2``.
        require_frames: exclude samples whose frame folder is missing instead of keeping them frameless.
    """
    is_csv = annotation.suffix.lower() == ".csv"
    frame = read_sheet(
        annotation,
        sheet=None if is_csv else SHEET,
        header=0 if is_csv else HEADER_ROW,
        required=("Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Estimated Emotion"),
        dataset="samm",
    )
    raw = raw_frame(
        frame,
        {
            "subject_raw": "Subject",
            "clip": "Filename",
            "onset": "Onset Frame",
            "apex": "Apex Frame",
            "offset": "Offset Frame",
            "emotion": "Estimated Emotion",
            "objective_class": "Objective Classes" if "Objective Classes" in frame.columns else None,
            "action_units": "Action Units" if "Action Units" in frame.columns else None,
        },
        first_row=2 if is_csv else HEADER_ROW + 2,
    )
    raw["subject_raw"] = [_subject(s) for s in raw["subject_raw"]]
    notes = apply_fixes(raw, FIXES, version=version, dataset="samm")

    frames_root = next((root / d for d in FRAME_FOLDERS if (root / d).is_dir()), root)

    def locate(rec: Mapping[str, Any]) -> Path | None:
        folder = frames_root / rec["subject_raw"] / rec["clip"]
        return folder if folder.is_dir() else None

    return build_loaded(
        raw,
        name="samm",
        dataset="samm",
        sample_id=lambda rec: f"samm/{rec['subject_raw']}/{rec['clip']}",
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
        name="samm", title="SAMM", loader=load_samm, layout=LAYOUT, annotations=ANNOTATIONS, default_version="v2"
    )
)
