"""Face alignment: one similarity transform per clip, from the onset frame's landmarks.

HLoRA-MER (section 4.1.3) aligns each frame to 3 x 224 x 224 "via similarity transformation". A
similarity (rotation, uniform scale, translation) keeps the facial shape. Micro-expressions move a few
pixels, so the transform is estimated **once per clip** and applied unchanged to every frame: head
motion stays in the clip, but no detector jitter is added to it (the official code re-detects on every
frame; ``docs/preprocessing.md`` section 2).

The transform, from the four points of :class:`~hlora_mer.preprocess.landmarks.FaceLandmarks`:

1. rotate so that the line through the two eye centres is horizontal;
2. in that rotated frame, take the bounding box of both eye centres and both mouth corners, its centre
   and its larger side ``extent``;
3. crop a square of side ``extent * (1 + 2 * margin)`` around that centre and scale it to ``size``.

``margin=0.5`` crops twice the extent, as the official code does (it also includes the nose tip, which
lies inside the box in frontal faces). Output pixels outside the source image are grey (``fill``).

Coordinates are pixel-index coordinates: ``(x, y)``, with ``(0, 0)`` the centre of the top-left pixel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hlora_mer.preprocess.landmarks import FaceLandmarks


@dataclass(frozen=True)
class SimilarityTransform:
    """``out = matrix[:, :2] @ src + matrix[:, 2]`` in pixel-index coordinates.

    Attributes:
        matrix: ``(2, 3)`` float64 forward map from source to output pixels.
    """

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (2, 3) or not np.all(np.isfinite(m)):
            raise ValueError(f"expected a finite (2, 3) matrix, got {m.shape}")
        object.__setattr__(self, "matrix", m)

    @property
    def scale(self) -> float:
        """Output pixels per source pixel."""
        return float(math.hypot(self.matrix[0, 0], self.matrix[1, 0]))

    @property
    def rotation_deg(self) -> float:
        """Counter-clockwise rotation applied to the image, in degrees (image y axis points down)."""
        return float(math.degrees(math.atan2(-self.matrix[1, 0], self.matrix[0, 0])))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` source points to output coordinates."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.matrix[:, :2].T + self.matrix[:, 2]

    def inverse(self) -> SimilarityTransform:
        """The map from output back to source coordinates."""
        a_inv = np.linalg.inv(self.matrix[:, :2])
        return SimilarityTransform(np.hstack([a_inv, -a_inv @ self.matrix[:, 2:]]))

    def to_list(self) -> list[list[float]]:
        """JSON-friendly form, for the manifest."""
        return [[float(v) for v in row] for row in self.matrix]


def estimate_alignment(landmarks: FaceLandmarks, *, size: int = 224, margin: float = 0.5) -> SimilarityTransform:
    """The similarity transform that levels the eyes and frames the face in a ``size`` x ``size`` square.

    Args:
        landmarks: Landmarks of the clip's reference (onset) frame.
        size: Side of the output square in pixels.
        margin: Extra border on each side, as a fraction of the eyes-and-mouth extent.

    Raises:
        ValueError: If the landmarks are degenerate (eye centres coincide) or the options are invalid.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    eyes = np.asarray(landmarks.eyes, dtype=np.float64)
    mouth = np.asarray(landmarks.mouth, dtype=np.float64)
    dx, dy = eyes[1] - eyes[0]
    if math.hypot(dx, dy) < 1e-6:
        raise ValueError("degenerate landmarks: both eye centres are at the same point")
    angle = math.atan2(dy, dx)
    cos, sin = math.cos(angle), math.sin(angle)
    # Rotation by -angle: takes the eye-to-eye direction onto +x.
    rot = np.array([[cos, sin], [-sin, cos]])
    rotated = np.vstack([eyes, mouth]) @ rot.T  # (4, 2)
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    centre = (lo + hi) / 2.0
    extent = float(np.max(hi - lo))
    scale = size / (extent * (1.0 + 2.0 * margin))
    a = scale * rot
    b = (size - 1) / 2.0 - scale * centre
    return SimilarityTransform(np.hstack([a, b[:, None]]))


def fit_transform(height: int, width: int, *, size: int = 224) -> SimilarityTransform:
    """A transform without landmarks, for datasets that ship cropped faces.

    Scales the whole frame so that its longer side is ``size`` and centres it; the shorter side is
    padded, so the face keeps its shape.
    """
    if height < 1 or width < 1:
        raise ValueError(f"empty frame of shape ({height}, {width})")
    scale = size / max(height, width)
    b = (size - 1) / 2.0 - scale * np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    return SimilarityTransform(np.array([[scale, 0.0, b[0]], [0.0, scale, b[1]]]))


def warp_frame(image: np.ndarray, transform: SimilarityTransform, *, size: int = 224, fill: int = 128) -> np.ndarray:
    """Apply ``transform`` to one RGB frame with bilinear interpolation.

    When the transform shrinks the face by more than 2x, the frame is first box-averaged by an integer
    factor, so that bilinear sampling does not alias.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        transform: Source-to-output map.
        size: Output side in pixels.
        fill: Grey level of output pixels that fall outside the source.

    Returns:
        ``(size, size, 3)`` uint8 RGB.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {image.dtype} {image.shape}")
    # Pillow samples in continuous coordinates (pixel i spans [i, i + 1)); convert from index coordinates.
    a = transform.matrix[:, :2]
    b_cont = transform.matrix[:, 2] + 0.5 - a @ np.array([0.5, 0.5])
    pil = Image.fromarray(image)
    reduce = int(1.0 / transform.scale) if transform.scale < 0.5 else 1
    if reduce > 1:
        pil = pil.reduce(reduce)  # continuous source coordinates divide by `reduce`
        a = a * reduce
    a_inv = np.linalg.inv(a)
    t = -a_inv @ b_cont
    data = (a_inv[0, 0], a_inv[0, 1], t[0], a_inv[1, 0], a_inv[1, 1], t[1])
    out = pil.transform(
        (size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=(fill, fill, fill)
    )
    return np.asarray(out)


def align_clip(
    frames: Iterable[np.ndarray], transform: SimilarityTransform, *, size: int = 224, fill: int = 128
) -> np.ndarray:
    """Apply one transform to every frame of a clip.

    Returns:
        ``(T, size, size, 3)`` uint8 RGB.
    """
    warped = [warp_frame(frame, transform, size=size, fill=fill) for frame in frames]
    if not warped:
        raise ValueError("a clip needs at least one frame")
    return np.stack(warped)
