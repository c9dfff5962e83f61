"""Estimating a missing apex in preprocessing (#15 item 2): the frame of largest grey difference from the
onset frame after alignment, marked as estimated, used by ``apex`` sampling, and its own cache."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import hlora_mer.data
from align_fixtures import FixedDetector, make_table, table_row, write_frames
from hlora_mer.cli import main
from hlora_mer.data.sampling import select_frames
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table

# Brightness added to a patch of the face, frame by frame: the motion peaks at the 5th frame (number 5).
PROFILE = (0, 10, 25, 40, 60, 30, 15, 5, 0)
PEAK = 1 + int(np.argmax(PROFILE))
NUMBERS = list(range(1, len(PROFILE) + 1))
FACE_PATCH = (slice(230, 270), slice(300, 340))  # inside FixedDetector's face crop (x 230..410, y 155..335)
CORNER = (slice(0, 120), slice(0, 150))  # outside it


def _clip(profile=PROFILE, patch=FACE_PATCH, flash_at: int | None = None) -> list[np.ndarray]:
    """A still, textured 480 x 640 frame whose ``patch`` brightens by ``profile``; optionally a large
    bright flash in a corner, outside the face, on frame index ``flash_at``."""
    base = np.random.default_rng(0).integers(50, 150, size=(480, 640, 3), dtype=np.uint8)
    frames = []
    for k, amount in enumerate(profile):
        frame = base.astype(np.int16)
        frame[patch] += amount
        if k == flash_at:
            frame[CORNER] += 100
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def _table(tmp_path, apex: int | None = None, **clip_kw):
    paths = write_frames(tmp_path / "frames" / "EP01", _clip(**clip_kw), first_number=1)
    return make_table([table_row("casme2/01/EP01", paths, apex=apex)])


def _entry(report, sample_id: str = "casme2/01/EP01") -> dict:
    """The clip's record in the manifest file, as written."""
    return json.loads(report.manifest_path.read_text())["clips"][sample_id]


PARAMS = PreprocessParams(num_frames=4, size=64, detector="none", sampling="apex")
ESTIMATE = PreprocessParams(num_frames=4, size=64, detector="none", sampling="apex", estimate_apex=True)


def test_estimate_finds_the_frame_of_largest_motion_and_marks_it(tmp_path) -> None:
    report = preprocess_table(_table(tmp_path), tmp_path / "cache", ESTIMATE)
    assert report.done == ["casme2/01/EP01"]
    entry = _entry(report)
    assert entry["apex"] == PEAK
    assert entry["apex_estimated"] is True
    assert entry["apex_difference"] > 0
    assert report.apex_estimated == {"casme2/01/EP01": PEAK}


def test_estimate_is_made_after_alignment(tmp_path) -> None:
    """A large change outside the face crop (frame 3) would win on whole frames; the face's peak wins."""
    flash = 2
    frames = _clip(flash_at=flash)
    whole = [np.abs(f.astype(float) - frames[0].astype(float)).mean() for f in frames]
    assert int(np.argmax(whole)) == flash  # the test means something: unaligned differences pick the flash
    params = PreprocessParams(num_frames=4, size=64, detector="dlib", sampling="apex", estimate_apex=True)
    report = preprocess_table(_table(tmp_path, flash_at=flash), tmp_path / "cache", params, detector=FixedDetector())
    assert _entry(report)["apex"] == PEAK


def test_apex_sampling_uses_the_estimate(tmp_path) -> None:
    report = preprocess_table(_table(tmp_path), tmp_path / "cache", ESTIMATE)
    expected = select_frames(NUMBERS, NUMBERS[0], NUMBERS[-1], 4, apex=PEAK, mode="apex")
    assert PEAK in expected
    assert expected != select_frames(NUMBERS, NUMBERS[0], NUMBERS[-1], 4, mode="uniform")
    assert tuple(_entry(report)["frame_numbers"]) == expected


def test_default_leaves_a_missing_apex_missing(tmp_path) -> None:
    report = preprocess_table(_table(tmp_path), tmp_path / "cache", PARAMS)
    entry = _entry(report)
    assert "apex" not in entry and "apex_estimated" not in entry
    assert report.apex_estimated == {}
    assert tuple(entry["frame_numbers"]) == select_frames(NUMBERS, NUMBERS[0], NUMBERS[-1], 4, mode="uniform")


def test_an_annotated_apex_is_never_replaced(tmp_path) -> None:
    report = preprocess_table(_table(tmp_path, apex=2), tmp_path / "cache", ESTIMATE)
    entry = _entry(report)
    assert "apex_estimated" not in entry
    assert report.apex_estimated == {}
    assert tuple(entry["frame_numbers"]) == select_frames(NUMBERS, NUMBERS[0], NUMBERS[-1], 4, apex=2, mode="apex")


def test_estimated_and_annotated_caches_never_mix(tmp_path) -> None:
    assert "estimate_apex" not in PARAMS.identity()  # caches made before the option keep their folder
    assert ESTIMATE.identity() != PARAMS.identity()
    assert ESTIMATE.cache_name() != PARAMS.cache_name()
    table = _table(tmp_path)
    plain = preprocess_table(table, tmp_path / "cache", PARAMS)
    estimated = preprocess_table(table, tmp_path / "cache", ESTIMATE)
    assert plain.cache_dir != estimated.cache_dir
    assert estimated.done == ["casme2/01/EP01"]  # not taken from the plain cache
    assert "apex_estimated" not in _entry(plain)


def test_estimates_already_cached_are_still_counted(tmp_path) -> None:
    table = _table(tmp_path)
    preprocess_table(table, tmp_path / "cache", ESTIMATE)
    again = preprocess_table(table, tmp_path / "cache", ESTIMATE)
    assert again.skipped == ["casme2/01/EP01"]
    assert again.apex_estimated == {"casme2/01/EP01": PEAK}


def test_a_changed_frame_inside_the_span_re_estimates(tmp_path) -> None:
    """The estimate reads every frame of onset..offset, so a change to any of them, sampled or not, remakes it."""
    table = _table(tmp_path)
    preprocess_table(table, tmp_path / "cache", ESTIMATE)
    moved = list(PROFILE)
    moved[PEAK - 1], moved[1] = moved[1], 80  # frame 2 becomes the peak
    # Neither changed frame is among the frames uniform sampling (the estimate's starting point) would take.
    assert not {2, PEAK} & set(select_frames(NUMBERS, NUMBERS[0], NUMBERS[-1], 4, mode="uniform"))
    frames = _clip(profile=moved)
    for number in (2, PEAK):  # rewrite only the changed files
        write_frames(tmp_path / "frames" / "EP01", [frames[number - 1]], first_number=number)
    report = preprocess_table(table, tmp_path / "cache", ESTIMATE)
    assert report.done == ["casme2/01/EP01"]
    assert _entry(report)["apex"] == 2


def test_video_clip_gets_the_same_estimate_as_its_frames(tmp_path) -> None:
    """A video's onset..offset is decoded whole for the estimate; the result matches its frames as images."""
    pytest.importorskip("av")
    from hlora_mer.data.video import read_video_frames, write_video
    from hlora_mer.preprocess.cache import clip_relpath

    ys, xs = np.mgrid[0:120, 0:160]
    base = np.stack([128 + 60 * np.sin(xs / 15.0), 128 + 60 * np.cos(ys / 11.0), np.full((120, 160), 90.0)], -1)
    frames = []
    for amount in PROFILE:
        frame = base.copy()
        frame[40:80, 60:100] += amount
        frames.append(frame.clip(0, 255).astype(np.uint8))
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=30)
    images = write_frames(tmp_path / "frames", list(read_video_frames(path, range(len(frames)))), first_number=0)
    last = len(frames) - 1
    rows = [
        table_row("vid/01/video", video_path=str(path), numbers=[], onset=0, offset=last),
        table_row("vid/01/images", images, onset=0, offset=last),
    ]
    report = preprocess_table(make_table(rows), tmp_path / "cache", ESTIMATE)
    assert sorted(report.done) == ["vid/01/images", "vid/01/video"], report.failed
    assert report.apex_estimated == {"vid/01/images": PEAK - 1, "vid/01/video": PEAK - 1}  # 0-based numbers
    np.testing.assert_array_equal(
        np.load(report.cache_dir / clip_relpath("vid/01/video")),
        np.load(report.cache_dir / clip_relpath("vid/01/images")),
    )


def test_experiment_config_and_checkpoint_carry_the_option() -> None:
    from hlora_mer.config import ExperimentConfig
    from hlora_mer.inference.load import preprocess_params_of
    from hlora_mer.training.data import preprocess_params

    cfg = ExperimentConfig()
    assert preprocess_params(cfg).estimate_apex is False
    cfg.data.estimate_apex = True
    params = preprocess_params(cfg)
    assert params.estimate_apex is True
    assert preprocess_params_of({"preprocess": params.identity()}, None).estimate_apex is True  # type: ignore[arg-type]
    assert preprocess_params_of({"preprocess": PARAMS.identity()}, None).estimate_apex is False  # type: ignore[arg-type]


@pytest.mark.parametrize("estimate", [False, True])
def test_cli_counts_the_estimates(tmp_path, monkeypatch, capsys, estimate) -> None:
    table = _table(tmp_path)

    def load_dataset(name, root_, *, annotation=None, version=None, **options):
        return SimpleNamespace(table=table, excluded=pd.DataFrame())

    monkeypatch.setattr(hlora_mer.data, "load_dataset", load_dataset, raising=False)
    argv = ["preprocess", "--dataset", "casme2", "--root", str(tmp_path), "--out", str(tmp_path / "cache")]
    argv += ["--frames", "4", "--size", "64", "--detector", "none", "--sampling", "apex", "--workers", "1"]
    assert main([*argv, *(["--estimate-apex"] if estimate else [])]) == 0
    out = capsys.readouterr().out
    if estimate:
        assert "1 apex frame(s) estimated" in out and f"casme2/01/EP01 -> {PEAK}" in out
    else:
        assert "estimated" not in out.replace("--estimate-apex estimates", "")
        assert "1 clip(s) have no apex and were sampled uniformly" in out
