"""SynthME: written in the CASME II format, deterministic, and its motion is where the class says."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from hlora_mer.synthme.generate import (
    ANNOTATION_FILE,
    CLASSES,
    HEADER,
    SynthConfig,
    _face_point,
    generate,
    motion_field,
    time_course,
)

SMALL = SynthConfig(subjects=2, clips_per_class=1, min_frames=6, max_frames=8, frame_size=64, seed=3)


def tree_digest(root):
    """The frames' bytes and the spreadsheet's cells (its zip carries the time it was written)."""
    from openpyxl import load_workbook

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    for row in load_workbook(root / ANNOTATION_FILE).active.iter_rows(values_only=True):
        digest.update(repr(row).encode())
    return digest.hexdigest()


def test_layout_and_spreadsheet_follow_the_casme2_release(tmp_path):
    from openpyxl import load_workbook

    clips = generate(tmp_path, SMALL)
    assert len(clips) == 2 * len(CLASSES)
    rows = list(load_workbook(tmp_path / "CASME2-coding-20190701.xlsx").active.values)
    assert rows[0] == HEADER
    assert len(rows) == 1 + len(clips)
    for clip, row in zip(clips, rows[1:], strict=True):
        assert row[0] == clip.subject and isinstance(row[0], str)  # text subjects, like the owner's file
        assert row[8] == clip.emotion
        folder = tmp_path / "Cropped" / f"sub{clip.subject}" / clip.filename
        numbers = sorted(int(p.stem.removeprefix("reg_img")) for p in folder.glob("reg_img*.jpg"))
        assert numbers == list(range(clip.onset, clip.offset + 1))
        assert clip.onset < clip.apex < clip.offset
    assert {c.emotion for c in clips} == set(CLASSES)


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(tmp_path):
    generate(tmp_path / "a", SMALL)
    generate(tmp_path / "b", SMALL)
    generate(tmp_path / "c", SynthConfig(**{**SMALL.__dict__, "seed": 4}))
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")


def test_it_loads_through_the_casme2_loader_with_the_expected_counts(tmp_path):
    from hlora_mer.data import load_dataset

    cfg = SynthConfig(subjects=3, clips_per_class=2, min_frames=6, max_frames=8, frame_size=64)
    generate(tmp_path, cfg)
    loaded = load_dataset("casme2", tmp_path)
    table = loaded.table
    assert len(table) == 30 and len(loaded.excluded) == 0
    assert table["emotion"].value_counts().to_dict() == {c: 6 for c in CLASSES}
    assert sorted(table["subject"].unique()) == ["casme2/01", "casme2/02", "casme2/03"]
    assert all(
        len(paths) == row.offset - row.onset + 1
        for paths, row in zip(table["frame_paths"], table.itertuples(), strict=True)
    )


@pytest.mark.parametrize(
    "emotion, landmark",
    [
        ("happiness", "mouth_left"),
        ("surprise", "left_brow_inner"),
        ("repression", "chin"),
        ("others", "right_brow_inner"),
    ],
)
def test_each_class_moves_its_own_region(emotion, landmark):
    size = 224
    field = motion_field(emotion, size, np.random.default_rng(0))
    magnitude = np.linalg.norm(field, axis=-1)
    x, y = _face_point(landmark, size).round().astype(int)
    assert magnitude[y, x] > 0.5  # strong where the action unit acts
    assert magnitude[5, 5] < 1e-3 and magnitude[-5, -5] < 1e-3  # nothing at the frame's corners


def test_time_course_rises_to_the_apex_and_falls():
    course = time_course(20, apex_index=8)
    assert course[0] == 0.0 and course[8] == pytest.approx(1.0)
    assert np.all(np.diff(course[:9]) > 0) and np.all(np.diff(course[8:]) < 0)


def test_zero_amplitude_keeps_the_nuisances_but_not_the_motion(tmp_path):
    still = SynthConfig(
        **{**SMALL.__dict__, "amplitude": 0.0, "noise": 0.0, "flicker": 0.0, "jitter": 0.0, "blink_probability": 0.0}
    )
    clips = generate(tmp_path, still)
    clip = clips[0]
    folder = tmp_path / "Cropped" / f"sub{clip.subject}" / clip.filename
    onset = np.asarray(Image.open(folder / f"reg_img{clip.onset}.jpg"), float)
    apex = np.asarray(Image.open(folder / f"reg_img{clip.apex}.jpg"), float)
    assert np.abs(apex - onset).max() == 0  # without motion and nuisances the frames are identical
