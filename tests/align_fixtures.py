"""Shared helpers for the preprocessing tests: synthetic clips made from ``skimage.data.astronaut()``.

A clip is the astronaut portrait warped by a known similarity transform (rotation, scale, translation)
into a CASME II-sized 640 x 480 frame, with a small green Gaussian blob near the mouth that moves a
little from frame to frame: a stand-in for a micro-expression whose position we know exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

FRAME_SHAPE = (480, 640)  # (H, W), as in CASME II
BLOB_START = np.array([222.0, 150.0])  # (x, y) in astronaut coordinates, just below the mouth
BLOB_SIGMA = 2.0


@functools.lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@functools.lru_cache(maxsize=1)
def dlib_detector():  # noqa: ANN201 - test helper
    """One shared dlib detector for the whole session (loading the model takes ~0.7 s)."""
    from hlora_mer.preprocess.landmarks import DlibDetector

    return DlibDetector()


@functools.lru_cache(maxsize=1)
def astronaut_eyes() -> np.ndarray:
    """Eye centres ``(2, 2)`` of the unwarped astronaut, found once by dlib."""
    landmarks = dlib_detector().detect(astronaut())
    assert landmarks is not None, "dlib must find the astronaut's face"
    return landmarks.eyes


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    """``(2, 3)`` forward matrix in pixel-index coordinates: rotate (counter-clockwise on screen) and scale
    about the astronaut's face, then translate."""
    theta = np.deg2rad(angle_deg)
    # On screen (y down), a counter-clockwise rotation is [[cos, sin], [-sin, cos]].
    a = scale * np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    centre = np.array([224.0, 125.0])
    target = np.array([FRAME_SHAPE[1] / 2 + tx, FRAME_SHAPE[0] / 2 + ty])
    return np.hstack([a, (target - a @ centre)[:, None]])


def add_blob(image: np.ndarray, centre: np.ndarray, sigma: float = BLOB_SIGMA) -> np.ndarray:
    """Blend a pure-green Gaussian blob into ``image`` at sub-pixel ``centre`` (x, y)."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    weight = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))[..., None]
    out = image.astype(np.float64) * (1 - weight) + np.array([0.0, 255.0, 0.0]) * weight
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def warp(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int] = FRAME_SHAPE) -> np.ndarray:
    """Warp with skimage (independent of the code under test); outside pixels are black."""
    from skimage.transform import AffineTransform
    from skimage.transform import warp as sk_warp

    forward = AffineTransform(matrix=np.vstack([matrix, [0.0, 0.0, 1.0]]))
    out = sk_warp(image, forward.inverse, output_shape=shape, order=1, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def make_clip(matrix: np.ndarray, n_frames: int, motion: Sequence[float] = (0.75, 0.0)) -> list[np.ndarray]:
    """Frames of one clip: the warped astronaut, blob moving by ``motion`` px per frame (astronaut px)."""
    base = astronaut()
    return [warp(add_blob(base, BLOB_START + k * np.asarray(motion)), matrix) for k in range(n_frames)]


def blob_position(frame: np.ndarray, near: np.ndarray, radius: int = 10) -> np.ndarray:
    """Sub-pixel centre (x, y) of the green blob in a window around ``near``."""
    x0, y0 = (int(round(v)) - radius for v in near)
    win = frame[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1].astype(np.float64)
    greenness = np.clip(win[..., 1] - (win[..., 0] + win[..., 2]) / 2 - 30.0, 0, None)
    assert greenness.sum() > 0, f"no green blob near {near}"
    ys, xs = np.mgrid[0 : win.shape[0], 0 : win.shape[1]]
    return np.array([(xs * greenness).sum() / greenness.sum() + x0, (ys * greenness).sum() / greenness.sum() + y0])


def write_frames(folder: Path, frames: Sequence[np.ndarray], first_number: int = 1, ext: str = ".png") -> list[Path]:
    """Write ``img{n}{ext}`` files (CASME II naming); PNG by default so pixels are exact."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frame in enumerate(frames):
        path = folder / f"img{first_number + k}{ext}"
        Image.fromarray(frame).save(path)
        paths.append(path)
    return paths


def table_row(
    sample_id: str,
    paths: Sequence[Path] = (),
    numbers: Sequence[int] | None = None,
    *,
    onset: int | None = None,
    offset: int | None = None,
    apex: int | None = None,
    video_path: str | None = None,
    subject: str = "test/01",
    label_index: int = 0,
) -> dict:
    """One row of the canonical sample table (only the columns preprocessing and the dataset read)."""
    numbers = list(numbers) if numbers is not None else [int(Path(p).stem[3:]) for p in paths]
    return {
        "dataset": sample_id.split("/")[0],
        "subject": subject,
        "sample_id": sample_id,
        "frame_paths": tuple(str(p) for p in paths),
        "frame_numbers": tuple(numbers),
        "video_path": video_path,
        "onset": onset if onset is not None else numbers[0],
        "apex": apex,
        "offset": offset if offset is not None else numbers[-1],
        "label_index": label_index,
    }


def make_table(rows: Sequence[dict]) -> pd.DataFrame:
    table = pd.DataFrame(list(rows))
    table["apex"] = table["apex"].astype("Int64")
    return table


class FixedDetector:
    """A stand-in detector that returns the same landmarks for any image with texture, None for flat ones.

    Picklable, instant, and independent of dlib: for cache and CLI tests that are not about alignment.
    """

    name = "fixed"

    def __init__(
        self,
        eyes: Sequence[Sequence[float]] = ((280, 200), (360, 200)),
        mouth: Sequence[Sequence[float]] = ((290, 290), (350, 290)),
    ) -> None:
        self.eyes = np.asarray(eyes, dtype=np.float64)
        self.mouth = np.asarray(mouth, dtype=np.float64)
        self.calls = 0

    def detect(self, image: np.ndarray, *, upsample: int = 0):  # noqa: ANN201
        from hlora_mer.preprocess.landmarks import FaceLandmarks

        self.calls += 1
        if int(image.max()) - int(image.min()) < 10:
            return None
        points = np.vstack([self.eyes, self.mouth])
        return FaceLandmarks(self.eyes, self.mouth, points, (250.0, 150.0, 390.0, 330.0))
