"""Estimate a missing apex frame: the frame that differs most from the onset frame, after alignment.

Some annotations give no apex (CASME II writes ``/`` for ``04/EP12_01f``; CAS(ME)^3 Part C has no apex
column). When asked (``hlora-mer preprocess --estimate-apex``, ``data.estimate_apex: true``), preprocessing
estimates it from the pixels:

1. every available frame in onset..offset is aligned with the clip's one similarity transform
   (``align.py``), so only the face crop counts and the background does not;
2. each aligned frame is converted to grey (ITU-R BT.601 luma, as Pillow's ``"L"`` mode);
3. its score is the mean absolute grey difference from the aligned onset frame;
4. the apex is the frame of largest score; on a tie, the earliest such frame.

The estimate is recorded in the cache manifest (``apex``, ``apex_estimated: true``, ``apex_difference``)
and is never mixed with annotated apexes: the option is part of the cache identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hlora_mer.preprocess.align import SimilarityTransform, warp_frame

#: Names the method in the cache identity; change it when the estimate's definition changes.
APEX_ESTIMATE_METHOD = "grey_absdiff_from_onset_v1"
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def grey(frame: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 grey levels of an ``(H, W, 3)`` RGB frame."""
    return frame.astype(np.float32) @ _LUMA


def estimate_apex(
    frames: Sequence[tuple[int, np.ndarray]], transform: SimilarityTransform, *, size: int, fill: int = 128
) -> tuple[int, float]:
    """The frame of largest mean absolute grey difference from the first (onset) frame, after alignment.

    Args:
        frames: ``(frame number, RGB image)`` pairs of onset..offset in order, the onset frame first.
        transform: The clip's alignment.
        size: Side of the aligned frames compared.
        fill: Grey level of output pixels outside the source frame (equal in every frame, so they add 0).

    Returns:
        ``(frame number, its mean absolute grey difference from the onset frame, 0..255)``.

    Raises:
        ValueError: If ``frames`` is empty.
    """
    if not frames:
        raise ValueError("no frame in onset..offset to estimate the apex from")
    reference = grey(warp_frame(frames[0][1], transform, size=size, fill=fill))
    scores = [0.0] + [
        float(np.mean(np.abs(grey(warp_frame(image, transform, size=size, fill=fill)) - reference)))
        for _, image in frames[1:]
    ]
    best = int(np.argmax(scores))  # the first of equal maxima
    return int(frames[best][0]), scores[best]
