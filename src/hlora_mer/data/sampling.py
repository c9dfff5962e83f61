"""Temporal sampling: which t frames of a clip the model sees.

HLoRA-MER (section 4.1.3) takes t = 8 frames "by uniform sampling" of each clip. Everything here is a
pure function of integers, so that the edge cases are cheap to test exhaustively:

* the t frames spread evenly over onset..offset **inclusive** (the official code takes frames 0, s, ..., 7s
  with s = n // 8, so it never uses about the last eighth of a clip; ``docs/preprocessing.md`` section 1);
* a clip shorter than t repeats frames, and never skips one (the official code drops such clips);
* a missing apex is fine in the default mode.

``mode="apex"`` is an apex-aware variant: onset, apex and offset are always among the samples, and the
remaining samples are split between onset..apex and apex..offset in proportion to their lengths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

SamplingMode = Literal["uniform", "apex"]
SAMPLING_MODES: tuple[str, ...] = ("uniform", "apex")


def _round_half_up(values: np.ndarray) -> np.ndarray:
    # np.round rounds half to even, which would make the spacing depend on parity.
    return np.floor(values + 0.5).astype(np.int64)


def _check_counts(n_frames: int, num_samples: int) -> None:
    if int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


def uniform_indices(n_frames: int, num_samples: int) -> np.ndarray:
    """Indices of ``num_samples`` frames spread evenly over ``0 .. n_frames - 1`` inclusive.

    The first and last frames are always taken (for ``num_samples >= 2``); a single sample is the
    middle frame. When ``num_samples > n_frames`` consecutive indices differ by at most one, so every
    frame appears at least once and some repeat. When they are equal the result is ``0 .. n - 1``.

    Args:
        n_frames: Number of frames in the clip (>= 1).
        num_samples: Number of frames to return (>= 1).

    Returns:
        Non-decreasing int64 array of shape ``(num_samples,)``.
    """
    _check_counts(n_frames, num_samples)
    if num_samples == 1:
        return np.array([(n_frames - 1) // 2], dtype=np.int64)
    return _round_half_up(np.linspace(0.0, n_frames - 1, num_samples))


def apex_indices(n_frames: int, apex_index: int, num_samples: int) -> np.ndarray:
    """Indices that always include the apex, spread evenly on both sides of it.

    Onset (index 0) and apex are always taken for ``num_samples >= 2``, and the offset (last index)
    too for ``num_samples >= 3``. The other samples go to onset..apex and apex..offset in proportion
    to their lengths, so for an apex at either end this equals :func:`uniform_indices`. A single
    sample is the apex. Clips shorter than ``num_samples`` repeat frames and never skip one.

    Args:
        n_frames: Number of frames in the clip (>= 1).
        apex_index: Position of the apex in ``0 .. n_frames - 1``.
        num_samples: Number of frames to return (>= 1).

    Returns:
        Non-decreasing int64 array of shape ``(num_samples,)``.
    """
    _check_counts(n_frames, num_samples)
    if int(apex_index) != apex_index or not 0 <= apex_index < n_frames:
        raise ValueError(f"apex_index must be in 0..{n_frames - 1}, got {apex_index!r}")
    if num_samples == 1:
        return np.array([apex_index], dtype=np.int64)
    last = n_frames - 1
    if apex_index in (0, last):
        return uniform_indices(n_frames, num_samples)
    # k1 samples in [0, apex), k2 = num_samples - k1 samples in [apex, last].
    k1 = math.floor((num_samples - 1) * apex_index / last + 0.5)
    # Keep the offset when there is room for it (k2 >= 2), but the onset always wins (k1 >= 1).
    k1 = max(1, min(k1, num_samples - 2))
    k2 = num_samples - k1
    before = np.linspace(0.0, apex_index, k1 + 1)[:-1]
    after = np.linspace(apex_index, last, k2) if k2 > 1 else np.array([float(apex_index)])
    return _round_half_up(np.concatenate([before, after]))


def select_frames(
    frame_numbers: Sequence[int],
    onset: int,
    offset: int,
    num_samples: int,
    *,
    apex: int | None = None,
    mode: SamplingMode = "uniform",
) -> tuple[int, ...]:
    """Pick ``num_samples`` of the available frame numbers between onset and offset (inclusive).

    Frames missing from a folder (dropped frames) are simply not available; the samples are spread
    over the frames that exist. In ``"apex"`` mode the apex maps to the nearest available frame, and a
    missing apex falls back to uniform sampling.

    Args:
        frame_numbers: Available frame numbers, sorted ascending (gaps allowed).
        onset: First frame number of the expression (inclusive).
        offset: Last frame number of the expression (inclusive).
        num_samples: Number of frames to return.
        apex: Apex frame number, or None when the annotation has none.
        mode: ``"uniform"`` or ``"apex"``.

    Returns:
        The selected frame numbers, non-decreasing, repeats allowed.

    Raises:
        ValueError: On an unknown mode, ``offset < onset``, an apex outside onset..offset in apex
            mode, unsorted frame numbers, or no available frame in the interval.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of {', '.join(SAMPLING_MODES)}")
    onset, offset = int(onset), int(offset)
    if offset < onset:
        raise ValueError(f"offset ({offset}) is before onset ({onset})")
    numbers = np.asarray(frame_numbers, dtype=np.int64)
    if numbers.ndim != 1:
        raise ValueError("frame_numbers must be a flat sequence of ints")
    if numbers.size > 1 and np.any(np.diff(numbers) <= 0):
        raise ValueError("frame_numbers must be strictly increasing")
    available = numbers[(numbers >= onset) & (numbers <= offset)]
    if available.size == 0:
        raise ValueError(f"no frame between onset {onset} and offset {offset} (inclusive)")
    if mode == "apex" and apex is not None:
        apex = int(apex)
        if not onset <= apex <= offset:
            raise ValueError(f"apex {apex} is outside onset..offset ({onset}..{offset})")
        apex_pos = int(np.argmin(np.abs(available - apex)))
        positions = apex_indices(available.size, apex_pos, num_samples)
    else:
        positions = uniform_indices(available.size, num_samples)
    return tuple(int(n) for n in available[positions])


def sample_frame_numbers(
    onset: int,
    offset: int,
    num_samples: int,
    *,
    apex: int | None = None,
    mode: SamplingMode = "uniform",
) -> tuple[int, ...]:
    """Frame numbers for a clip whose every frame in onset..offset exists (e.g. decoded video).

    Same rules as :func:`select_frames` with ``frame_numbers = range(onset, offset + 1)``.
    """
    if int(offset) < int(onset):
        raise ValueError(f"offset ({offset}) is before onset ({onset})")
    return select_frames(range(int(onset), int(offset) + 1), onset, offset, num_samples, apex=apex, mode=mode)
