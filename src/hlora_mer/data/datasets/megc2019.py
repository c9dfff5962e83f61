"""The MEGC2019 composite: CASME II + SAMM + SMIC-HS, exactly the rows of ``combined_3class_gt.csv``.

The official ground truth (``Facial-Micro-ExpressionGC/MEGC2019``, ``combined_3class_gt.csv``) has no
header and four columns: dataset (``casme2``/``smic``/``samm``), subject (``sub01``/``s01``/``6``), clip
(``EP02_01f``/``s01_ne_01``/``006_1_2``) and label (0 negative, 1 positive, 2 surprise). Its names differ
from the owners' (``sub01`` vs ``01``, ``6`` vs ``006``, ``s01`` vs ``s1``) and are normalised here.

The composite table holds the 442 CSV rows, with each part's native emotion; every other row of the
parts is in ``excluded`` (kind ``not_in_megc2019``). Each CSV label is checked against the
``megc2019_3cls`` scheme applied to the native emotion, so a wrong annotation version is an error, not
a silent relabelling. Subjects are namespaced (``casme2/01``, ``samm/006``, ``smic/s1``): 68 in all.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from hlora_mer.data.annotations.labels import get_scheme
from hlora_mer.data.datasets.casme2 import ANNOTATIONS as CASME2_ANNOTATIONS
from hlora_mer.data.datasets.smic import smic_clip, smic_subject
from hlora_mer.data.loading import LoadedDataset, first_existing, md5sum, merge_loaded
from hlora_mer.data.registry import DatasetSpec, layout_error, load_dataset, register_dataset
from hlora_mer.data.table import EXCLUDED_COLUMNS, concat_tables, make_table
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

GT_FILE = "combined_3class_gt.csv"
GT_CLASSES = ("negative", "positive", "surprise")  # label 0, 1, 2

LAYOUT = """\
ROOT/
  combined_3class_gt.csv          official MEGC2019 ground truth (no header)
  CASME2/                         a CASME II root (coding file 20140508 or 20190701 + frames)
  SAMM/                           a SAMM root
  SMIC/                           an SMIC root (HS/s1/micro/<emotion>/<clip>/)
(casme2_root=, samm_root=, smic_root= point elsewhere; relative paths are taken from ROOT)"""


def read_megc_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of ``combined_3class_gt.csv``: dataset, subject, clip (canonical) and label, with the line number.

    Blank lines and ``,,,`` lines (in some copies) are skipped; a ``data,subject,clip,label`` header is allowed.
    """
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        for line_no, cells in enumerate(csv.reader(handle), start=1):
            cells = [c.strip() for c in cells]
            if not any(cells):
                continue
            if line_no == 1 and cells[0].lower() in ("data", "dataset"):
                continue
            if len(cells) < 4:
                raise DatasetError(f"megc2019: {path.name} line {line_no}: expected 4 columns, found {cells}")
            dataset, subject, clip, label = cells[:4]
            blank = [name for name, value in (("subject", subject), ("clip", clip)) if not value]
            if blank:
                raise DatasetError(
                    f"megc2019: {path.name} line {line_no}: {' and '.join(blank)} {'are' if len(blank) > 1 else 'is'} "
                    "blank; every row names the dataset, subject, clip and label (is this the right file?)"
                )
            if label not in ("0", "1", "2"):
                raise DatasetError(f"megc2019: {path.name} line {line_no}: label {label!r} is not 0, 1 or 2")
            if dataset == "casme2":
                subject = subject.removeprefix("sub").zfill(2)
            elif dataset == "samm":
                subject = subject.zfill(3)
            elif dataset == "smic":
                subject, clip = smic_subject(subject), smic_clip(clip)
            else:
                raise DatasetError(
                    f"megc2019: {path.name} line {line_no}: unknown dataset {dataset!r}; expected casme2, samm or smic"
                )
            rows.append(
                {
                    "dataset": dataset,
                    "subject_raw": subject,
                    "clip": clip,
                    "label": GT_CLASSES[int(label)],
                    "line": line_no,
                }
            )
    return rows


def _part_root(root: Path, value: str, part: str) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        raise layout_error(SPEC, f"the {part} part root {path} does not exist")
    return path


def load_megc2019(
    root: Path,
    *,
    annotation: Path,
    version: str,
    casme2_root: str = "CASME2",
    samm_root: str = "SAMM",
    smic_root: str = "SMIC",
    casme2_version: str = "auto",
    require_frames: bool = False,
) -> LoadedDataset:
    """Read the MEGC2019 composite.

    Args:
        root: composite root (layout in ``LAYOUT``).
        annotation: ``combined_3class_gt.csv``.
        version: ``megc2019``.
        casme2_root, samm_root, smic_root: the part roots, relative to ``root`` or absolute.
        casme2_version: CASME II coding file; ``auto`` takes 20140508 (the labels MEGC2019 used) if present,
            else 20190701, else updated. The composite rows are the same with 20140508 and 20190701.
        require_frames: passed to the part loaders.
    """
    gt = read_megc_csv(annotation)
    scheme = get_scheme("megc2019_3cls")
    c2_root = _part_root(root, casme2_root, "CASME II")
    if casme2_version == "auto":
        order = ("20140508", "20190701", "updated")
        casme2_version = next((v for v in order if first_existing(c2_root, CASME2_ANNOTATIONS[v])), "20140508")
    parts = {
        "casme2": load_dataset("casme2", c2_root, version=casme2_version, require_frames=require_frames),
        "samm": load_dataset("samm", _part_root(root, samm_root, "SAMM"), require_frames=require_frames),
        "smic": load_dataset("smic", _part_root(root, smic_root, "SMIC"), variant="hs", require_frames=require_frames),
    }
    wanted = {(r["dataset"], r["subject_raw"], r["clip"]): r for r in gt}
    if len(wanted) != len(gt):
        raise DatasetError(f"megc2019: {annotation.name} lists some clips twice")
    trimmed: dict[str, LoadedDataset] = {}
    mismatches: list[str] = []
    missing: list[str] = []
    for name, part in parts.items():
        table = part.table
        keys = list(zip(table["dataset"], table["subject_raw"], table["clip"], strict=True))
        inside = [k in wanted for k in keys]
        for key, emotion, ok in zip(keys, table["emotion"], inside, strict=True):
            if ok:
                try:
                    mapped = scheme.classify(name, emotion)
                except DatasetError as err:
                    mapped = str(err)
                if mapped != wanted[key]["label"]:
                    mismatches.append(
                        f"{'/'.join(key)}: csv {wanted[key]['label']}, annotation {emotion!r} -> {mapped}"
                    )
        out = table[[not ok for ok in inside]].copy()
        out["kind"] = "not_in_megc2019"
        out["reason"] = f"not in {annotation.name}"
        found = set(k for k, ok in zip(keys, inside, strict=True) if ok)
        absent = [r for k, r in wanted.items() if k[0] == name and k not in found]
        kept = table[inside]
        if name == "smic" and absent:
            # SMIC's folders are its annotation: a listed clip that is not on disk stays, frameless, and
            # 'hlora-mer data check' reports it.
            rows = make_table(
                {
                    "dataset": "smic",
                    "subject": f"smic/{r['subject_raw']}",
                    "subject_raw": r["subject_raw"],
                    "clip": r["clip"],
                    "sample_id": f"smic/hs/{r['subject_raw']}/{r['clip']}",
                    "emotion": r["label"],
                    "fps": 100.0,
                }
                for r in absent
            )
            logger.warning("megc2019: %d SMIC clips of %s are not on disk", len(rows), annotation.name)
            kept = concat_tables([kept, rows])
        elif absent:
            missing.extend(f"line {r['line']}: {name} {r['subject_raw']}/{r['clip']}" for r in absent)
        trimmed[name] = LoadedDataset(
            name=name,
            table=kept.reset_index(drop=True),
            excluded=concat_tables([part.excluded, out[list(EXCLUDED_COLUMNS)]], EXCLUDED_COLUMNS),
            annotation_path=part.annotation_path,
            annotation_md5=part.annotation_md5,
            version=part.version,
            root=part.root,
            notes=part.notes,
        )
    if missing:
        raise DatasetError(
            f"megc2019: {len(missing)} rows of {annotation.name} have no sample in the part annotations "
            f"(wrong file or version?): {missing[:10]}"
        )
    if mismatches:
        raise DatasetError(
            f"megc2019: {len(mismatches)} labels of {annotation.name} disagree with the part annotations "
            f"(wrong file or version?): {mismatches[:10]}"
        )
    notes = [
        f"part {n}: {p.annotation_path.name if p.annotation_path else 'folders'} version {p.version}"
        + (f" md5 {p.annotation_md5}" if p.annotation_md5 else "")
        for n, p in parts.items()
    ]
    return merge_loaded(
        "megc2019",
        trimmed,
        annotation_path=annotation,
        annotation_md5=md5sum(annotation),
        version=version,
        root=root,
        notes=notes,
    )


SPEC = register_dataset(
    DatasetSpec(
        name="megc2019",
        title="MEGC2019 composite",
        loader=load_megc2019,
        layout=LAYOUT,
        annotations={"megc2019": (GT_FILE,)},
        default_version="megc2019",
    )
)
