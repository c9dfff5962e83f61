"""The preprocessing cache: idempotent, resumable, invalidated by parameter and source changes, and a bad
clip never stops a run. Uses a fixed stand-in detector (instant, no dlib) except where noted."""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np
import pytest

from align_fixtures import FixedDetector, make_table, table_row, write_frames
from hlora_mer.preprocess.cache import clip_relpath
from hlora_mer.preprocess.run import PreprocessParams, cache_dir_for, preprocess_table

PARAMS = PreprocessParams(num_frames=4, size=32, detector="dlib", margin=0.5)


def _textured(seed: int, n: int = 6, shape=(480, 640)) -> list[np.ndarray]:
    # Blocky noise: textured enough for the stand-in detector, and quick to write as PNG.
    rng = np.random.default_rng(seed)
    small = [rng.integers(0, 256, (shape[0] // 16, shape[1] // 16, 3), dtype=np.uint8) for _ in range(n)]
    return [np.repeat(np.repeat(s, 16, axis=0), 16, axis=1) for s in small]


@pytest.fixture
def dataset(tmp_path):
    """Three good clips (frames 1..6), in a table."""
    rows = []
    for i in range(3):
        paths = write_frames(tmp_path / "data" / f"clip{i}", _textured(i))
        rows.append(table_row(f"toy/0{i}/clip{i}", paths))
    return tmp_path, rows


def test_first_run_writes_clips_then_second_run_skips_everything(dataset) -> None:
    tmp_path, rows = dataset
    detector = FixedDetector()
    report = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=detector)
    assert sorted(report.done) == [r["sample_id"] for r in rows] and not report.failed and not report.skipped
    assert report.cache_dir == cache_dir_for(tmp_path / "out", PARAMS)
    manifest = json.loads(report.manifest_path.read_text())
    entry = manifest["clips"]["toy/00/clip0"]
    clip = np.load(report.cache_dir / entry["file"])
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    assert entry["frame_numbers"] == [1, 3, 4, 6]
    # The manifest records the content hash of every frame read.
    first = rows[0]["frame_paths"][0]
    assert entry["source_sha256"]["img1.png"] == hashlib.sha256(open(first, "rb").read()).hexdigest()
    assert manifest["params"]["margin"] == 0.5

    detector.calls = 0
    again = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=detector)
    assert sorted(again.skipped) == sorted(report.done) and not again.done
    assert detector.calls == 0
    np.testing.assert_array_equal(np.load(report.cache_dir / entry["file"]), clip)


def test_parameter_change_uses_a_new_folder_and_recomputes(dataset) -> None:
    tmp_path, rows = dataset
    first = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    wider = PreprocessParams(num_frames=4, size=32, detector="dlib", margin=0.8)
    second = preprocess_table(make_table(rows), tmp_path / "out", wider, detector=FixedDetector())
    assert second.cache_dir != first.cache_dir
    assert len(second.done) == 3 and not second.skipped
    a = np.load(first.cache_dir / clip_relpath("toy/00/clip0"))
    b = np.load(second.cache_dir / clip_relpath("toy/00/clip0"))
    assert not np.array_equal(a, b)  # not stale data: the crop really changed
    # Every field that changes pixels changes the key; fields that do not (margin without a detector) do not.
    keys = {
        PreprocessParams(**kw).cache_name()
        for kw in (
            {},
            {"num_frames": 16},
            {"size": 112},
            {"margin": 0.6},
            {"sampling": "apex"},
            {"fill": 0},
            {"detector": "mediapipe"},
        )
    }
    assert len(keys) == 7
    assert PreprocessParams(detector="none", margin=0.1).cache_name() == PreprocessParams(detector="none").cache_name()


def test_changed_source_frame_recomputes_that_clip_only(dataset) -> None:
    tmp_path, rows = dataset
    preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    # Rewrite one sampled frame with new content (size and mtime change).
    changed = rows[1]["frame_paths"][2]  # img3, sampled
    write_frames(tmp_path / "tmp", _textured(99, 1))[0].replace(changed)
    report = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    assert report.done == ["toy/01/clip1"]
    assert sorted(report.skipped) == ["toy/00/clip0", "toy/02/clip2"]
    # Same size, different content, but a new mtime: still recomputed.
    os.utime(changed, ns=(1_000_000_000, 1_000_000_000))
    report = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    assert report.done == ["toy/01/clip1"]


def test_changed_interval_recomputes(dataset) -> None:
    tmp_path, rows = dataset
    preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    rows[2]["offset"] = 5
    report = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    assert report.done == ["toy/02/clip2"]
    entry = json.loads(report.manifest_path.read_text())["clips"]["toy/02/clip2"]
    assert entry["frame_numbers"] == [1, 2, 4, 5]


def test_resumes_after_an_interrupted_run(dataset) -> None:
    """A clip whose file is gone (run killed before it was written) is redone; the others are not."""
    tmp_path, rows = dataset
    first = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    (first.cache_dir / clip_relpath("toy/00/clip0")).unlink()
    report = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector())
    assert report.done == ["toy/00/clip0"] and len(report.skipped) == 2
    forced = preprocess_table(make_table(rows), tmp_path / "out", PARAMS, detector=FixedDetector(), force=True)
    assert len(forced.done) == 3


def test_bad_clips_are_recorded_and_the_run_continues(dataset) -> None:
    tmp_path, rows = dataset
    grey = write_frames(tmp_path / "data" / "grey", [np.full((480, 640, 3), 128, np.uint8)] * 4)
    garbage = write_frames(tmp_path / "data" / "garbage", _textured(5, 3), ext=".jpg")
    garbage[1].write_bytes(b"\xff\xd8 this is not a jpeg" * 10)
    missing = write_frames(tmp_path / "data" / "missing", _textured(6, 3))
    missing[2].unlink()
    bad_rows = [
        table_row("toy/09/grey", grey),
        table_row("toy/09/garbage", garbage),
        table_row("toy/09/missing", missing),
        table_row("toy/09/interval", rows[0]["frame_paths"], onset=5, offset=2),
        table_row("toy/09/empty", (), numbers=[], onset=1, offset=3),
    ]
    # Bad clips first and in the middle: nothing after them may be lost.
    table = make_table([bad_rows[0], rows[0], *bad_rows[1:], *rows[1:]])
    report = preprocess_table(table, tmp_path / "out", PARAMS, detector=FixedDetector())
    assert sorted(report.done) == sorted(r["sample_id"] for r in rows)
    assert set(report.failed) == {r["sample_id"] for r in bad_rows}
    assert "no face found" in report.failed["toy/09/grey"]
    assert "cannot read image" in report.failed["toy/09/garbage"] and "img2.jpg" in report.failed["toy/09/garbage"]
    assert "missing" in report.failed["toy/09/missing"]
    assert "before onset" in report.failed["toy/09/interval"]
    assert "neither frame paths nor a video" in report.failed["toy/09/empty"]
    with report.failures_path.open() as f:
        listed = {row["sample_id"]: row["reason"] for row in csv.DictReader(f)}
    assert listed == report.failed
    assert json.loads(report.manifest_path.read_text())["failures"]["toy/09/grey"]["reason"] == listed["toy/09/grey"]

    # Fix one bad clip: the re-run redoes only the failures and the fixed one succeeds.
    garbage[1].write_bytes(write_frames(tmp_path / "tmp", _textured(7, 1), ext=".jpg")[0].read_bytes())
    again = preprocess_table(table, tmp_path / "out", PARAMS, detector=FixedDetector())
    assert again.done == ["toy/09/garbage"]
    assert "toy/09/garbage" not in json.loads(again.manifest_path.read_text())["failures"]


def test_parallel_workers_give_the_same_clips(dataset) -> None:
    tmp_path, rows = dataset
    serial = preprocess_table(make_table(rows), tmp_path / "serial", PARAMS, detector=FixedDetector())
    parallel = preprocess_table(make_table(rows), tmp_path / "parallel", PARAMS, detector=FixedDetector(), workers=2)
    assert sorted(parallel.done) == sorted(serial.done)
    for sample_id in serial.done:
        np.testing.assert_array_equal(
            np.load(parallel.cache_dir / clip_relpath(sample_id)), np.load(serial.cache_dir / clip_relpath(sample_id))
        )


def test_no_detector_fits_whole_frame(dataset) -> None:
    tmp_path, rows = dataset
    params = PreprocessParams(num_frames=2, size=32, detector="none")
    report = preprocess_table(make_table(rows), tmp_path / "out", params)
    entry = json.loads(report.manifest_path.read_text())["clips"]["toy/00/clip0"]
    assert entry["detection_attempts"] == 0
    clip = np.load(report.cache_dir / entry["file"])
    # 640 x 480 -> 32 x 24, padded with grey above and below.
    assert np.all(clip[:, :4] == 128) and np.all(clip[:, -4:] == 128)


def test_duplicate_ids_and_missing_columns_are_rejected(dataset) -> None:
    from hlora_mer.errors import DatasetError

    tmp_path, rows = dataset
    with pytest.raises(DatasetError, match="repeated: toy/00/clip0"):
        preprocess_table(make_table([rows[0], rows[0]]), tmp_path / "out", PARAMS, detector=FixedDetector())
    with pytest.raises(DatasetError, match="lacks column"):
        preprocess_table(make_table(rows).drop(columns="onset"), tmp_path / "out", PARAMS)


def test_clip_paths_are_safe_and_unique() -> None:
    assert clip_relpath("casme2/01/EP02_01f") == "clips/casme2/01/EP02_01f.npy"
    odd = clip_relpath("x/../a b")
    assert ".." not in odd.split("/") and " " not in odd
    assert clip_relpath("x/a b") != clip_relpath("x/a_b")


@pytest.mark.parametrize(
    "bad",
    [
        {"num_frames": 0},
        {"detector": "opencv"},
        {"sampling": "random"},
        {"margin": -1},
        {"landmark_model": "x.dat", "detector": "none"},
    ],
)
def test_invalid_params_raise(bad) -> None:
    with pytest.raises(ValueError):
        PreprocessParams(**bad)
