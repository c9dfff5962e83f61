"""Users' own data: a CSV manifest (also the MEVIEW input), and the class/clip folder tree of the official code.

**Manifest** (``manifest.csv`` in ROOT, or ``annotation=``): a CSV with a header row and the columns

=================  ========  ====================================================================
column             required  meaning
=================  ========  ====================================================================
subject            yes       subject id (namespaced by the dataset name in the table)
clip               yes       clip name, unique within the subject
path               yes       frame folder or video file, relative to the manifest's folder
emotion            yes       native emotion label
onset, offset      no        frame numbers (inclusive); default: first / last frame in the folder;
                             for videos 0-based decoded frame numbers, empty = the whole video
apex               no        apex frame number
fps                no        frame rate of this clip (default: the ``fps`` option)
objective_class    no        objective class I-VII
action_units       no        action-unit code
=================  ========  ====================================================================

**MEVIEW**: its distribution format is unconfirmed (no public code reads it), so MEVIEW is read from
a manifest in the format above, ``meview_manifest.csv`` in the MEVIEW root.

**Folder tree** (what the HLoRA-MER official code expects): ``ROOT/{class}/{clip}/`` frame folders
(or ``ROOT/{class}/{clip}.mp4``), the subject being the clip name up to its first ``_``
(``CASME2_data_5/disgust/01_EP19_05f/img1.jpg`` -> subject ``01``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from hlora_mer.data.frames import VIDEO_EXTENSIONS, is_frame_file
from hlora_mer.data.loading import RAW_FIELDS, LoadedDataset, build_loaded, raw_frame, read_sheet, text
from hlora_mer.data.registry import DatasetSpec, layout_error, register_dataset
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

MANIFEST_REQUIRED = ("subject", "clip", "path", "emotion")
MANIFEST_OPTIONAL = ("onset", "apex", "offset", "fps", "objective_class", "action_units")

MANIFEST_LAYOUT = """\
ROOT/
  manifest.csv                    columns: subject, clip, path, emotion [, onset, apex, offset, fps,
                                  objective_class, action_units]; path relative to ROOT
  <path>/frame0001.jpg ...        a frame folder per clip (numbers at the end of file names), or
  <path>.mp4                      a video file (onset/offset: 0-based decoded frames; empty = whole video)"""

MEVIEW_LAYOUT = """\
ROOT/
  meview_manifest.csv             MEVIEW's own distribution format is UNCONFIRMED: write this CSV
                                  (columns subject, clip, path, emotion [, onset, apex, offset, fps])
                                  as described in docs/datasets.md, 'MEVIEW'
  <path>/...                      the clip's frame folder or video file, relative to ROOT"""

TREE_LAYOUT = """\
ROOT/
  <class>/<subject>_<clip>/img1.jpg ...    e.g. disgust/01_EP19_05f/img46.jpg, anger/006_1_2/006_05562.jpg
  <class>/<subject>_<clip>.mp4             (a video file instead of a frame folder)"""


def _read_manifest(path: Path, dataset: str) -> tuple[pd.DataFrame, dict[int, float]]:
    frame = read_sheet(path, sheet=None, header=0, required=MANIFEST_REQUIRED, dataset=dataset)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    raw = raw_frame(
        frame,
        {
            "subject_raw": "subject",
            "clip": "clip",
            "emotion": "emotion",
            **{c: c for c in ("onset", "apex", "offset", "objective_class", "action_units") if c in frame.columns},
        },
        first_row=2,
    )
    raw["path"] = [
        text(frame.at[row - 2, "path"]) for row in raw["source_row"]
    ]  # source_row is the CSV line: data row i is line i + 2
    fps: dict[int, float] = {}
    if "fps" in frame.columns:
        for row, value in zip(range(2, 2 + len(frame)), frame["fps"], strict=True):
            value = text(value)
            if value is not None:
                try:
                    fps[row] = float(value)
                except ValueError:
                    raise DatasetError(f"{dataset}: {path.name} row {row}: fps {value!r} is not a number") from None
    return raw, fps


def _load_manifest_like(
    root: Path, annotation: Path, *, name: str, dataset: str, fps: float, require_frames: bool, version: str | None
) -> LoadedDataset:
    raw, row_fps = _read_manifest(annotation, dataset)
    base = annotation.parent
    paths = {}
    for rec in raw.to_dict("records"):
        value = rec["path"]
        target = None
        if value is not None:
            candidate = Path(value).expanduser()
            target = candidate if candidate.is_absolute() else base / candidate
        paths[rec["source_row"]] = target

    def locate(rec: Mapping[str, Any]) -> Path | None:
        target = paths.get(rec["source_row"])
        if target is not None and (target.exists() or target.suffix.lower() in VIDEO_EXTENSIONS):
            return target
        return None

    loaded = build_loaded(
        raw.drop(columns=["path"]),
        name=name,
        dataset=dataset,
        sample_id=lambda rec: f"{dataset}/{rec['subject_raw']}/{rec['clip']}",
        locate=locate,
        fps=fps,
        require_frames=require_frames,
        annotation_path=annotation,
        version=version,
        root=root,
        bounds_from_frames=True,
    )
    if row_fps:
        by_id = {}
        for rec in raw.to_dict("records"):
            if rec["source_row"] in row_fps:
                by_id[f"{dataset}/{rec['subject_raw']}/{rec['clip']}"] = row_fps[rec["source_row"]]
        loaded.table["fps"] = [
            by_id.get(s, f) for s, f in zip(loaded.table["sample_id"], loaded.table["fps"], strict=True)
        ]
    return loaded


def load_manifest(
    root: Path,
    *,
    annotation: Path,
    version: str,
    dataset_name: str = "manifest",
    fps: float = math.nan,
    require_frames: bool = False,
) -> LoadedDataset:
    """Read a CSV manifest of frame folders or videos (format in the module docstring).

    Args:
        dataset_name: value of the ``dataset`` column and the subject / sample-id namespace.
        fps: frame rate for rows without an ``fps`` value.
        require_frames: exclude rows whose frame folder or video is missing.
    """
    name = dataset_name.strip()
    if not name or "/" in name:
        raise DatasetError(f"manifest: dataset_name {dataset_name!r} must be non-empty and contain no '/'")
    return _load_manifest_like(
        root, annotation, name="manifest", dataset=name, fps=float(fps), require_frames=require_frames, version=None
    )


def load_meview(
    root: Path, *, annotation: Path, version: str, fps: float = 25.0, require_frames: bool = False
) -> LoadedDataset:
    """Read MEVIEW from a CSV manifest (its own distribution format is unconfirmed).

    Args:
        fps: frame rate for rows without an ``fps`` value (25 per the MEVIEW paper).
        require_frames: exclude rows whose frame folder or video is missing.
    """
    return _load_manifest_like(
        root, annotation, name="meview", dataset="meview", fps=float(fps), require_frames=require_frames, version=None
    )


def load_folder_tree(
    root: Path,
    *,
    annotation: None = None,
    version: None = None,
    dataset_name: str = "folder_tree",
    fps: float = math.nan,
    subject_separator: str = "_",
    require_frames: bool = False,
) -> LoadedDataset:
    """Read a ``ROOT/{class}/{clip}/`` tree: the class folder is the emotion, the clip prefix the subject.

    Args:
        dataset_name: value of the ``dataset`` column and the subject / sample-id namespace.
        fps: frame rate of the clips.
        subject_separator: the subject is the clip name up to the first occurrence of this string.
        require_frames: exclude clip folders without frames.
    """
    rows, targets = [], {}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for entry in sorted(class_dir.iterdir()):
            is_video = entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS
            if not (entry.is_dir() or is_video) or entry.name.startswith("."):
                continue
            clip = entry.stem if is_video else entry.name
            subject = clip.split(subject_separator, 1)[0] if subject_separator in clip else None
            rel = str(entry.relative_to(root))
            targets[rel] = entry
            rows.append({"subject_raw": subject, "clip": clip, "emotion": class_dir.name, "source_row": rel})
    if not rows:
        stray = [p.name for p in root.iterdir() if p.is_file() and is_frame_file(p)][:3]
        hint = f"ROOT holds frames ({stray}) directly: point it at the folder above the class folders." if stray else ""
        raise layout_error(SPEC_TREE, f"no <class>/<clip>/ folders under {root}", hint)
    raw = pd.DataFrame(rows, columns=list(RAW_FIELDS), dtype=object)
    loaded = build_loaded(
        raw,
        name="folder_tree",
        dataset=dataset_name,
        sample_id=lambda rec: f"{dataset_name}/{rec['subject_raw']}/{rec['clip']}",
        locate=lambda rec: targets.get(rec["source_row"]),
        fps=float(fps),
        require_frames=require_frames,
        annotation_path=None,
        version=None,
        root=root,
        bounds_from_frames=True,
    )
    if loaded.excluded["kind"].eq("missing_key").any():
        loaded.excluded.loc[loaded.excluded["kind"] == "missing_key", "reason"] = (
            f"clip name has no '{subject_separator}', so its subject is unknown (subject_separator option)"
        )
    return loaded


SPEC_MANIFEST = register_dataset(
    DatasetSpec(
        name="manifest",
        title="CSV manifest",
        loader=load_manifest,
        layout=MANIFEST_LAYOUT,
        annotations={"csv": ("manifest.csv",)},
        default_version="csv",
    )
)
SPEC_MEVIEW = register_dataset(
    DatasetSpec(
        name="meview",
        title="MEVIEW",
        loader=load_meview,
        layout=MEVIEW_LAYOUT,
        annotations={"manifest": ("meview_manifest.csv",)},
        default_version="manifest",
    )
)
SPEC_TREE = register_dataset(
    DatasetSpec(name="folder_tree", title="class/clip folder tree", loader=load_folder_tree, layout=TREE_LAYOUT)
)
