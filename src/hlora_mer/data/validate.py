"""Cross-checks of a loaded dataset against its files, and the per-class / per-subject summary.

``check_dataset`` lists every problem with the sample it concerns: rows the loader excluded (invalid
intervals, bad values, duplicated keys), missing frame folders, missing onset / apex / offset frames,
gaps in the frame numbers, unreadable images and clips shorter than the number of sampled frames T.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hlora_mer.data.annotations.action_units import au_report
from hlora_mer.data.annotations.labels import LabelScheme, apply_label_scheme, get_scheme
from hlora_mer.data.loading import LoadedDataset

logger = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "excluded")

# Exclusion kinds that are membership decisions, not annotation problems.
_MEMBERSHIP_KINDS = frozenset({"non_micro", "not_in_megc2019", "expression_type"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one sample.

    Attributes:
        sample_id: the sample concerned.
        kind: short code (``missing_onset_frame``, ``frame_gap``, ``short_clip``, ...).
        message: what is wrong, in a sentence.
        severity: ``error`` (the sample cannot be used as is), ``warning`` (usable, but worth knowing) or
            ``excluded`` (the loader left the row out; listed so that nothing disappears unseen).
    """

    sample_id: str
    kind: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity:8s} {self.kind:22s} {self.sample_id}: {self.message}"


def _ranges(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``3-5, 9``."""
    out: list[str] = []
    start: int | None = None
    prev = 0  # the end of the current run; read only once start is set
    for n in sorted(numbers):
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = n
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ", ".join(out)


def _unreadable(path: str) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # any decoder failure means the frame cannot be used
        return f"{type(err).__name__}: {err}"
    return None


def check_dataset(loaded: LoadedDataset, num_frames: int = 8, *, images: str = "key") -> list[Problem]:
    """Cross-check a loaded dataset against its files.

    Args:
        loaded: result of ``load_dataset``.
        num_frames: T, the number of frames sampled per clip; shorter clips are reported (warning).
        images: which frames to open: ``key`` (onset, apex, offset, first and last), ``all`` or ``none``.

    Returns:
        Problems ordered by sample id, errors and warnings of kept samples and one ``excluded`` entry
        per row the loader left out for an annotation problem.
    """
    if images not in ("key", "all", "none"):
        raise ValueError(f"images must be 'key', 'all' or 'none', got {images!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    problems: list[Problem] = []
    row: Any  # a pandas row: pandas-stubs types its fields as any scalar, the loaders write strings
    for row in loaded.excluded.itertuples(index=False):
        if row.kind not in _MEMBERSHIP_KINDS:
            problems.append(Problem(row.sample_id, row.kind, row.reason, "excluded"))
    for row in loaded.table.itertuples(index=False):
        problems.extend(_check_row(row, num_frames, images))
    for sid, message in loaded.flagged.items():
        problems.append(Problem(sid, "owner_errata", message, "warning"))
    for sid, code, parts in au_report(loaded.table).unparsed:
        message = f"action-unit code {code!r}: cannot read {list(parts)}; the readable AUs are kept"
        problems.append(Problem(sid, "unparsed_action_units", message, "warning"))
    problems.sort(key=lambda p: (p.sample_id, SEVERITIES.index(p.severity), p.kind))
    counts = Counter(p.severity for p in problems)
    logger.info("%s: check found %s", loaded.name, dict(counts) or "no problems")
    return problems


def _check_row(row: Any, num_frames: int, images: str) -> list[Problem]:
    sid = row.sample_id
    out: list[Problem] = []
    onset = None if pd.isna(row.onset) else int(row.onset)
    offset = None if pd.isna(row.offset) else int(row.offset)
    apex = None if pd.isna(row.apex) else int(row.apex)
    interval = f"{onset}..{offset}" if onset is not None else "unknown interval"

    if apex is None and onset is not None and not row.dataset.startswith("smic"):
        out.append(Problem(sid, "no_apex", "the annotation gives no apex frame", "warning"))
    elif apex is not None and onset is not None and offset is not None and not onset <= apex <= offset:
        out.append(Problem(sid, "apex_outside_interval", f"apex {apex} is outside onset-offset {interval}", "warning"))

    if row.video_path is not None:
        if not Path(row.video_path).is_file():
            out.append(Problem(sid, "missing_video", f"video {row.video_path} does not exist"))
        elif onset is not None and offset is not None and offset - onset + 1 < num_frames:
            out.append(_short(sid, offset - onset + 1, num_frames))
        return out

    numbers = list(row.frame_numbers)
    if not numbers:
        out.append(
            Problem(sid, "missing_frames", f"no frame files found for frames {interval} (clip folder missing or empty)")
        )
        return out
    present = set(numbers)
    apex_inside = apex is not None and onset is not None and offset is not None and onset <= apex <= offset
    for name, value in (("onset", onset), ("apex", apex if apex_inside else None), ("offset", offset)):
        if value is not None and value not in present:
            out.append(
                Problem(
                    sid,
                    f"missing_{name}_frame",
                    f"{name} frame {value} is not on disk (found {numbers[0]}..{numbers[-1]})",
                )
            )
    if onset is not None and offset is not None:
        gaps = [n for n in range(onset, offset + 1) if n not in present and n not in (onset, offset, apex)]
        if gaps:
            out.append(Problem(sid, "frame_gap", f"{len(gaps)} frames missing inside {interval}: {_ranges(gaps)}"))
    if len(numbers) < num_frames:
        out.append(_short(sid, len(numbers), num_frames))
    if images != "none":
        paths = list(row.frame_paths)
        if images == "key":
            wanted = {numbers[0], numbers[-1], *(v for v in (onset, apex, offset) if v is not None)}
            paths = [p for n, p in zip(numbers, paths, strict=True) if n in wanted]
        for path in paths:
            error = _unreadable(path)
            if error:
                out.append(Problem(sid, "unreadable_image", f"cannot read {path} ({error})"))
    return out


def _short(sid: str, n: int, num_frames: int) -> Problem:
    return Problem(sid, "short_clip", f"{n} frames, fewer than T={num_frames}; sampling repeats frames", "warning")


@dataclass
class Summary:
    """Counts of a loaded (and optionally labelled) dataset, for ``hlora-mer data summary``."""

    name: str
    version: str | None
    annotation_path: str | None
    annotation_md5: str | None
    samples: int
    classes: dict[str, int]
    subjects: dict[str, int]
    datasets: dict[str, int]
    without_frames: int
    excluded: dict[str, int]
    scheme: str | None = None
    scheme_excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    action_units: dict[str, int] = field(default_factory=dict)
    """Active AU -> number of samples, most frequent first (empty when the dataset has no AU column)."""

    def format(self, top_aus: int = 15) -> str:
        lines = [
            f"dataset      {self.name}",
            f"annotation   {self.annotation_path or '(folders)'}",
            f"version      {self.version or '-'}",
            f"md5          {self.annotation_md5 or '-'}",
        ]
        lines += [f"note         {n}" for n in self.notes]
        title = f"label scheme {self.scheme}" if self.scheme else "native emotion"
        lines.append(
            f"samples      {self.samples}"
            + (f" ({self.without_frames} without frames on disk)" if self.without_frames else "")
        )
        if len(self.datasets) > 1:
            lines.append("per dataset  " + ", ".join(f"{k} {v}" for k, v in self.datasets.items()))
        lines.append(f"per class ({title}):")
        lines += [f"  {k:<16s} {v}" for k, v in self.classes.items()]
        lines.append(f"per subject ({len(self.subjects)} subjects):")
        lines += [f"  {k:<16s} {v}" for k, v in self.subjects.items()]
        excluded = {**self.excluded, **{f"scheme: {k}": v for k, v in self.scheme_excluded.items()}}
        lines.append(f"excluded     {sum(excluded.values())}")
        lines += [f"  {k:<24s} {v}" for k, v in excluded.items()]
        if self.action_units:
            shown = list(self.action_units.items())[:top_aus]
            lines.append(f"action units ({len(self.action_units)} distinct; top {len(shown)}, samples per AU):")
            lines += [f"  {k:<16s} {v}" for k, v in shown]
        return "\n".join(lines)


def summarize(loaded: LoadedDataset, scheme: str | LabelScheme | None = None) -> Summary:
    """Per-class and per-subject counts, exclusions by kind and the annotation version and md5.

    Args:
        loaded: result of ``load_dataset``.
        scheme: a label scheme to apply first; class counts are then in its class order.
    """
    table = loaded.table
    scheme_excluded: dict[str, int] = {}
    if scheme is not None:
        scheme = get_scheme(scheme)
        table, dropped = apply_label_scheme(table, scheme)
        classes = table["label"].value_counts().reindex(scheme.classes, fill_value=0)
        scheme_excluded = {str(k): int(v) for k, v in dropped["kind"].value_counts().items()}
    else:
        classes = table["emotion"].value_counts().sort_index()
    subjects = table["subject"].value_counts()
    subjects = subjects.reindex(sorted(subjects.index, key=_natural))
    frequencies = au_report(table).frequencies
    action_units = {f"AU{n}": c for n, c in sorted(frequencies.items(), key=lambda item: (-item[1], item[0]))}
    without = int(sum(1 for p, v in zip(table["frame_paths"], table["video_path"], strict=True) if not p and v is None))
    return Summary(
        name=loaded.name,
        version=loaded.version,
        annotation_path=str(loaded.annotation_path) if loaded.annotation_path else None,
        annotation_md5=loaded.annotation_md5,
        samples=len(table),
        classes={str(k): int(v) for k, v in classes.items()},
        subjects={str(k): int(v) for k, v in subjects.items()},
        datasets={str(k): int(v) for k, v in table["dataset"].value_counts().items()},
        without_frames=without,
        excluded={str(k): int(v) for k, v in loaded.excluded["kind"].value_counts().items()},
        scheme=scheme.name if scheme is not None else None,
        scheme_excluded=scheme_excluded,
        notes=list(loaded.notes),
        action_units=action_units,
    )


def _natural(text: str) -> tuple[Any, ...]:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))
