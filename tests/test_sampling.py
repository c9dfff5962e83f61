"""Temporal sampling: pure index functions, checked over every small clip length."""

from __future__ import annotations

import numpy as np
import pytest

from hlora_mer.data.sampling import apex_indices, sample_frame_numbers, select_frames, uniform_indices


@pytest.mark.parametrize("n", range(1, 41))
@pytest.mark.parametrize("t", [1, 2, 3, 8, 16])
def test_uniform_indices_properties(n: int, t: int) -> None:
    idx = uniform_indices(n, t)
    assert idx.shape == (t,)
    assert idx.min() >= 0 and idx.max() <= n - 1
    assert np.all(np.diff(idx) >= 0)
    if t >= 2:
        # Both ends are always used (the official code never uses about the last eighth).
        assert idx[0] == 0 and idx[-1] == n - 1
    if t >= n:
        # Short clips repeat frames and never skip one.
        assert set(idx.tolist()) == set(range(n))
    else:
        # Long clips take distinct frames.
        assert len(set(idx.tolist())) == t


def test_uniform_indices_exact_values() -> None:
    assert uniform_indices(8, 8).tolist() == list(range(8))  # t == length: identity
    assert uniform_indices(1, 8).tolist() == [0] * 8  # one frame: repeated
    assert uniform_indices(3, 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]  # evenly repeated
    assert uniform_indices(15, 8).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    # 36 frames: spacing 5 ending on the last frame (the official code would stop at index 28).
    assert uniform_indices(36, 8).tolist() == [0, 5, 10, 15, 20, 25, 30, 35]
    assert uniform_indices(9, 1).tolist() == [4]  # a single sample is the middle frame


@pytest.mark.parametrize("n", range(1, 25))
@pytest.mark.parametrize("t", [1, 2, 3, 5, 8])
def test_apex_indices_always_contain_apex_and_ends(n: int, t: int) -> None:
    for apex in range(n):
        idx = apex_indices(n, apex, t)
        assert idx.shape == (t,)
        assert np.all(np.diff(idx) >= 0)
        assert apex in idx
        if t >= 2:
            assert idx[0] == 0
        if t >= 3:
            assert idx[-1] == n - 1
        if t >= n:
            assert set(idx.tolist()) == set(range(n)), (n, t, apex, idx)


def test_apex_indices_values() -> None:
    # Apex at either end: same as uniform.
    assert apex_indices(30, 0, 8).tolist() == uniform_indices(30, 8).tolist()
    assert apex_indices(30, 29, 8).tolist() == uniform_indices(30, 8).tolist()
    # Apex at 10 of 0..40: a quarter of the 7 gaps before it (2), the rest after.
    assert apex_indices(41, 10, 8).tolist() == [0, 5, 10, 16, 22, 28, 34, 40]
    assert apex_indices(41, 10, 2).tolist() == [0, 10]  # onset and apex
    assert apex_indices(41, 10, 1).tolist() == [10]


def test_select_frames_uses_frame_numbers_and_interval() -> None:
    numbers = list(range(46, 87))  # CASME II img46 .. img86
    assert select_frames(numbers, 46, 86, 8) == (46, 52, 57, 63, 69, 75, 80, 86)
    # Onset/offset narrower than the folder: only frames inside are used, inclusive.
    assert select_frames(numbers, 50, 53, 8) == (50, 50, 51, 51, 52, 52, 53, 53)
    # Dropped frames (gaps) are never chosen.
    gappy = [1, 2, 3, 7, 8, 9]
    assert set(select_frames(gappy, 1, 9, 6)) == set(gappy)
    # Apex mode maps the apex to the nearest available frame.
    assert 7 in select_frames(gappy, 1, 9, 3, apex=6, mode="apex")


def test_missing_apex_is_fine() -> None:
    assert sample_frame_numbers(0, 9, 4, apex=None, mode="apex") == sample_frame_numbers(0, 9, 4)


def test_one_frame_clip() -> None:
    assert sample_frame_numbers(5, 5, 8) == (5,) * 8
    assert sample_frame_numbers(5, 5, 8, apex=5, mode="apex") == (5,) * 8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_frame_numbers(10, 5, 8), "before onset"),
        (lambda: sample_frame_numbers(0, 5, 0), "num_samples"),
        (lambda: sample_frame_numbers(0, 5, 8, apex=9, mode="apex"), "outside"),
        (lambda: sample_frame_numbers(0, 5, 8, mode="random"), "unknown sampling mode"),
        (lambda: select_frames([1, 2, 3], 10, 20, 8), "no frame between"),
        (lambda: select_frames([3, 2, 1], 1, 3, 8), "strictly increasing"),
        (lambda: uniform_indices(0, 8), "n_frames"),
        (lambda: apex_indices(5, 5, 3), "apex_index"),
    ],
)
def test_invalid_inputs_raise(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
