"""SMIC (Li et al., 2013), recognition set: HS, VIS and NIR, labelled by folder.

Facts (``docs/datasets.md``): no annotation file with frame indices is distributed for the
recognition set; the folder ``{HS|VIS|NIR}/s{N}/micro/{negative|positive|surprise}/s{N}_{ne|po|sur}_{NN}/``
*is* the label, and the clip folder is the micro-expression, so all of its frames are used (onset =
first frame, offset = last, no apex). Subject folders are not zero-padded (``s1``). Frames are
``image{N}.jpg`` (or ``reg_image{N}.bmp`` in the cropped set); the number is the absolute frame.
``non_micro`` clips are not micro-expressions and are listed in ``excluded`` unless asked for.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from hlora_mer.data.loading import RAW_FIELDS, LoadedDataset, build_loaded, find_child
from hlora_mer.data.registry import DatasetSpec, layout_error, register_dataset
from hlora_mer.data.table import EXCLUDED_COLUMNS, concat_tables, make_table
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

VARIANTS = {"hs": ("HS", 100.0), "vis": ("VIS", 25.0), "nir": ("NIR", 25.0)}
_SUBJECT = re.compile(r"^s0*(\d+)$", re.IGNORECASE)

LAYOUT = """\
ROOT/
  HS/                             one folder per camera: HS (100 fps), VIS, NIR (25 fps)
    s1/micro/negative/s1_ne_01/image090823.jpg ...
    s1/micro/positive/s1_po_01/...
    s1/micro/surprise/s1_sur_01/...
    s1/non_micro/...              (ignored; listed as excluded)
ROOT may also be the HS/ (VIS/, NIR/) folder itself, or SMIC_all_cropped/ (frames reg_imageN.bmp)."""


def smic_subject(name: str) -> str:
    """Canonical SMIC subject: ``s01`` (MEGC2019 CSV) and ``s1`` (disk) both give ``s1``."""
    match = _SUBJECT.match(name.strip())
    return f"s{int(match.group(1))}" if match else name.strip()


def smic_clip(name: str) -> str:
    """Canonical SMIC clip: ``s01_ne_01`` (MEGC2019 CSV) and ``s1_ne_01`` (disk) both give ``s1_ne_01``."""
    head, _, rest = name.strip().partition("_")
    return f"{smic_subject(head)}_{rest}" if rest else name.strip()


def find_variant_root(root: Path, variant: str) -> Path | None:
    folder, _ = VARIANTS[variant]
    for base in (root, root / "SMIC_all_cropped", root / "SMIC", root / "SMIC_all_raw"):
        candidate = find_child(base, folder) if base.is_dir() else None
        if candidate is not None and candidate.is_dir():
            return candidate
    if any(_SUBJECT.match(p.name) and (p / "micro").is_dir() for p in root.iterdir() if p.is_dir()):
        return root
    return None


def walk_smic(variant_root: Path) -> tuple[pd.DataFrame, dict[tuple[str, str], Path], list[dict[str, Any]]]:
    """Clip folders under a variant root: (raw rows, (subject, clip) -> folder, non-micro rows)."""
    rows, folders, non_micro = [], {}, []
    for subject_dir in sorted(p for p in variant_root.iterdir() if p.is_dir() and _SUBJECT.match(p.name)):
        subject = smic_subject(subject_dir.name)
        for kind in ("micro", "non_micro"):
            kind_dir = subject_dir / kind
            if not kind_dir.is_dir():
                continue
            for emotion_dir in sorted(p for p in kind_dir.iterdir() if p.is_dir()):
                clip_dirs = sorted(p for p in emotion_dir.iterdir() if p.is_dir())
                if kind == "non_micro" and not clip_dirs:
                    clip_dirs = [emotion_dir]  # non_micro/<clip>/ without an emotion level
                for clip_dir in clip_dirs:
                    clip = smic_clip(clip_dir.name)
                    if kind == "non_micro":
                        emotion = emotion_dir.name if clip_dir != emotion_dir else "non_micro"
                        non_micro.append({"subject_raw": subject, "clip": clip, "emotion": emotion})
                        continue
                    folders[(subject, clip)] = clip_dir
                    rows.append(
                        {
                            "subject_raw": subject,
                            "clip": clip,
                            "emotion": emotion_dir.name,
                            "source_row": str(clip_dir.relative_to(variant_root)),
                        }
                    )
    raw = pd.DataFrame(rows, columns=list(RAW_FIELDS), dtype=object)
    return raw, folders, non_micro


def load_smic(
    root: Path,
    *,
    annotation: None = None,
    version: None = None,
    variant: str = "hs",
    require_frames: bool = False,
) -> LoadedDataset:
    """Read the SMIC recognition set from its folders.

    Args:
        root: dataset root (layout in ``LAYOUT``).
        variant: ``hs``, ``vis`` or ``nir``.
        require_frames: exclude clip folders without frames (always excluded: they have no bounds).
    """
    variant = variant.lower()
    if variant not in VARIANTS:
        raise DatasetError(f"smic: unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
    folder, fps = VARIANTS[variant]
    variant_root = find_variant_root(root, variant)
    if variant_root is None:
        raise layout_error(SPEC, f"no {folder}/ folder with s*/micro/ clips under {root}")
    raw, folders, non_micro = walk_smic(variant_root)
    if raw.empty:
        raise layout_error(SPEC, f"no clip folders s*/micro/<emotion>/<clip>/ under {variant_root}")
    loaded = build_loaded(
        raw,
        name=f"smic_{variant}" if variant != "hs" else "smic",
        dataset="smic",
        sample_id=lambda rec: f"smic/{variant}/{rec['subject_raw']}/{rec['clip']}",
        locate=lambda rec: folders.get((rec["subject_raw"], rec["clip"])),
        fps=fps,
        require_frames=require_frames,
        annotation_path=None,
        version=variant,
        root=root,
        notes=[f"SMIC-{folder} clips from {variant_root} (labels are the folder names)"],
        bounds_from_frames=True,
    )
    if non_micro:
        extra = make_table(
            (
                {
                    "dataset": "smic",
                    "subject": f"smic/{r['subject_raw']}",
                    "subject_raw": r["subject_raw"],
                    "clip": r["clip"],
                    "sample_id": f"smic/{variant}/{r['subject_raw']}/non_micro/{r['clip']}",
                    "emotion": r["emotion"],
                    "fps": fps,
                    "kind": "non_micro",
                    "reason": "non_micro clip: not a micro-expression",
                }
                for r in non_micro
            ),
            EXCLUDED_COLUMNS,
        )
        loaded.excluded = concat_tables([loaded.excluded, extra], EXCLUDED_COLUMNS)
    return loaded


SPEC = register_dataset(DatasetSpec(name="smic", title="SMIC", loader=load_smic, layout=LAYOUT))
for _variant in ("hs", "vis", "nir"):
    register_dataset(
        DatasetSpec(
            name=f"smic_{_variant}",
            title=f"SMIC-{_variant.upper()}",
            loader=load_smic,
            layout=LAYOUT,
            fixed_options={"variant": _variant},
        )
    )
