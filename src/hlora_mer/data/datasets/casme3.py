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

Part C (the mock-crime part) is ``casme3_partc``: ``CAS(ME)3_part_C_ME.xlsx``, sheet ``mockCrimeME``,
columns ``sub``, ``count``, ``onset``, ``offset``, ``au``, ``emotion`` (negative/positive/surprise/others);
no apex column, so apex stays <NA>. ``casme3_ac`` is Part A and Part C together.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hlora_mer.data.loading import (
    Fix,
    LoadedDataset,
    apply_fixes,
    build_loaded,
    find_child,
    first_existing,
    merge_loaded,
    raw_frame,
    read_sheet,
)
from hlora_mer.data.registry import DatasetSpec, register_dataset
from hlora_mer.errors import DatasetError

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
# The owners' list of v1 micro-expressions that were labelled wrongly (jingtingEmmaLi/CAS-ME-3,
# annotation/partA/): read beside a v1 annotation so that ``data check`` names those rows.
ERRATA_V1 = (
    "CAS(ME)3_part_A_wrongly_labeled_me_in_V1.xlsx",
    "annotation/partA/CAS(ME)3_part_A_wrongly_labeled_me_in_V1.xlsx",
)
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


@dataclass(frozen=True)
class Erratum:
    """One row of the owners' v1 errata list: the v1 row it names and what the list writes for it."""

    subject: str
    clip: str
    onset: int
    apex: int | None
    offset: int | None
    listed: str


def _int(text: object) -> int | None:
    value = str(text).strip() if text is not None else ""
    return int(float(value)) if re.fullmatch(r"-?\d+(\.0+)?", value) else None


def read_v1_errata(path: Path) -> list[Erratum]:
    """The owners' errata list of v1 (``ERRATA_V1``): no header; rows Subject, Filename, Onset, Apex,
    Offset, AU, then the class, emotion or expression type as the owners wrote them (two blocks with
    different trailing columns, separated by a blank row). Rows without a subject and an onset are skipped.

    Raises:
        DatasetError: the file cannot be read as a workbook (the message names it).
    """
    frame = read_sheet(path, sheet=None, header=None, required=(0, 1, 2, 3, 4, 5), dataset="casme3")
    out: list[Erratum] = []
    for row in frame.itertuples(index=False):
        cells = ["" if pd.isna(v) else str(v).strip() for v in row]
        onset = _int(cells[2])
        if not cells[0] or not cells[1] or onset is None:
            continue
        rest = ", ".join(c for c in cells[6:9] if c)
        listed = f"onset {cells[2]}, apex {cells[3]}, offset {cells[4]}, AU {cells[5]}" + (f", {rest}" if rest else "")
        out.append(Erratum(cells[0], cells[1], onset, _int(cells[3]), _int(cells[4]), listed))
    return out


def _flag_errata(loaded: LoadedDataset, errata: list[Erratum], source: str) -> None:
    """Put each erratum's row (kept or excluded) in ``loaded.flagged``: the same subject and clip, and the
    same onset or the same apex and offset (a row whose onset a fix corrected is still found); note the
    entries this file does not have."""
    rows = pd.concat([loaded.table, loaded.excluded], ignore_index=True)
    missing: list[str] = []
    for erratum in errata:
        hits = [
            str(r.sample_id)
            for r in rows.itertuples(index=False)
            if str(r.subject_raw) == erratum.subject
            and str(r.clip) == erratum.clip
            and (
                _int(r.onset) == erratum.onset
                or (erratum.apex is not None and _int(r.apex) == erratum.apex and _int(r.offset) == erratum.offset)
            )
        ]
        if not hits:
            missing.append(f"{erratum.subject}/{erratum.clip}/{erratum.onset}")
        for sid in hits:
            loaded.flagged[sid] = (
                f"the owners list this v1 row as wrongly labelled ({source}: {erratum.listed}); "
                "v2 (the default version) drops it or, with this loader's documented fixes, corrects it"
            )
    found = len(errata) - len(missing)
    loaded.notes.append(
        f"owners' errata list {source}: {found} of its {len(errata)} entries are rows of this file "
        f"({len(loaded.flagged)} rows flagged owner_errata)"
    )
    if missing:
        loaded.notes.append(
            f"owners' errata entries that are no row of this file (no row with that subject and clip and the same "
            f"onset, or the same apex and offset): {', '.join(missing)}"
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

    loaded = build_loaded(
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
    if version == "v1":
        errata = first_existing(root, ERRATA_V1)
        if errata is None:
            loaded.notes.append(
                f"v1: the owners' list of wrongly labelled v1 rows ({ERRATA_V1[0]}) is not in {root}; put it "
                "there to have 'hlora-mer data check' name those rows (or use v2, the corrected release)"
            )
        else:
            _flag_errata(loaded, read_v1_errata(errata), errata.name)
    return loaded


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


# --- Part C -----------------------------------------------------------------------------------------------

PARTC_ANNOTATIONS = {
    # One file is distributed, without a version in its name; it is called v1 here.
    "v1": ("CAS(ME)3_part_C_ME.xlsx", "annotation/partC/CAS(ME)3_part_C_ME.xlsx"),
}
PARTC_SHEET = "mockCrimeME"
# part_C/{sub}/a/color/{N}.jpg, as read by third-party code (UNCONFIRMED as the owners' layout).
PARTC_FRAME_FOLDERS = ("part_C", "part_C/part_C", "RGB_Depth/part_C/part_C")

PARTC_LAYOUT = """\
ROOT/
  CAS(ME)3_part_C_ME.xlsx      sheet 'mockCrimeME': sub, count, onset, offset, au, emotion (no apex)
  part_C/1/a/color/N.jpg ...   {sub}/{the one video folder}/color/{N}.jpg (UNCONFIRMED)
  (the annotation may sit in ROOT/annotation/partC/)"""

_AU_SEPARATORS = re.compile(r"\s*[,\uff0c+]\s*")


def partc_action_units(value: str | None) -> str | None:
    """Part C's comma-separated AUs (one cell uses the Chinese comma U+FF0C) in the ``+`` form of the other
    datasets: ``4, 7`` and ``4\uff0c7`` give ``4+7``."""
    if value is None:
        return None
    codes = [c for c in _AU_SEPARATORS.split(value.strip()) if c]
    return "+".join(codes) or None


def _partc_subject_folder(frames_root: Path, subject: str) -> Path | None:
    found = find_child(frames_root, subject)
    if found is None and subject.isdigit() and frames_root.is_dir():
        # A folder name zero-padded or not ("01" for sub 1).
        found = next((p for p in frames_root.iterdir() if p.name.isdigit() and int(p.name) == int(subject)), None)
    return found


def load_casme3_partc(root: Path, *, annotation: Path, version: str, require_frames: bool = False) -> LoadedDataset:
    """Read CAS(ME)^3 Part C micro-expressions (the mock-crime part).

    Samples are keyed on (sub, count): sample id ``casme3_partc/1/2``, subject ``casme3_partc/1`` (Part C
    numbers its subjects on its own; nothing links them to Part A's ``spNO.x``). The file has no apex, and
    apex stays <NA> (``--sampling apex`` cannot use these samples); the midpoint some code uses is not an
    annotation. Emotions are the file's own (negative, positive, surprise, others).

    Args:
        root: dataset root (layout in ``PARTC_LAYOUT``).
        annotation: ``CAS(ME)3_part_C_ME.xlsx``.
        version: ``v1`` (the one distributed file).
        require_frames: exclude samples whose frames are missing instead of keeping them frameless.
    """
    frame = read_sheet(
        annotation,
        sheet=PARTC_SHEET,
        header=0,
        required=("sub", "count", "onset", "offset", "emotion"),
        dataset="casme3_partc",
    )
    raw = raw_frame(
        frame,
        {
            "subject_raw": "sub",
            "clip": "count",
            "onset": "onset",
            "offset": "offset",
            "emotion": "emotion",
            "action_units": "au" if "au" in frame.columns else None,
        },
        first_row=2,
    )
    raw["action_units"] = [partc_action_units(v) for v in raw["action_units"]]
    frames_root = next((root / d for d in PARTC_FRAME_FOLDERS if (root / d).is_dir()), root)

    def locate(rec: Mapping[str, Any]) -> Path | None:
        subject = _partc_subject_folder(frames_root, rec["subject_raw"])
        if subject is None or not subject.is_dir():
            return None
        if (subject / "color").is_dir():
            return subject / "color"
        videos = [p / "color" for p in subject.iterdir() if (p / "color").is_dir()]
        return videos[0] if len(videos) == 1 else None

    return build_loaded(
        raw,
        name="casme3_partc",
        dataset="casme3_partc",
        sample_id=lambda rec: f"casme3_partc/{rec['subject_raw']}/{rec['clip']}",
        locate=locate,
        fps=FPS,
        require_frames=require_frames,
        annotation_path=annotation,
        version=version,
        root=root,
        notes=["Part C has no apex column: apex is <NA> for every sample"],
    )


PARTC_SPEC = register_dataset(
    DatasetSpec(
        name="casme3_partc",
        title="CAS(ME)^3 Part C",
        loader=load_casme3_partc,
        layout=PARTC_LAYOUT,
        annotations=PARTC_ANNOTATIONS,
        default_version="v1",
    )
)


# --- Part A + Part C --------------------------------------------------------------------------------------

AC_LAYOUT = f"""\
ROOT/ holds both parts:
{LAYOUT}
{PARTC_LAYOUT}"""


def load_casme3_ac(
    root: Path, *, annotation: Path, version: str, part_c: str = "auto", require_frames: bool = False
) -> LoadedDataset:
    """Read CAS(ME)^3 Part A and Part C as one dataset (each sample keeps its part's ``dataset`` name).

    Args:
        root: a root holding both parts (``AC_LAYOUT``).
        annotation: the Part A workbook (``version`` ``v2`` or ``v1``, as for ``casme3``).
        version: the Part A annotation version.
        part_c: ``auto`` (the owners' Part C file name in ROOT or ROOT/annotation/partC/) or a path.
        require_frames: as for each part.
    """
    if part_c == "auto":
        found = first_existing(root, PARTC_ANNOTATIONS["v1"])
        if found is None:
            raise DatasetError(
                f"casme3_ac: no Part C annotation in {root} (looked for {' or '.join(PARTC_ANNOTATIONS['v1'])}).\n"
                f"Expected layout:\n{AC_LAYOUT}\nPass its path with -o part_c=PATH, or load casme3 for Part A alone."
            )
        partc_path = found
    else:
        partc_path = Path(part_c).expanduser()
        if not partc_path.is_file():
            raise DatasetError(f"casme3_ac: Part C annotation file {partc_path} does not exist")
    parts = {
        "casme3": load_casme3(root, annotation=annotation, version=version, require_frames=require_frames),
        "casme3_partc": load_casme3_partc(root, annotation=partc_path, version="v1", require_frames=require_frames),
    }
    notes = [f"part A: {annotation.name} version {version}", f"part C: {partc_path.name}"]
    for name, part in parts.items():
        notes += [f"{name}: {n}" for n in part.notes]
    return merge_loaded(
        "casme3_ac",
        parts,
        annotation_path=annotation,
        annotation_md5=parts["casme3"].annotation_md5,
        version=version,
        root=root,
        notes=notes,
    )


AC_SPEC = register_dataset(
    DatasetSpec(
        name="casme3_ac",
        title="CAS(ME)^3 Part A + Part C",
        loader=load_casme3_ac,
        layout=AC_LAYOUT,
        annotations=ANNOTATIONS,
        default_version="v2",
    )
)
