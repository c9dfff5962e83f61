"""Video input through PyAV: a round trip through an mp4, and video clips through preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")

from align_fixtures import FixedDetector, make_table, table_row, write_frames  # noqa: E402
from hlora_mer.data.video import count_video_frames, read_video_frames, write_video  # noqa: E402
from hlora_mer.errors import DatasetError  # noqa: E402
from hlora_mer.preprocess.cache import clip_relpath  # noqa: E402
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table  # noqa: E402


def _frames(n: int = 12, shape=(120, 160)) -> list[np.ndarray]:
    """Smooth frames (video codecs like them) that differ clearly from one another."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    out = []
    for k in range(n):
        r = 128 + 100 * np.sin(xs / 15.0 + k * 0.7)
        g = 128 + 100 * np.cos(ys / 11.0 - k * 0.5)
        b = np.full(shape, 20.0 * k)
        out.append(np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = _frames()
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, frames, fps=30)
    return path, frames


def test_round_trip_reads_the_requested_frames(video) -> None:
    path, frames = video
    assert count_video_frames(path) == len(frames)
    wanted = [0, 5, 3, 3, 11]
    decoded = read_video_frames(path, wanted)
    assert decoded.shape == (5, 120, 160, 3) and decoded.dtype == np.uint8
    for got, number in zip(decoded, wanted, strict=True):
        errors = [np.abs(got.astype(int) - f.astype(int)).mean() for f in frames]
        assert errors[number] < 4.0, errors[number]  # lossy codec: a small tolerance
        assert int(np.argmin(errors)) == number  # and it is that frame, not a neighbour


def test_out_of_range_and_unreadable_videos_raise(video, tmp_path) -> None:
    path, frames = video
    with pytest.raises(DatasetError, match="decodes to 12 frames .* but frame 12 was requested"):
        read_video_frames(path, [2, 12])
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"not a video at all" * 100)
    with pytest.raises(DatasetError, match="cannot decode video"):
        read_video_frames(bogus, [0])
    with pytest.raises(ValueError, match="0-based"):
        read_video_frames(path, [-1])


def test_video_clip_preprocesses_like_its_frames(video, tmp_path) -> None:
    """Frame numbers of a video are 0-based decoded frames; the result matches the same frames as images."""
    path, frames = video
    decoded = read_video_frames(path, range(len(frames)))
    images = write_frames(tmp_path / "frames", list(decoded), first_number=0)
    rows = [
        table_row("vid/01/video", video_path=str(path), numbers=[], onset=2, offset=9),
        table_row("vid/01/images", images, onset=2, offset=9),
    ]
    params = PreprocessParams(num_frames=4, size=64, detector="dlib")
    detector = FixedDetector(eyes=((60, 50), (100, 50)), mouth=((65, 90), (95, 90)))
    report = preprocess_table(make_table(rows), tmp_path / "out", params, detector=detector)
    assert sorted(report.done) == ["vid/01/images", "vid/01/video"], report.failed
    clips = json.loads(report.manifest_path.read_text())["clips"]
    assert clips["vid/01/video"]["frame_numbers"] == [2, 4, 7, 9]
    assert clips["vid/01/video"]["source"] == "video"
    a = np.load(report.cache_dir / clip_relpath("vid/01/video"))
    b = np.load(report.cache_dir / clip_relpath("vid/01/images"))
    np.testing.assert_array_equal(a, b)
    # Unchanged video: skipped on the next run.
    again = preprocess_table(make_table(rows), tmp_path / "out", params, detector=detector)
    assert sorted(again.skipped) == ["vid/01/images", "vid/01/video"]


def test_video_too_short_for_its_interval_is_a_recorded_failure(video, tmp_path) -> None:
    path, _ = video
    rows = [table_row("vid/01/long", video_path=str(path), numbers=[], onset=5, offset=40)]
    report = preprocess_table(make_table(rows), tmp_path / "out", PreprocessParams(num_frames=4, detector="none"))
    assert "decodes to 12 frames (numbered from 0) but frames 17..40 were requested" in report.failed["vid/01/long"]
