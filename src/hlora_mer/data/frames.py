"""Frame files: numbers parsed from names, numeric order, and reading any frame as RGB.

Dataset owners name frames ``img46.jpg`` (CASME II), ``reg_img46.jpg`` (CASME II cropped),
``006_05562.jpg`` (SAMM), ``166.jpg`` (CAS(ME)^3) or ``image090823.jpg`` (SMIC). In every case the
frame number is the integer at the end of the file stem, and it equals the annotation's frame index
(``docs/datasets.md``). Sorting is numeric: plain string sorting would put ``img100`` before ``img46``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")

_TRAILING_INT = re.compile(r"(\d+)$")


def frame_number(name: str | Path) -> int | None:
    """The integer at the end of a frame file's stem (``img46.jpg`` -> 46), or None if there is none."""
    match = _TRAILING_INT.search(Path(name).stem)
    return int(match.group(1)) if match else None


def is_frame_file(path: Path) -> bool:
    return path.suffix.lower() in FRAME_EXTENSIONS and not path.name.startswith(".")


def list_frames(folder: str | Path) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Frame numbers and paths of the image files in ``folder``, sorted numerically.

    Files without a trailing number are ignored (logged at debug level). When two files carry the
    same number (``img5.jpg`` and ``img5.png``) the first by name is kept and a warning is logged.

    Returns:
        ``(numbers, paths)``, two parallel tuples; both empty if the folder has no frames.
    """
    folder = Path(folder)
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_frame_file(path):
            continue
        number = frame_number(path)
        if number is None:
            logger.debug("ignoring %s: no frame number at the end of its name", path)
            continue
        if number in found:
            logger.warning("%s and %s both carry frame number %d; using the first", found[number], path, number)
            continue
        found[number] = path
    numbers = tuple(sorted(found))
    return numbers, tuple(str(found[n]) for n in numbers)


def read_frame(path: str | Path) -> np.ndarray:
    """Read one frame as an ``(H, W, 3)`` uint8 RGB array.

    Grayscale frames (SAMM, 4DME) come back as three identical channels; palette, RGBA and CMYK
    images are converted to RGB.

    Raises:
        DatasetError: the file is missing or is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: keep the top 8 bits rather than clipping everything above 255.
                array = np.asarray(image, dtype=np.uint32) >> 8
                gray = array.astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            rgb = image.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except FileNotFoundError as err:
        raise DatasetError(f"frame {path} does not exist; run 'hlora-mer data check' to list missing frames") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(
            f"cannot read image {path} ({type(err).__name__}: {err}); the file is damaged or not an image. "
            "Replace it from the original download, or exclude the clip."
        ) from err
