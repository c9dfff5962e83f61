"""Reading the source frames of a clip: image files (hashed as they are read) or decoded video frames."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hlora_mer.errors import DatasetError


def decode_image(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Decode an image file's bytes to ``(H, W, 3)`` uint8 RGB; grayscale is repeated over 3 channels.

    Raises:
        DatasetError: If the bytes are not a readable image (truncated, garbage, unknown format).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: keep the top 8 bits rather than letting convert() clip.
                array = np.asarray(img, dtype=np.uint32)
                shift = 8 if array.max(initial=0) > 255 else 0
                gray = (array >> shift).clip(0, 255).astype(np.uint8)
                return np.repeat(gray[:, :, None], 3, axis=2)
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err
    return np.asarray(rgb, dtype=np.uint8)


def read_image(path: str | Path) -> tuple[np.ndarray, str]:
    """Read an image as ``(H, W, 3)`` uint8 RGB, with the SHA-256 of the file's bytes.

    Raises:
        DatasetError: If the file is missing or unreadable.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read image {path}: {err.strerror or err}") from err
    return decode_image(data, path), hashlib.sha256(data).hexdigest()
