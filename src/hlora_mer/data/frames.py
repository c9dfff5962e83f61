"""Frame files: numbers parsed from names, numeric order, and reading any frame as RGB.

Dataset owners name frames ``img46.jpg`` (CASME II), ``reg_img46.jpg`` (CASME II cropped),
``006_05562.jpg`` (SAMM), ``166.jpg`` (CAS(ME)^3) or ``image090823.jpg`` (SMIC). In every case the
frame number is the integer at the end of the file stem, and it equals the annotation's frame index
(``docs/datasets.md``). Sorting is numeric: plain string sorting would put ``img100`` before ``img46``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# The one list of video file extensions of the package (data loaders, data.video, predict).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")

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


def _to_rgb(image) -> np.ndarray:  # noqa: ANN001 - a PIL image, imported lazily
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.int64)
        if array.max(initial=0) > 255:
            array = array >> 8  # the top 8 bits of a 16-bit value
        gray = array.clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def decode_frame(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode an image file's bytes to ``(H, W, 3)`` uint8 RGB; the rules of :func:`read_frame`.

    Raises:
        DatasetError: the bytes are not a readable image; ``path`` names it in the message.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # PIL names the stream it read (``<_io.BytesIO object at 0x...>``), not the file: say it ourselves.
        why = "no known image format" if isinstance(err, UnidentifiedImageError) else f"{type(err).__name__}: {err}"
        raise DatasetError(
            f"cannot read image {path} ({why}); the file is damaged or not an image. "
            "Replace it from the original download, or exclude the clip."
        ) from err


def read_frame_and_hash(path: str | Path) -> tuple[np.ndarray, str]:
    """:func:`read_frame`, plus the SHA-256 of the file's bytes (read once, for the preprocessing manifest).

    Raises:
        DatasetError: the file is missing or is not a readable image.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise DatasetError(f"frame {path} does not exist; run 'hlora-mer data check' to list missing frames") from err
    except OSError as err:
        raise DatasetError(f"cannot read image {path}: {err.strerror or err}") from err
    return decode_frame(data, path), hashlib.sha256(data).hexdigest()


def read_frame(path: str | Path) -> np.ndarray:
    """Read one frame as an ``(H, W, 3)`` uint8 RGB array: the package's one image reader.

    Data loaders and preprocessing both read frames through here (preprocessing through
    :func:`read_frame_and_hash`), so a frame has the same pixels everywhere. The rules:

    * 8-bit colour (RGB, RGBA, palette, CMYK, ...) is converted to RGB; alpha is dropped.
    * 8-bit grayscale (SAMM, 4DME) comes back as three identical channels.
    * 16-bit grayscale (modes ``I;16*`` and ``I``): if every value fits in 8 bits (max <= 255) the values
      are kept as they are; otherwise the top 8 bits of each value are kept (``value >> 8``), so a
      full-range 16-bit image keeps its contrast and is never clipped to white. Either way the result
      is three identical channels.

    Raises:
        DatasetError: the file is missing or is not a readable image.
    """
    return read_frame_and_hash(path)[0]
