"""Face and landmark detectors behind one small interface.

Alignment (``align.py``) needs only four points: the two eye centres and the two mouth corners. A
``LandmarkDetector`` returns them as a :class:`FaceLandmarks`, whatever model produced them.

Backends, each imported only when it is built (importing this module loads nothing):

* ``dlib`` (default): the HOG frontal face detector plus the 68-point shape predictor. The wheel is
  ``dlib-bin`` and the model file ships in ``face-recognition-models`` (the ``align`` extra). That
  package imports ``pkg_resources`` at import time, which recent setuptools no longer provides, so the
  model file is located with ``importlib.util.find_spec`` without importing the package.
* ``mediapipe``: the face mesh (468 points). Only ``mediapipe==0.10.21`` ships its models in the wheel,
  and it pins ``numpy<2``, so it lives in its own extra (``pip install 'hlora-mer[mediapipe]'``),
  best in a separate environment.

Points are in pixel-index coordinates: ``(x, y)`` with ``(0, 0)`` the centre of the top-left pixel.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hlora_mer.errors import UserError

DETECTORS: tuple[str, ...] = ("dlib", "mediapipe")
DLIB_68_MODEL = "shape_predictor_68_face_landmarks.dat"

# iBUG 68-point scheme (dlib): the eye on the image's left in an upright face is the subject's right.
_DLIB_EYE_LEFT = slice(36, 42)
_DLIB_EYE_RIGHT = slice(42, 48)
_DLIB_MOUTH_LEFT, _DLIB_MOUTH_RIGHT = 48, 54

# MediaPipe face mesh: eye contour points and mouth corners (subject's right = image left when upright).
_MP_EYE_LEFT = (33, 133, 159, 145, 158, 153, 160, 144)
_MP_EYE_RIGHT = (263, 362, 386, 374, 385, 380, 387, 373)
_MP_MOUTH_LEFT, _MP_MOUTH_RIGHT = 61, 291


@dataclass(frozen=True)
class FaceLandmarks:
    """The landmarks alignment needs, from any backend.

    Attributes:
        eyes: ``(2, 2)`` eye centres ``(x, y)``; row 0 is the eye on the image's left in an upright face
            (the subject's right eye), row 1 the other.
        mouth: ``(2, 2)`` mouth corners, in the same left/right order.
        points: ``(K, 2)`` every landmark of the backend (68 for dlib, 468 for MediaPipe).
        box: Face box ``(x0, y0, x1, y1)``.
    """

    eyes: np.ndarray
    mouth: np.ndarray
    points: np.ndarray = field(repr=False)
    box: tuple[float, float, float, float]

    def scaled(self, factor: float) -> FaceLandmarks:
        """The same landmarks in an image resized by ``factor`` (pixel-index coordinates)."""

        # A pixel centre at index i sits at continuous i + 0.5, which scales to factor * (i + 0.5).
        def s(a: np.ndarray) -> np.ndarray:
            return (a + 0.5) * factor - 0.5

        x0, y0, x1, y1 = self.box
        box = tuple(float(v) for v in s(np.array([x0, y0, x1, y1], dtype=np.float64)))
        return FaceLandmarks(s(self.eyes), s(self.mouth), s(self.points), box)  # type: ignore[arg-type]


@runtime_checkable
class LandmarkDetector(Protocol):
    """Finds one face in an RGB image and returns its landmarks, or None when there is no face."""

    name: str

    def detect(self, image: np.ndarray, *, upsample: int = 0) -> FaceLandmarks | None:
        """Landmarks of the largest face in ``image`` (``(H, W, 3)`` uint8 RGB).

        Args:
            image: The frame.
            upsample: How many times to double the image before looking for faces; finds smaller faces
                at a cost in time (dlib: its upsampling argument; other backends resize).
        """
        ...


def find_dlib_model(name: str = DLIB_68_MODEL) -> Path:
    """Path of a model file shipped in the ``face-recognition-models`` wheel.

    Raises:
        UserError: If the package or the file is missing, with the command that installs it.
    """
    # find_spec does not execute the package's __init__, which imports the removed pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the dlib landmark model {name} was not found: the 'face-recognition-models' package is not "
            "installed. Install it with: pip install 'hlora-mer[align]', or pass the model path explicitly."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / name
        if candidate.is_file():
            return candidate
    raise UserError(
        f"face-recognition-models is installed but has no models/{name} under "
        f"{', '.join(spec.submodule_search_locations)}; reinstall it: "
        "pip install --force-reinstall face-recognition-models"
    )


class DlibDetector:
    """dlib's HOG frontal face detector and 68-point shape predictor.

    Args:
        model_path: The 68-point shape predictor file; found in ``face-recognition-models`` by default.
    """

    name = "dlib"

    def __init__(self, model_path: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as err:
            raise ImportError(
                "the dlib face detector needs dlib; install it with: pip install 'hlora-mer[align]' "
                "(the dlib-bin wheel and face-recognition-models)"
            ) from err
        path = Path(model_path) if model_path is not None else find_dlib_model()
        if not path.is_file():
            raise UserError(f"dlib landmark model not found at {path}")
        self.model_path = path
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))

    def detect(self, image: np.ndarray, *, upsample: int = 0) -> FaceLandmarks | None:
        image = _as_rgb_uint8(image)
        rects = self._detector(image, int(upsample))
        if len(rects) == 0:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())  # the largest face
        shape = self._predictor(image, rect)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        if points.shape != (68, 2):
            raise ValueError(f"expected 68 landmarks from {self.model_path.name}, got {points.shape[0]}")
        eyes = np.stack([points[_DLIB_EYE_LEFT].mean(axis=0), points[_DLIB_EYE_RIGHT].mean(axis=0)])
        mouth = points[[_DLIB_MOUTH_LEFT, _DLIB_MOUTH_RIGHT]].copy()
        box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
        return FaceLandmarks(eyes=eyes, mouth=mouth, points=points, box=box)


class MediaPipeDetector:
    """MediaPipe face mesh (static images, one face).

    Args:
        min_detection_confidence: Passed to ``FaceMesh``.
    """

    name = "mediapipe"

    def __init__(self, min_detection_confidence: float = 0.5) -> None:
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as err:
            raise ImportError(
                "the mediapipe face detector needs mediapipe==0.10.21 (the last wheel that ships its models; it "
                "pins numpy<2, so use a separate environment): pip install 'hlora-mer[mediapipe]'"
            ) from err
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
        )

    def detect(self, image: np.ndarray, *, upsample: int = 0) -> FaceLandmarks | None:
        image = _as_rgb_uint8(image)
        factor = 2 ** int(upsample)
        if factor > 1:
            from PIL import Image

            h, w = image.shape[:2]
            image = np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.Resampling.BILINEAR))
        result = self._mesh.process(image)
        if not result.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        mesh = result.multi_face_landmarks[0].landmark
        # Normalised [0, 1] coordinates cover the image edge to edge (continuous coordinates).
        points = np.array([(p.x * w - 0.5, p.y * h - 0.5) for p in mesh], dtype=np.float64)
        eyes = np.stack([points[list(_MP_EYE_LEFT)].mean(axis=0), points[list(_MP_EYE_RIGHT)].mean(axis=0)])
        mouth = points[[_MP_MOUTH_LEFT, _MP_MOUTH_RIGHT]].copy()
        lo, hi = points.min(axis=0), points.max(axis=0)
        landmarks = FaceLandmarks(eyes, mouth, points, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))
        return landmarks.scaled(1.0 / factor) if factor > 1 else landmarks


def create_detector(name: str, *, model_path: str | Path | None = None) -> LandmarkDetector:
    """Build a detector by name: ``"dlib"`` or ``"mediapipe"``.

    Args:
        name: Backend name.
        model_path: dlib only: the 68-point shape predictor file (default: from face-recognition-models).
    """
    if name == "dlib":
        return DlibDetector(model_path)
    if name == "mediapipe":
        if model_path is not None:
            raise ValueError("the mediapipe backend ships its own model; model_path applies to dlib only")
        return MediaPipeDetector()
    raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)
