"""Video input (mp4, avi, mov...) through PyAV.

Frame numbers of a video clip are 0-based indices of *decoded* frames, in decoding (presentation)
order: frame 0 is the first picture the decoder returns. Frames are decoded sequentially rather than
by seeking, because seeking in most containers lands on key frames and is not frame-accurate; the clips
of micro-expression datasets are short, so this costs little.

PyAV is an optional dependency (the ``video`` extra) and is imported only when a video is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hlora_mer.data.frames import VIDEO_EXTENSIONS
from hlora_mer.errors import DatasetError

if TYPE_CHECKING:
    from collections.abc import Iterable


def _import_av() -> Any:
    try:
        import av
    except ImportError as err:
        raise ImportError(
            "reading video files needs PyAV; install it with: pip install 'hlora-mer[video]' (or: pip install av)"
        ) from err
    return av


def _decode_errors(av: Any) -> tuple[type[BaseException], ...]:
    # PyAV's errors derive from av.FFmpegError (and from OSError / ValueError for most of them).
    return (getattr(av, "FFmpegError", OSError), OSError, ValueError)


def is_video_file(path: str | Path) -> bool:
    """Whether ``path`` has one of the video extensions we read (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def read_video_frames(path: str | Path, frame_numbers: Sequence[int]) -> np.ndarray:
    """Decode the given frames of a video as RGB.

    Args:
        path: A video file readable by FFmpeg.
        frame_numbers: 0-based decoded frame indices, in any order, repeats allowed.

    Returns:
        uint8 array of shape ``(len(frame_numbers), H, W, 3)``, in the order requested.

    Raises:
        DatasetError: If the file cannot be opened or decoded, or has fewer frames than requested.
        ImportError: If PyAV is not installed.
    """
    av = _import_av()
    wanted = [int(n) for n in frame_numbers]
    if not wanted:
        raise ValueError("frame_numbers is empty")
    if min(wanted) < 0:
        raise ValueError(f"frame numbers of a video are 0-based, got {min(wanted)}")
    needed = set(wanted)
    last = max(wanted)
    decoded: dict[int, np.ndarray] = {}
    path = Path(path)
    n_decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if n_decoded in needed:
                    decoded[n_decoded] = frame.to_ndarray(format="rgb24")
                n_decoded += 1
                if n_decoded > last:
                    break
    except _decode_errors(av) as err:
        raise DatasetError(f"cannot decode video {path}: {err}") from err
    missing = sorted(needed - decoded.keys())
    if missing:
        asked = f"frame {missing[0]} was" if len(missing) == 1 else f"frames {missing[0]}..{missing[-1]} were"
        raise DatasetError(
            f"video {path} decodes to {n_decoded} frames (numbered from 0) but {asked} requested; "
            "check the clip's onset/offset"
        )
    return np.stack([decoded[n] for n in wanted])


def count_video_frames(path: str | Path) -> int:
    """Number of frames a video decodes to (decodes the whole stream; exact, not the header's estimate)."""
    av = _import_av()
    errors: tuple[type[BaseException], ...] = (*_decode_errors(av), IndexError)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            return sum(1 for _ in container.decode(stream))
    except errors as err:
        raise DatasetError(f"cannot decode video {path}: {err}") from err


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: int = 30, codec: str = "libx264") -> None:
    """Write RGB uint8 frames ``(H, W, 3)`` to a video file (used by tests and benchmarks).

    ``libx264`` is written with ``crf=0`` (lossless in YUV 4:4:4 is not used, so colours still go
    through 4:2:0 chroma subsampling); H and W must be even.
    """
    av = _import_av()
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0", "preset": "ultrafast"}
        for array in (first, *frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
