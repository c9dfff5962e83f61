"""Apply a trained model to new clips: video files, frame folders, a CSV manifest of clips, or a dataset.

Every clip goes the way the model's training clips went: a row of the canonical sample table
(``hlora_mer.data.table``) is made for it, ``hlora_mer.preprocess.run.preprocess_table`` samples and aligns
it with the preprocessing recorded in the checkpoint (``TrainedModel.params``) into a clip cache, and
``AlignedClipDataset`` normalises it for the model. The cache is kept between calls (default
:func:`default_cache_dir`): a clip whose files and frames did not change is not aligned again.

A clip that cannot be predicted (unreadable file, too few frames, no face found) is reported with its
reason and the others go on; nothing is dropped silently. Mistakes in what was asked (an input that
does not exist, a manifest without a ``path`` column, a model that predicts other classes than the
user expects) raise :class:`~hlora_mer.errors.UserError` before any work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hlora_mer.data.frames import VIDEO_EXTENSIONS, list_frames
from hlora_mer.errors import DatasetError, UserError

if TYPE_CHECKING:
    from hlora_mer.data.annotations.labels import LabelScheme
    from hlora_mer.inference.load import TrainedModel
    from hlora_mer.preprocess.landmarks import LandmarkDetector
    from hlora_mer.preprocess.run import PreprocessParams

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "onset", "offset", "apex", "id")
OUTPUT_FORMATS: tuple[str, ...] = (".csv", ".json")
# A clip needs a few frames for the model to see motion; fewer than this is refused, not guessed at.
MIN_FRAMES = 2
_CACHE_PREFIX = "predict"

#: ``progress(stage, done, total)``: stage ``"align"`` (per clip, failures included) then ``"predict"``.
Progress = Callable[[str, int, int], None]


def default_cache_dir() -> Path:
    """Where aligned clips are kept between calls: ``$XDG_CACHE_HOME/hlora-mer/predict``
    (``~/.cache/hlora-mer/predict``). Safe to delete at any time."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "hlora-mer" / "predict"


@dataclass
class ClipRequest:
    """One clip to predict, as the user named it.

    Attributes:
        name: What the user sees in the output (the path as given, or the manifest's ``id``).
        source: The video file or frame folder ("" when there is none, e.g. a dataset clip whose folder
            is missing).
        kind: ``"video"`` or ``"frames"``.
        onset, offset, apex: Frame numbers; None: the first / last frame of the clip, no apex.
        frames: ``(numbers, paths)`` when already known (dataset rows); else listed from ``source``.
        truth: The ground-truth class, for dataset clips the label scheme classifies.
        error: Why the clip cannot be predicted, when that is known before reading it (a bad manifest row).
    """

    name: str
    source: str
    kind: Literal["video", "frames"] = "frames"
    onset: int | None = None
    offset: int | None = None
    apex: int | None = None
    frames: tuple[tuple[int, ...], tuple[str, ...]] | None = None
    truth: str | None = None
    error: str | None = None


@dataclass
class ClipPrediction:
    """The outcome for one clip: probabilities (in the model's label order) or the reason it failed."""

    name: str
    source: str
    onset: int | None = None
    offset: int | None = None
    frames: list[int] | None = None  # the sampled frame numbers the model saw
    probabilities: dict[str, float] | None = None
    truth: str | None = None
    error: str | None = None
    cache_key: str | None = None  # the aligned clip's sample_id in the cache (``PredictionReport.cache_dir``)

    @property
    def prediction(self) -> str | None:
        probs = self.probabilities
        return max(probs, key=lambda k: probs[k]) if probs else None


@dataclass
class PredictionReport:
    """Predictions of one model on a list of clips, in input order."""

    checkpoint: Path
    labels: list[str]
    clips: list[ClipPrediction]
    cache_dir: Path | None = None
    label_scheme: str | None = None
    #: Things worth telling the user (rows a dataset loader or label scheme left out, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[ClipPrediction]:
        return [c for c in self.clips if c.error is not None]

    @property
    def predicted(self) -> list[ClipPrediction]:
        return [c for c in self.clips if c.error is None]

    @property
    def has_truth(self) -> bool:
        return any(c.truth is not None for c in self.clips)

    def scores(self) -> dict[str, float] | None:
        """Accuracy and UF1 over the predicted clips that have a ground truth (None if there are none)."""
        from hlora_mer.evaluation.metrics import scores

        scored = [c for c in self.predicted if c.truth is not None]
        if not scored:
            return None
        index = {label: i for i, label in enumerate(self.labels)}
        truth = [index[str(c.truth)] for c in scored]
        pred = [index[str(c.prediction)] for c in scored]
        result = scores(truth, pred, len(self.labels))
        return {"acc": result["acc"], "uf1": result["uf1"], "clips": float(len(scored))}

    def records(self) -> list[dict[str, Any]]:
        """One flat row per clip, for CSV: clip, prediction, ``p_<label>``..., [truth], source, frames, error."""
        rows = []
        for clip in self.clips:
            row: dict[str, Any] = {"clip": clip.name, "prediction": clip.prediction or ""}
            for label in self.labels:
                p = clip.probabilities.get(label) if clip.probabilities else None
                row[f"p_{label}"] = "" if p is None else f"{p:.6f}"
            if self.has_truth:
                row["truth"] = clip.truth or ""
            row["source"] = clip.source
            row["onset"] = "" if clip.onset is None else clip.onset
            row["offset"] = "" if clip.offset is None else clip.offset
            row["frames"] = " ".join(map(str, clip.frames)) if clip.frames else ""
            row["error"] = clip.error or ""
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--out FILE.json``)."""
        scored = self.scores()
        return {
            "model": str(self.checkpoint),
            "labels": list(self.labels),
            "label_scheme": self.label_scheme,
            "summary": {
                "clips": len(self.clips),
                "predicted": len(self.predicted),
                "failed": len(self.failed),
                **({"acc": scored["acc"], "uf1": scored["uf1"], "scored": int(scored["clips"])} if scored else {}),
            },
            "notes": list(self.notes),
            "clips": [
                {
                    "clip": c.name,
                    "prediction": c.prediction,
                    "probabilities": c.probabilities,
                    **({"truth": c.truth} if self.has_truth else {}),
                    "source": c.source,
                    "onset": c.onset,
                    "offset": c.offset,
                    "frames": c.frames,
                    "error": c.error,
                }
                for c in self.clips
            ],
        }


# --------------------------------------------------------------------------------------------------
# Inputs


def input_kind(path: str | Path) -> Literal["video", "frames", "manifest"]:
    """What an INPUT on the command line is: a video file, a folder of frames or a CSV manifest.

    Raises:
        UserError: it does not exist, or is none of these.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"input {path} does not exist; pass video files, folders of frames or a CSV manifest")
    if path.is_dir():
        return "frames"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "manifest"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    raise UserError(
        f"input {path} is neither a video ({', '.join(VIDEO_EXTENSIONS)}), a folder of frames nor a CSV manifest "
        "(.csv with a 'path' column); for a single image, put the clip's frames in a folder"
    )


def requests_from_inputs(
    inputs: Sequence[str | Path], *, onset: int | None = None, offset: int | None = None, apex: int | None = None
) -> list[ClipRequest]:
    """The clips that ``inputs`` name, in order (a manifest expands to its rows).

    ``onset``, ``offset`` and ``apex`` apply to a single video or frame folder only.

    Raises:
        UserError: an input that does not exist or is of no known kind; frame numbers given for several
            clips or a manifest; a manifest that cannot be read; the same clip name twice.
    """
    if not inputs:
        raise UserError("no input: pass video files, folders of frames or a CSV manifest")
    kinds = [input_kind(p) for p in inputs]
    bounds = {"--onset": onset, "--offset": offset, "--apex": apex}
    given = [k for k, v in bounds.items() if v is not None]
    if given and (len(inputs) > 1 or kinds[0] == "manifest"):
        raise UserError(
            f"{'/'.join(given)} {'applies' if len(given) == 1 else 'apply'} to one video or frame folder; "
            "for several clips, list them in a CSV manifest with onset/offset columns"
        )
    for name, value in bounds.items():
        if value is not None and value < 0:
            raise UserError(f"{name} must be a frame number >= 0, got {value}")
    if onset is not None and offset is not None and offset < onset:
        raise UserError(f"--offset {offset} is before --onset {onset}")
    requests: list[ClipRequest] = []
    for path, kind in zip(inputs, kinds, strict=True):
        if kind == "manifest":
            requests.extend(read_manifest(path))
        else:
            requests.append(ClipRequest(str(path), str(path), kind, onset, offset, apex))
    _check_unique_names(requests)
    return requests


def _check_unique_names(requests: Sequence[ClipRequest]) -> None:
    seen: dict[str, int] = {}
    for r in requests:
        seen[r.name] = seen.get(r.name, 0) + 1
    repeated = [name for name, count in seen.items() if count > 1]
    if repeated:
        raise UserError(
            f"{len(repeated)} clip name(s) appear more than once: {', '.join(repeated[:5])}; every clip needs its "
            "own name in the output: give manifest rows distinct 'id' values, or list each input once"
        )


def _frame_value(value: Any, column: str) -> int | None:
    """A manifest cell as a frame number (blank -> None); raises ValueError naming the column."""
    from hlora_mer.data.loading import parse_frame_value

    try:
        return parse_frame_value(value)
    except ValueError as err:
        raise ValueError(f"{column} {err} (a whole number >= 0)") from None


def read_manifest(path: str | Path) -> list[ClipRequest]:
    """The clips of a CSV manifest: column ``path`` (a video or frame folder; relative paths are relative to
    the manifest's folder) and optional ``onset``, ``offset``, ``apex`` (frame numbers) and ``id`` (the
    clip's name in the output; default: the path as written).

    A row with a bad value becomes a failed clip with its reason; the other rows go on.

    Raises:
        UserError: the file cannot be read as CSV, has no ``path`` column or no rows.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"cannot read the manifest {path} as CSV ({type(err).__name__}: {err})") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if "path" not in frame.columns:
        raise UserError(
            f"the manifest {path} has no 'path' column (found: {', '.join(frame.columns) or 'none'}); expected "
            f"columns {', '.join(MANIFEST_COLUMNS)} (only 'path' is required)"
        )
    if frame.empty:
        raise UserError(f"the manifest {path} lists no clips; add one row per video or frame folder")
    ignored = [c for c in frame.columns if c not in MANIFEST_COLUMNS]
    if ignored:
        logger.info("manifest %s: ignoring column(s) %s", path, ", ".join(ignored))
    requests = []
    for line, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        written = str(row["path"]).strip()
        name = str(row.get("id", "") or "").strip() or written or f"{path.name}:{line}"
        source = path.parent / written if written else path
        request = ClipRequest(name, str(source) if written else "")
        try:
            if not written:
                raise ValueError("the path is empty")
            request.onset, request.offset, request.apex = (
                _frame_value(row.get(c), c) for c in ("onset", "offset", "apex")
            )
            if request.onset is not None and request.offset is not None and request.offset < request.onset:
                raise ValueError(f"offset {request.offset} is before onset {request.onset}")
            request.kind = _source_kind(source)
        except ValueError as err:
            request.error = f"manifest {path.name} line {line}: {err}"
        requests.append(request)
    return requests


def _source_kind(source: Path) -> Literal["video", "frames"]:
    """A manifest row's source: a frame folder or a video file (ValueError naming the problem)."""
    if source.is_dir():
        return "frames"
    if not source.exists():
        raise ValueError(f"{source} does not exist")
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        return "video"
    raise ValueError(f"{source} is neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a folder of frames")


def requests_from_dataset(
    name: str,
    root: str | Path,
    scheme: LabelScheme | None,
    *,
    required: bool = False,
    annotation: str | Path | None = None,
) -> tuple[list[ClipRequest], list[str]]:
    """Every sample of a dataset root (``hlora_mer.data.load_dataset``), with its ground truth where
    ``scheme`` classifies it; returns ``(requests, notes)``.

    Args:
        name: The dataset's registry name.
        root: Its root folder, as downloaded.
        scheme: The label scheme that gives the ground truth (the model's); None: no ground truth.
        required: The user chose ``scheme``: a scheme that does not cover the dataset is an error, not a
            note.
        annotation: The annotation file, where it is not the one found under ``root``.
    """
    from hlora_mer.data import apply_label_scheme, load_dataset

    loaded = load_dataset(name, root, annotation=annotation)
    table = loaded.table
    notes: list[str] = []
    if len(loaded.excluded):
        notes.append(
            f"{len(loaded.excluded)} annotation row(s) of {name} were left out by its loader "
            f"('hlora-mer data check {name} {root}' lists them)"
        )
    truth: dict[str, str] = {}
    if scheme is not None:
        try:
            labelled, dropped = apply_label_scheme(table, scheme, unknown="exclude")
        except DatasetError as err:
            if required:
                raise
            notes.append(f"no ground truth: {err}")
        else:
            truth = dict(zip(labelled["sample_id"].astype(str), labelled["label"].astype(str), strict=True))
            if len(dropped):
                notes.append(
                    f"{len(dropped)} clip(s) have no class in label scheme {scheme.name}; predicted, not scored"
                )
    requests = []
    for row in table.to_dict("records"):
        sample_id = str(row["sample_id"])
        paths = tuple(str(p) for p in (row["frame_paths"] or ()))
        video = row["video_path"]
        onset, offset, apex = (None if pd.isna(row[c]) else int(row[c]) for c in ("onset", "offset", "apex"))
        request = ClipRequest(sample_id, "", onset=onset, offset=offset, apex=apex, truth=truth.get(sample_id))
        if paths:
            request.source = str(Path(paths[0]).parent)
            request.frames = (tuple(int(n) for n in row["frame_numbers"]), paths)
        elif isinstance(video, str) and video:
            request.source, request.kind = video, "video"
        else:
            request.error = "the clip has no frames on disk (its folder was not found under the dataset root)"
        requests.append(request)
    return requests, notes


# --------------------------------------------------------------------------------------------------
# Labels


def check_labels(
    checkpoint: Path,
    meta: dict[str, Any],
    *,
    expect_labels: Sequence[str] | None = None,
    label_scheme: str | None = None,
) -> LabelScheme | None:
    """Refuse a model whose classes are not those the user expects; returns the scheme to score with.

    ``expect_labels`` and the classes of ``label_scheme`` are compared with the checkpoint's labels as sets
    (the output names each probability, so order does not matter). The scheme returned is the user's
    (classes checked) or else the checkpoint's own, where it records a registered one.

    Raises:
        UserError: another set of classes, both sides named; an unknown scheme name.
    """
    from hlora_mer.data import get_scheme

    labels = list(meta.get("labels") or [])
    own = meta.get("label_scheme")
    model_side = f"{labels}" + (f" (label scheme {own})" if own else "")
    if expect_labels is not None:
        expected = [s.strip() for s in expect_labels if s.strip()]
        if set(expected) != set(labels) or len(expected) != len(labels):
            raise UserError(
                f"the model {checkpoint} predicts {model_side}, but --expect-labels asks for {expected}; "
                "use a model trained on those classes, or correct --expect-labels"
            )
    recorded = _recorded_scheme(meta)
    if label_scheme is not None:
        own_record = recorded is not None and label_scheme.strip().lower() == str(own).strip().lower()
        scheme = recorded if own_record and recorded is not None else get_scheme(label_scheme)
        if set(scheme.classes) != set(labels) or len(scheme.classes) != len(labels):
            raise UserError(
                f"the model {checkpoint} predicts {model_side}, but label scheme {scheme.name} has classes "
                f"{list(scheme.classes)}; use a model trained with that scheme, or choose a scheme with the "
                "model's classes ('hlora-mer data list' shows them)"
            )
        return scheme
    if own:
        try:
            return get_scheme(own)
        except DatasetError:
            if recorded is not None:  # a composite from the user's own YAML: rebuilt from the checkpoint
                return recorded
            logger.warning("the model's label scheme %s is not known to this version of hlora-mer", own)
    return None


def _recorded_scheme(meta: dict[str, Any]) -> LabelScheme | None:
    """The label scheme the checkpoint wrote out, or None (older checkpoints, or one that cannot be read)."""
    from hlora_mer.models.checkpoint import SCHEME_KEY, label_scheme_from_record

    record = meta.get(SCHEME_KEY)
    if not record:
        return None
    try:
        return label_scheme_from_record(record)
    except (KeyError, TypeError, ValueError) as err:
        logger.warning("the checkpoint's label scheme cannot be rebuilt (%s: %s)", type(err).__name__, err)
        return None


# --------------------------------------------------------------------------------------------------
# Prediction


def _cache_key(request: ClipRequest, onset: int, offset: int) -> str:
    """The clip's id in the cache: the same file and frames give the same id in every call."""
    source = str(Path(request.source).resolve()) if request.source else request.name
    text = json.dumps([source, onset, offset, request.apex])
    return f"{_CACHE_PREFIX}/{hashlib.sha1(text.encode()).hexdigest()[:20]}"


def _resolve(request: ClipRequest, notes: list[str] | None = None) -> dict[str, Any]:
    """A canonical table row for one clip (DatasetError / ValueError naming what is wrong with it).

    What is worth a word but does not stop the clip (a video that ends before its header's frame count,
    frames asked for past the end of a folder, frames of several sizes) is logged as a warning and added
    to ``notes``.
    """

    def note(text: str) -> None:
        logger.warning("%s", text)
        if notes is not None:
            notes.append(text)

    onset, offset = request.onset, request.offset
    numbers: tuple[int, ...] = ()
    paths: tuple[str, ...] = ()
    video: str | None = None
    if request.kind == "frames":
        if request.frames is not None:
            numbers, paths = request.frames
        else:
            try:
                numbers, paths = list_frames(request.source)
            except OSError as err:
                raise DatasetError(f"cannot list the frames of {request.source}: {err.strerror or err}") from err
        if not numbers:
            nested = request.frames is None and any(p.is_dir() for p in Path(request.source).iterdir())
            raise DatasetError(
                f"no frames in {request.source}: expected image files (.jpg, .png, ...) with the frame number at "
                "the end of the name, e.g. img46.jpg" + ("; for a dataset root, add --dataset NAME" if nested else "")
            )
        onset = numbers[0] if onset is None else onset
        offset = numbers[-1] if offset is None else offset
        count = sum(onset <= n <= offset for n in numbers)
        held = f"the folder holds {numbers[0]}..{numbers[-1]}"
        where = f"{count} frame(s) in {onset}..{offset} ({held})"
        if request.frames is None and count >= MIN_FRAMES and (onset < numbers[0] or offset > numbers[-1]):
            note(
                f"{request.name}: frames {onset}..{offset} were asked for, but {held}; predicted on the "
                f"{count} frame(s) there"
            )
    else:
        from hlora_mer.data.video import count_video_frames

        video = request.source
        total = count_video_frames(video)
        header = _header_frame_count(video)
        if header is not None and total < header:
            note(
                f"{request.name}: the video's header says {header} frames but only {total} decode (0..{total - 1}); "
                "the file ends early (cut off?), so the clip is what is there"
            )
        onset = 0 if onset is None else onset
        offset = total - 1 if offset is None else offset
        if onset > total - 1 or offset > total - 1:
            raise DatasetError(
                f"frames {onset}..{offset} were asked for, but the video decodes to {total} frames "
                f"(0..{total - 1}); give an onset and offset within 0..{total - 1}"
            )
        count = offset - onset + 1
        where = f"{count} frame(s) in {onset}..{offset}"
    if offset < onset:
        raise DatasetError(f"offset {offset} is before onset {onset}")
    if count < MIN_FRAMES:
        raise DatasetError(f"too few frames: {where}; a clip needs at least {MIN_FRAMES}")
    if request.apex is not None and not onset <= request.apex <= offset:
        raise DatasetError(
            f"apex {request.apex} is outside the clip's onset..offset ({onset}..{offset}); give an apex within it, "
            "or none"
        )
    if paths:
        sizes = _frame_sizes([p for n, p in zip(numbers, paths, strict=True) if onset <= n <= offset])
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h} ({k} frame(s))" for (w, h), k in sorted(sizes.items()))
            note(
                f"{request.name}: its frames have {len(sizes)} sizes: {shown}; the face is found on one frame and "
                "the same alignment applied to all, so frames of another size are misaligned"
            )
    return {
        "sample_id": _cache_key(request, onset, offset),
        "frame_paths": paths,
        "frame_numbers": numbers,
        "video_path": video,
        "onset": onset,
        "apex": request.apex,
        "offset": offset,
    }


def _header_frame_count(path: str) -> int | None:
    """The frame count a video's container declares (None when it declares none or cannot be opened)."""
    import av

    try:
        with av.open(path) as container:
            frames = int(container.streams.video[0].frames) if container.streams.video else 0
    except Exception:  # count_video_frames has already decoded it: this is only a second opinion
        return None
    return frames or None


def _frame_sizes(paths: Sequence[str]) -> dict[tuple[int, int], int]:
    """(width, height) -> number of frames, from the image headers (unreadable files are left to alignment)."""
    from PIL import Image

    sizes: dict[tuple[int, int], int] = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                size = (int(image.width), int(image.height))
        except (OSError, ValueError):
            continue
        sizes[size] = sizes.get(size, 0) + 1
    return sizes


def _check_video_support(requests: Sequence[ClipRequest]) -> None:
    if not any(r.kind == "video" and r.error is None for r in requests):
        return
    import importlib.util

    if importlib.util.find_spec("av") is None:
        raise UserError("reading video files needs PyAV: pip install 'hlora-mer[video]' (or: pip install av)")


def predict_clips(
    trained: TrainedModel,
    requests: Sequence[ClipRequest],
    cache_dir: str | Path | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    workers: int | None = None,
    progress: Progress | None = None,
    detector: LandmarkDetector | None = None,
) -> PredictionReport:
    """Align ``requests`` as the model's training clips were, and predict them.

    Args:
        trained: The model (``hlora_mer.inference.load.load_trained``).
        requests: The clips, e.g. from :func:`requests_from_inputs`.
        cache_dir: Folder of the aligned-clip cache (default :func:`default_cache_dir`); clips go to a
            sub-folder named after the preprocessing parameters, as with ``hlora-mer preprocess``.
        device: Torch device for the model.
        batch_size: Clips per forward pass.
        workers: Alignment worker processes; None: one without a face detector, else up to 8 (CPUs).
        progress: Called as ``progress(stage, done, total)``.
        detector: A ready landmark detector instead of the one the checkpoint names (tests, custom backends).

    Returns:
        One :class:`ClipPrediction` per request, in order; failed clips carry their reason.
    """
    from hlora_mer.inference.load import check_landmark_model
    from hlora_mer.preprocess.run import preprocess_table
    from hlora_mer.training.clip_dataset import AlignedClipDataset

    if batch_size < 1:
        raise UserError(f"the batch size must be at least 1, got {batch_size}")
    if detector is None:
        check_landmark_model(trained)
    params = trained.params
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if workers is None:
        workers = 1 if params.detector == "none" else min(os.cpu_count() or 1, 8)
    _check_video_support(requests)
    total = len(requests)
    aligned = 0

    def step(stage: str, done: int, of: int) -> None:
        if progress is not None:
            progress(stage, done, of)

    results = [ClipPrediction(r.name, r.source, r.onset, r.offset, truth=r.truth, error=r.error) for r in requests]
    notes: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    owner: dict[str, list[int]] = {}  # cache key -> indices of the requests (a clip named twice shares one)
    for i, request in enumerate(requests):
        if request.error is None:
            try:
                row = _resolve(request, notes)
            except (UserError, ValueError) as err:
                results[i].error = str(err)
            else:
                results[i].onset, results[i].offset = row["onset"], row["offset"]
                results[i].cache_key = row["sample_id"]
                rows[row["sample_id"]] = row
                owner.setdefault(row["sample_id"], []).append(i)
                continue
        aligned += 1
        step("align", aligned, total)
    if params.sampling == "apex" and not params.estimate_apex and any(r["apex"] is None for r in rows.values()):
        logger.warning(
            "the model was trained with apex sampling; clips without an apex frame are sampled uniformly "
            "(give --apex, or an apex column in the manifest)"
        )

    cache_path: Path | None = None
    if rows:
        table = pd.DataFrame(list(rows.values()))
        table["apex"] = table["apex"].astype("Int64")

        def on_clip(result: Any) -> None:
            nonlocal aligned
            aligned += len(owner[result.sample_id])
            step("align", aligned, total)

        report = preprocess_table(table, cache_root, params, workers=workers, progress=on_clip, detector=detector)
        cache_path = report.cache_dir
        logger.info(
            "aligned clips: %d new, %d from the cache, %d failed (%s)",
            len(report.done),
            len(report.skipped),
            len(report.failed),
            cache_path,
        )
        for key, reason in report.failed.items():
            for i in owner[key]:
                results[i].error = reason
        ready = [key for key in rows if key not in report.failed]
        if ready:
            clip_table = pd.DataFrame({"sample_id": ready, "subject": "", "label_index": 0})
            dataset = AlignedClipDataset(clip_table, report.cache_dir, num_frames=trained.num_frames)
            probs = _predict(trained, dataset, device=device, batch_size=batch_size, step=step)
            for key, p in zip(ready, probs, strict=True):
                entry = dataset.cache.clips.get(key, {})
                for i in owner[key]:
                    results[i].probabilities = {label: float(v) for label, v in zip(trained.labels, p, strict=True)}
                    results[i].frames = [int(n) for n in entry.get("frame_numbers", [])] or None
    out = PredictionReport(trained.checkpoint, list(trained.labels), results, cache_path, notes=notes)
    out.label_scheme = trained.meta.get("label_scheme")
    logger.debug("predicted %d of %d clips (%d failed)", len(out.predicted), len(out.clips), len(out.failed))
    return out


def prepare_clip(
    trained: TrainedModel | PreprocessParams,
    path: str | Path,
    *,
    onset: int | None = None,
    offset: int | None = None,
    apex: int | None = None,
    cache_dir: str | Path | None = None,
    detector: LandmarkDetector | None = None,
) -> tuple[np.ndarray, list[int]]:
    """One video or frame folder sampled and aligned exactly as :func:`predict_clips` does (same cache).

    This is the path from a file to the model's input: normalise the result with
    ``hlora_mer.training.clip_dataset.normalize_clip`` (or use :func:`hlora_mer.inference.export.prepare_input`, which
    does both for an exported model).

    Args:
        trained: The model (its checkpoint's preprocessing is used), or the preprocessing itself (e.g. the
            ``preprocess`` of an export's ``hlora_mer.json``).
        path: A video file or a folder of frames.
        onset, offset: First and last frame number of the clip (default: the whole video or folder).
        apex: The apex frame number, used by ``apex`` sampling.
        cache_dir: The aligned-clip cache (default :func:`default_cache_dir`).
        detector: A ready landmark detector instead of the one the preprocessing names.

    Returns:
        ``(clip, frame numbers)``: the ``(T, S, S, 3)`` uint8 clip and the source frame of each of its frames.

    Raises:
        UserError: the path is no clip, or the clip cannot be read, is too short or shows no face.
    """
    from hlora_mer.inference.load import check_landmark_model
    from hlora_mer.preprocess.cache import open_cache_dir
    from hlora_mer.preprocess.run import PreprocessParams, preprocess_table

    params = trained if isinstance(trained, PreprocessParams) else trained.params
    if detector is None and not isinstance(trained, PreprocessParams):
        check_landmark_model(trained)
    if input_kind(path) == "manifest":
        raise UserError(f"{path} is a manifest of many clips; pass one video file or frame folder")
    request = requests_from_inputs([path], onset=onset, offset=offset, apex=apex)[0]
    _check_video_support([request])
    try:
        row = _resolve(request)
    except (UserError, ValueError) as err:
        raise UserError(f"{path}: {err}") from None
    table = pd.DataFrame([row])
    table["apex"] = table["apex"].astype("Int64")
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    report = preprocess_table(table, cache_root, params, detector=detector)
    key = str(row["sample_id"])
    if key in report.failed:
        raise UserError(f"{path}: the clip could not be prepared: {report.failed[key]}")
    cache = open_cache_dir(report.cache_dir)
    clip = cache.load_clip(key)
    return clip, [int(n) for n in cache.clips[key].get("frame_numbers") or range(len(clip))]


def _predict(
    trained: TrainedModel, dataset: Any, *, device: str, batch_size: int, step: Callable[[str, int, int], None]
) -> np.ndarray:
    """Probabilities ``(N, m)`` of the model on ``dataset``, batch by batch (for the progress bar)."""
    import torch
    from torch.utils.data import Subset

    from hlora_mer.training.engine import predict

    model = trained.model.to(torch.device(device))
    n = len(dataset)
    parts = []
    for start in range(0, n, batch_size):
        chunk = Subset(dataset, range(start, min(start + batch_size, n)))
        parts.append(predict(model, chunk, batch_size=batch_size, device=device).probs)
        step("predict", min(start + batch_size, n), n)
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------------
# Output


def check_output(path: str | Path) -> Path:
    """Check ``--out`` before any work: a ``.csv`` or ``.json`` file that can be written.

    Raises:
        UserError: another extension, or a path that cannot be written.
    """
    from hlora_mer.files import check_writable_file

    path = check_writable_file(path, "predictions file", "choose another file with --out")
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise UserError(
            f"--out {path}: unknown format {path.suffix or '(no extension)'!r}; name the file .csv or .json"
        )
    return path


def write_predictions(report: PredictionReport, path: str | Path) -> Path:
    """Write the report as CSV (one row per clip) or JSON, chosen by the extension (atomically), in UTF-8;
    the bytes of a file name that are not UTF-8 are written as they are in CSV (JSON escapes them)."""
    from hlora_mer.files import atomic_write_bytes

    path = check_output(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(_finite(report.to_dict()), indent=2) + "\n"
    else:
        records = report.records()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else ["clip"])
        writer.writeheader()
        writer.writerows(records)
        text = buffer.getvalue()
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))
    return path


def _finite(value: Any) -> Any:
    """NaN -> None, so the JSON is standard (a score over zero clips is NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
