"""CAS(ME)^3 Part A micro-expressions (Li et al., 2022): the JpgIndex label workbooks and raw frames.

Facts (``docs/datasets.md``):

* v2 ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx``: sheet ``label``, **every cell is text**, 860 rows;
  v1 ``cas(me)3_part_A_ME_label_JpgIndex_v1.xls``: sheet ``Sheet1``, 921 rows, two extra unnamed columns;
* (Subject, Filename) repeats (up to 17 MEs per video), so samples are keyed on (Subject, Filename, Onset):
  sample id ``casme3/spNO.1/b/166``;
* Onset/Apex/Offset are colour-JPEG indices: ``part_A/spNO.1/b/color/166.jpg``; the colour folder holds
  the whole recording, so a clip's frames are the files numbered onset..offset;
* six rows of v2 are wrong and are corrected below (``FIXES``).

The HLoRA-MER paper's 943 samples cannot be rebuilt from either distributed file (v2 860, v1 921).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hlora_mer.data.loading import Fix, LoadedDataset, apply_fixes, build_loaded, find_child, raw_frame, read_sheet
from hlora_mer.data.registry import DatasetSpec, register_dataset

logger = logging.getLogger(__name__)

FPS = 30.0
ANNOTATIONS = {
    "v2": (
        "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
        "annotation/partA/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx",
    ),
    "v1": (
        "cas(me)3_part_A_ME_label_JpgIndex_v1.xls",
        "annotation/partA/cas(me)3_part_A_ME_label_JpgIndex_v1.xls",
    ),
}
SHEETS = {"v2": "label", "v1": "Sheet1"}
FRAME_FOLDERS = ("part_A", "part_A_split/part_A", "labeledData/RGB", "RGB")

LAYOUT = """\
ROOT/
  cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx   sheet 'label' (version=v1: ..._v1.xls, sheet 'Sheet1')
  part_A/spNO.1/b/color/166.jpg ...           {Subject}/{Filename}/color/{JpgIndex}.jpg
  (ROOT may also be the part_A folder itself; the annotation may sit in ROOT/annotation/partA/)"""

_V2_SOURCE = "datasets.md §5.1 (known bad rows of v2); the corrections are tvaranka/meb's"

# Known bad rows of v2, identified by (Subject, Filename, Onset) and their erroneous values. Row numbers
# are 0-based data-row indices (Excel row = index + 2); docs/datasets.md, CAS(ME)^3, lists the fixes.
FIXES: tuple[Fix, ...] = (
    # row 128: apex 83 lies before onset 112.
    Fix({"subject_raw": "spNO.149", "clip": "d", "onset": "112"}, {"apex": "83"}, {"apex": "123"}, _V2_SOURCE),
    # row 708: offset 3460 is implausible for a micro-expression starting at 5 (a typo for 34).
    Fix({"subject_raw": "spNO.214", "clip": "c", "onset": "5"}, {"offset": "3460"}, {"offset": "34"}, _V2_SOURCE),
    # row 749: onset 3647 lies after apex 2668 and offset 2694 (a typo for 2647).
    Fix({"subject_raw": "spNO.216", "clip": "d", "onset": "3647"}, {"apex": "2668"}, {"onset": "2647"}, _V2_SOURCE),
    # row 750: onset and apex 0 are not frame indices (JpgIndex starts at 1).
    Fix(
        {"subject_raw": "spNO.216", "clip": "e", "onset": "0"},
        {"apex": "0"},
        {"onset": "1", "apex": "1"},
        _V2_SOURCE,
    ),
    # rows 796 and 798: offset 0 is missing.
    Fix({"subject_raw": "spNO.40", "clip": "e", "onset": "1812"}, {"offset": "0"}, {"offset": "1845"}, _V2_SOURCE),
    Fix({"subject_raw": "spNO.40", "clip": "e", "onset": "2327"}, {"offset": "0"}, {"offset": "2403"}, _V2_SOURCE),
)


def load_casme3(root: Path, *, annotation: Path, version: str, require_frames: bool = False) -> LoadedDataset:
    """Read CAS(ME)^3 Part A micro-expressions.

    Args:
        root: dataset root (layout in ``LAYOUT``).
        annotation: the JpgIndex label workbook.
        version: ``v2`` (860 samples) or ``v1`` (921).
        require_frames: exclude samples whose frames are missing instead of keeping them frameless.
    """
    columns = ("Subject", "Filename", "Onset", "Apex", "Offset", "emotion")
    is_csv = annotation.suffix.lower() == ".csv"
    frame = read_sheet(
        annotation, sheet=None if is_csv else SHEETS[version], header=0, required=columns, dataset="casme3"
    )
    raw = raw_frame(
        frame,
        {
            "subject_raw": "Subject",
            "clip": "Filename",
            "onset": "Onset",
            "apex": "Apex",
            "offset": "Offset",
            "emotion": "emotion",
            "objective_class": "Objective class" if "Objective class" in frame.columns else None,
            "action_units": "AU" if "AU" in frame.columns else None,
        },
        first_row=2,
    )
    # Match on the onset as written, before any cast: every v2 cell is text ("112", never 112.0).
    notes = apply_fixes(raw, FIXES, version=version, dataset="casme3")

    frames_root = next((root / d for d in FRAME_FOLDERS if (root / d).is_dir()), root)

    def locate(rec: Mapping[str, Any]) -> Path | None:
        subject = find_child(frames_root, rec["subject_raw"])
        # One v2 row writes the video letter in upper case ('J'); accept either case on disk.
        video = find_child(subject, rec["clip"]) if subject is not None else None
        color = video / "color" if video is not None else None
        return color if color is not None and color.is_dir() else None

    return build_loaded(
        raw,
        name="casme3",
        dataset="casme3",
        sample_id=lambda rec: f"casme3/{rec['subject_raw']}/{rec['clip']}/{rec['onset']}",
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
        name="casme3",
        title="CAS(ME)^3 Part A",
        loader=load_casme3,
        layout=LAYOUT,
        annotations=ANNOTATIONS,
        default_version="v2",
    )
)
