"""The package's one image reader: every image mode to (H, W, 3) uint8 RGB, the same pixels for the data
loaders (``read_frame``) and for preprocessing (``read_frame_and_hash``)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from align_fixtures import make_table, table_row
from hlora_mer.data.frames import read_frame, read_frame_and_hash
from hlora_mer.preprocess.cache import clip_relpath
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (6, 5), dtype=np.uint8)


def _grey3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.uint8)[:, :, None], 3, axis=2)


def _save(path, image: Image.Image):
    image.save(path)
    return path


def test_8_bit_rgb_and_grey_l(tmp_path) -> None:
    frame = read_frame(_save(tmp_path / "img1.png", Image.fromarray(RGB)))
    assert frame.dtype == np.uint8 and np.array_equal(frame, RGB)
    grey = tmp_path / "img2.png"
    _save(grey, Image.fromarray(GREY))
    with Image.open(grey) as image:
        assert image.mode == "L"
    assert np.array_equal(read_frame(grey), _grey3(GREY))


def test_rgba_drops_alpha_and_palette_is_expanded(tmp_path) -> None:
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])
    assert np.array_equal(read_frame(_save(tmp_path / "img1.png", Image.fromarray(rgba, "RGBA"))), RGB)
    palette_image = Image.fromarray(RGB).quantize(colors=16)
    path = _save(tmp_path / "img2.png", palette_image)
    with Image.open(path) as image:
        assert image.mode == "P"
    assert np.array_equal(read_frame(path), np.asarray(palette_image.convert("RGB")))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_grey_full_range_keeps_the_top_8_bits(tmp_path, ext: str) -> None:
    values = (GREY.astype(np.uint16) << 8) | RNG.integers(0, 256, GREY.shape, dtype=np.uint16)
    path = _save(tmp_path / f"img1{ext}", Image.fromarray(values))
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # the file really is 16-bit
    assert np.array_equal(read_frame(path), _grey3(values >> 8))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16_bit_grey_with_small_values_is_not_shifted_to_black(tmp_path, ext: str) -> None:
    values = GREY.astype(np.uint16)  # every value fits in 8 bits
    path = _save(tmp_path / f"img1{ext}", Image.fromarray(values))
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    frame = read_frame(path)
    assert frame.max() > 0
    assert np.array_equal(frame, _grey3(GREY))


def test_read_frame_and_hash_gives_the_same_pixels_and_the_file_hash(tmp_path) -> None:
    path = _save(tmp_path / "img1.png", Image.fromarray(GREY.astype(np.uint16)))
    frame, digest = read_frame_and_hash(path)
    assert np.array_equal(frame, read_frame(path))
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("scale", [1, 256], ids=["small-values", "full-range"])
def test_preprocessing_and_the_data_loaders_see_the_same_pixels(tmp_path, scale: int) -> None:
    """A 16-bit clip through preprocessing (detector none, size = frame size: an identity warp) equals
    what read_frame gives for its frames."""
    (tmp_path / "clip").mkdir()
    paths = []
    for k in range(1, 4):
        values = RNG.integers(0, 256, (16, 16), dtype=np.uint16) * scale
        paths.append(_save(tmp_path / "clip" / f"img{k}.png", Image.fromarray(values)))
    params = PreprocessParams(num_frames=3, size=16, detector="none")
    report = preprocess_table(make_table([table_row("toy/01/a", paths)]), tmp_path / "out", params)
    assert report.done == ["toy/01/a"]
    clip = np.load(report.cache_dir / clip_relpath("toy/01/a"))
    expected = np.stack([read_frame(p) for p in paths])
    assert expected.max() > 0
    assert np.array_equal(clip, expected)


def test_an_unreadable_frame_is_named_by_its_file_not_by_a_stream(tmp_path) -> None:
    from hlora_mer.errors import DatasetError

    bad = tmp_path / "img1.jpg"
    bad.write_bytes(b"this is not a picture")
    with pytest.raises(DatasetError) as err:
        read_frame_and_hash(bad)
    assert str(bad) in str(err.value) and "BytesIO" not in str(err.value)
    # the reason preprocessing records (and the run's excluded.csv shows) names the file too
    table = make_table([table_row("toy/01/a", [bad, bad], [1, 2])])
    report = preprocess_table(table, tmp_path / "out", PreprocessParams(num_frames=2, size=28, detector="none"))
    reason = report.failed["toy/01/a"]
    assert str(bad) in reason and "BytesIO" not in reason
