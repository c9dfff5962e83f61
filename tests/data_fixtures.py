"""Helpers that build dataset roots in ``tmp_path``: the real annotation files plus tiny generated frames.

The real annotation files live outside the repository; tests find them through the environment variable
``HLORA_MER_ANNOTATIONS`` (CI sets it to ``shared/annotations``) and skip with a reason when it is unset.
Frames are 8x8 JPEGs written from two cached byte strings (colour and grayscale), so building a root with
a few thousand frames takes well under a second.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import pytest

ENV = "HLORA_MER_ANNOTATIONS"

CASME2_FILES = {
    "20190701": "CASME2-coding-20190701.xlsx",
    "20140508": "CASME2-coding-20140508.xlsx",
}
CASME2_OBJECTIVE = "CASME2-ObjectiveClasses.xlsx"
SAMM_FILE = "SAMM_Micro_FACS_Codes_v2.xlsx"
CASME3_FILE = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
MEGC_FILE = "combined_3class_gt.csv"


def annotations_dir() -> Path:
    """The folder of real annotation files, or skip the test."""
    value = os.environ.get(ENV)
    if not value:
        pytest.skip(f"{ENV} is not set; point it at shared/annotations to run the tests on the real files")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{ENV}={value} is not a folder")
    return path


def annotation(name: str) -> Path:
    path = annotations_dir() / name
    if not path.is_file():
        pytest.skip(f"{name} is not in {ENV}={path.parent}")
    return path


def place(name: str, folder: Path, as_name: str | None = None) -> Path:
    """Copy a real annotation file into a dataset root in tmp_path (never into the repository)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (as_name or name)
    shutil.copyfile(annotation(name), target)
    return target


@lru_cache(maxsize=4)
def jpeg_bytes(gray: bool = False, value: int = 128) -> bytes:
    from PIL import Image

    mode, color = ("L", value) if gray else ("RGB", (value, 64, 200))
    buffer = io.BytesIO()
    Image.new(mode, (8, 8), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_frames(folder: Path, names: Iterable[str], gray: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(gray)
    for name in names:
        (folder / name).write_bytes(data)


def frames_from_table(table, folder_of, name_of, *, full: bool = False, gray: bool = False) -> None:
    """Write frames for each row: onset/apex/offset only, or every frame of onset..offset (``full``)."""
    import pandas as pd

    for row in table.itertuples(index=False):
        if full:
            numbers = range(int(row.onset), int(row.offset) + 1)
        else:
            numbers = sorted({int(v) for v in (row.onset, row.apex, row.offset) if not pd.isna(v)})
        write_frames(folder_of(row), (name_of(row, n) for n in numbers), gray=gray)


def casme2_root(base: Path, version: str = "20190701", *, frames: str | None = "key", release: str = "raw") -> Path:
    """A CASME II root: the coding file and ``CASME2_RAW_selected/subNN/<clip>/imgN.jpg`` (or ``Cropped``)."""
    from hlora_mer.data import load_dataset

    root = base / f"casme2_{version}_{release}"
    place(CASME2_FILES[version], root)
    if frames:
        table = load_dataset("casme2", root, version=version).table
        folder = root / ("CASME2_RAW_selected" if release == "raw" else "Cropped")
        prefix = "img" if release == "raw" else "reg_img"
        frames_from_table(
            table,
            lambda r: folder / f"sub{r.subject_raw}" / r.clip,
            lambda r, n: f"{prefix}{n}.jpg",
            full=frames == "full",
        )
    return root


def samm_root(base: Path, *, frames: str | None = "key") -> Path:
    """A SAMM root: the v2 workbook and ``NNN/NNN_x_y/NNN_<frame:05d>.jpg`` grayscale frames."""
    from hlora_mer.data import load_dataset

    root = base / "samm"
    place(SAMM_FILE, root)
    if frames:
        table = load_dataset("samm", root).table
        frames_from_table(
            table,
            lambda r: root / r.subject_raw / r.clip,
            lambda r, n: f"{r.subject_raw}_{n:05d}.jpg",
            full=frames == "full",
            gray=True,
        )
    return root


def casme3_root(base: Path, *, frames: str | None = "key") -> Path:
    """A CAS(ME)^3 Part A root: the v2 workbook and ``part_A/{Subject}/{Filename}/color/N.jpg``."""
    from hlora_mer.data import load_dataset

    root = base / "casme3"
    place(CASME3_FILE, root)
    if frames:
        table = load_dataset("casme3", root).table
        frames_from_table(
            table,
            lambda r: root / "part_A" / r.subject_raw / r.clip / "color",
            lambda r, n: f"{n}.jpg",
            full=frames == "full",
        )
    return root


def megc_smic_rows() -> list[tuple[str, str, str]]:
    """(subject, clip, emotion) of the SMIC rows of combined_3class_gt.csv, in disk spelling (s1, s1_ne_01)."""
    from hlora_mer.data.datasets.smic import smic_clip, smic_subject

    rows = []
    with open(annotation(MEGC_FILE), newline="") as handle:
        for cells in csv.reader(handle):
            if cells and cells[0] == "smic":
                emotion = ("negative", "positive", "surprise")[int(cells[3])]
                rows.append((smic_subject(cells[1]), smic_clip(cells[2]), emotion))
    return rows


def smic_root(base: Path, rows: Iterable[tuple[str, str, str]], *, variant: str = "HS", frames: int = 3) -> Path:
    """An SMIC root ``{variant}/s1/micro/<emotion>/<clip>/imageNNNNNN.jpg`` for the given clips."""
    root = base / "SMIC"
    for subject, clip, emotion in rows:
        folder = root / variant / subject / "micro" / emotion / clip
        write_frames(folder, (f"image{90000 + i:06d}.jpg" for i in range(frames)))
    return root


def megc_root(base: Path, casme2_version: str = "20140508") -> Path:
    """A MEGC2019 root: the official CSV, CASME2/ and SAMM/ roots (annotation only) and an SMIC tree."""
    root = base / "megc"
    place(MEGC_FILE, root)
    place(CASME2_FILES[casme2_version], root / "CASME2")
    place(SAMM_FILE, root / "SAMM")
    smic_root(root, megc_smic_rows(), frames=1)
    return root
