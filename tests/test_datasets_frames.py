"""Frame folders, layouts and error paths of the loaders (tiny generated frames in tmp_path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_fixtures import (
    CASME2_FILES,
    SAMM_FILE,
    annotation,
    casme2_root,
    place,
    samm_root,
    smic_root,
    write_frames,
)
from hlora_mer.data import check_dataset, frame_number, list_frames, load_dataset, read_frame, summarize
from hlora_mer.errors import DatasetError

# --- frame files -------------------------------------------------------------------------------------------


def test_frame_numbers_are_parsed_from_owner_names():
    assert frame_number("img46.jpg") == 46
    assert frame_number("reg_img46.jpg") == 46
    assert frame_number("006_05562.jpg") == 5562
    assert frame_number("image090823.bmp") == 90823
    assert frame_number("166.jpg") == 166
    assert frame_number("EP01_2-007.jpg") == 7
    assert frame_number("thumbs.jpg") is None


def test_list_frames_sorts_numerically(tmp_path):
    write_frames(tmp_path, ["img100.jpg", "img46.jpg", "img9.jpg", "img47.jpg", "notes.txt"])
    numbers, paths = list_frames(tmp_path)
    assert numbers == (9, 46, 47, 100)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["img9.jpg", "img46.jpg", "img47.jpg", "img100.jpg"]


def test_casme2_clip_frames_are_in_numeric_order_and_limited_to_the_interval(tmp_path):
    root = tmp_path / "c2"
    place(CASME2_FILES["20190701"], root)
    table = load_dataset("casme2", root).table
    # a clip whose interval crosses 99 -> 100, where string order would differ
    row = table[(table["onset"] < 100) & (table["offset"] >= 100)].iloc[0]
    folder = root / "CASME2_RAW_selected" / f"sub{row['subject_raw']}" / row["clip"]
    onset, offset = int(row["onset"]), int(row["offset"])
    write_frames(folder, [f"img{n}.jpg" for n in range(onset - 2, offset + 3)])  # two extra frames at each end
    got = load_dataset("casme2", root).table.set_index("sample_id").loc[row["sample_id"]]
    assert got["frame_numbers"] == tuple(range(onset, offset + 1))
    assert [int(p.rsplit("img", 1)[1][:-4]) for p in got["frame_paths"]] == list(got["frame_numbers"])


def test_casme2_cropped_release_is_found(tmp_path):
    root = casme2_root(tmp_path, release="cropped")
    loaded = load_dataset("casme2", root)
    first = loaded.table.iloc[0]
    assert first["frame_paths"][0].endswith("Cropped/sub01/EP02_01f/reg_img46.jpg")
    assert first["frame_numbers"] == (46, 59, 86)
    assert any("Cropped" in n for n in loaded.notes)


def test_samm_grayscale_frames_are_served_as_three_channels(tmp_path):
    root = samm_root(tmp_path)
    row = load_dataset("samm", root).table.iloc[0]
    assert row["frame_paths"][0].endswith("006/006_1_2/006_05562.jpg")
    from PIL import Image

    with Image.open(row["frame_paths"][0]) as image:
        assert image.mode == "L"  # the fixture really wrote grayscale
    frame = read_frame(row["frame_paths"][0])
    assert frame.shape == (8, 8, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 1], frame[..., 2])


def test_read_frame_keeps_colour(tmp_path):
    write_frames(tmp_path, ["img1.jpg"])
    frame = read_frame(tmp_path / "img1.jpg")
    assert frame.shape == (8, 8, 3)
    assert frame[..., 2].mean() > frame[..., 1].mean() + 50  # (128, 64, 200) survives JPEG


def test_read_frame_unreadable_and_missing(tmp_path):
    bad = tmp_path / "img1.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="cannot read image .*img1.jpg"):
        read_frame(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        read_frame(tmp_path / "img2.jpg")


# --- check -------------------------------------------------------------------------------------------------


def _manifest(root, rows, header="subject,clip,path,emotion,onset,apex,offset"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_check_lists_each_problem_with_its_sample(tmp_path):
    root = tmp_path / "m"
    write_frames(root / "ok", [f"f{n}.jpg" for n in range(10, 20)])
    write_frames(root / "gap", [f"f{n}.jpg" for n in (10, 11, 15, 19)])
    write_frames(root / "noonset", [f"f{n}.jpg" for n in range(11, 20)])
    write_frames(root / "short", [f"f{n}.jpg" for n in range(1, 4)])
    write_frames(root / "broken", [f"f{n}.jpg" for n in range(1, 11)])
    (root / "broken" / "f5.jpg").write_bytes(b"garbage")
    (root / "broken" / "f1.jpg").write_bytes(b"garbage")
    _manifest(
        root,
        [
            "1,ok,ok,happiness,10,14,19",
            "1,gap,gap,happiness,10,12,19",
            "1,noonset,noonset,happiness,10,14,19",
            "2,short,short,surprise,1,2,3",
            "2,broken,broken,surprise,1,5,10",
            "2,missing,nowhere,surprise,1,5,10",
            "3,apex,ok,others,10,25,19",
            "3,backwards,ok,others,19,15,10",
            "3,badvalue,ok,others,10,abc,19",
        ],
    )
    loaded = load_dataset("manifest", root)
    problems = check_dataset(loaded, num_frames=8)
    found = {(p.sample_id, p.kind) for p in problems}
    assert found == {
        ("manifest/1/gap", "missing_apex_frame"),
        ("manifest/1/gap", "frame_gap"),
        ("manifest/1/gap", "short_clip"),
        ("manifest/1/noonset", "missing_onset_frame"),
        ("manifest/2/short", "short_clip"),
        ("manifest/2/broken", "unreadable_image"),
        ("manifest/2/missing", "missing_frames"),
        ("manifest/3/apex", "apex_outside_interval"),
        ("manifest/3/backwards", "invalid_interval"),
        ("manifest/3/badvalue", "bad_frame_value"),
    }
    by = {(p.sample_id, p.kind): p for p in problems}
    assert "13-14, 16-18" in by[("manifest/1/gap", "frame_gap")].message
    assert by[("manifest/2/short", "short_clip")].severity == "warning"
    assert by[("manifest/3/backwards", "invalid_interval")].severity == "excluded"
    unreadable = [p for p in problems if p.kind == "unreadable_image"]
    assert sorted(p.message.split("cannot read ")[1].split(" ")[0].rsplit("/", 1)[1] for p in unreadable) == [
        "f1.jpg",
        "f5.jpg",
    ]
    # the whole clip is opened with images="all"; nothing is opened with "none"
    assert not any(p.kind == "unreadable_image" for p in check_dataset(loaded, images="none"))


def test_check_flags_slash_apex_and_missing_clip_folders(tmp_path):
    root = casme2_root(tmp_path)
    clip = root / "CASME2_RAW_selected" / "sub01" / "EP02_01f"
    for path in clip.iterdir():
        path.unlink()
    clip.rmdir()
    (root / "CASME2_RAW_selected" / "sub01" / "EP03_02" / "img131.jpg").unlink()
    problems = {(p.sample_id, p.kind) for p in check_dataset(load_dataset("casme2", root))}
    assert ("casme2/01/EP02_01f", "missing_frames") in problems
    assert ("casme2/01/EP03_02", "missing_onset_frame") in problems
    assert ("casme2/04/EP12_01f", "no_apex") in problems


def test_require_frames_excludes_and_counts(tmp_path):
    root = casme2_root(tmp_path)
    clip = root / "CASME2_RAW_selected" / "sub01" / "EP02_01f"
    for path in clip.iterdir():
        path.unlink()
    kept = load_dataset("casme2", root)
    assert len(kept.table) == 255
    assert kept.table.set_index("sample_id").loc["casme2/01/EP02_01f", "frame_paths"] == ()
    strict = load_dataset("casme2", root, require_frames=True)
    assert len(strict.table) == 254
    assert strict.excluded["sample_id"].tolist() == ["casme2/01/EP02_01f"]
    assert summarize(strict).excluded == {"no_frames": 1}


# --- annotation errors ---------------------------------------------------------------------------------------


def test_missing_root_shows_expected_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)does not exist.*Expected layout of a SAMM root.*006/006_1_2"):
        load_dataset("samm", tmp_path / "nowhere")


def test_missing_annotation_shows_expected_layout(tmp_path):
    with pytest.raises(
        DatasetError, match=r"(?s)no v2 annotation file.*SAMM_Micro_FACS_Codes_v2.xlsx.*Expected layout"
    ):
        load_dataset("samm", tmp_path)
    with pytest.raises(DatasetError, match="annotation file .*absent.xlsx does not exist"):
        load_dataset("samm", tmp_path, annotation=tmp_path / "absent.xlsx")


def test_unknown_dataset_version_and_option(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'casme9'; known datasets: .*casme2.*samm"):
        load_dataset("casme9", tmp_path)
    with pytest.raises(
        DatasetError, match=r"unknown annotation version '2015'; known versions: \['20190701', '20140508', 'updated'\]"
    ):
        load_dataset("casme2", tmp_path, version="2015")
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['frame'\]; casme2 accepts: frames"):
        load_dataset("casme2", tmp_path, frame="raw")


def test_wrong_file_names_the_missing_sheet(tmp_path):
    path = place(SAMM_FILE, tmp_path)
    with pytest.raises(DatasetError, match=r"has no sheet 'label'; its sheets are \['MICRO_ONLY'\]"):
        load_dataset("casme3", tmp_path, annotation=path)


def test_missing_columns_are_listed(tmp_path):
    path = tmp_path / "CASME2-coding-20190701.xlsx"
    pd.DataFrame({"Subject": ["01"], "Filename": ["EP02_01f"], "Onset": ["1"]}).to_excel(path, index=False)
    with pytest.raises(DatasetError, match=r"lacks columns \['OnsetFrame', .*found \['Subject', 'Filename', 'Onset'\]"):
        load_dataset("casme2", tmp_path)


def test_duplicated_keys_are_excluded_not_merged(tmp_path):
    source = pd.read_excel(annotation(CASME2_FILES["20190701"]), dtype=str)
    doubled = pd.concat([source, source.iloc[[0]].assign(OnsetFrame="50")], ignore_index=True)
    doubled.to_excel(tmp_path / "CASME2-coding-20190701.xlsx", index=False)
    loaded = load_dataset("casme2", tmp_path)
    assert len(loaded.table) == 255
    assert loaded.table.set_index("sample_id").loc["casme2/01/EP02_01f", "onset"] == 46  # first kept
    row = loaded.excluded.iloc[0]
    assert (row["sample_id"], row["kind"]) == ("casme2/01/EP02_01f", "duplicate_key")
    assert "row 257" in row["reason"] and "row 2" in row["reason"]


def test_updated_version_with_integer_subjects(tmp_path):
    source = pd.read_excel(annotation(CASME2_FILES["20190701"]), dtype=str)
    source["Subject"] = source["Subject"].astype(int)
    source.to_excel(tmp_path / "CASME2-coding-updated.xlsx", index=False)
    loaded = load_dataset("casme2", tmp_path, version="updated")
    assert loaded.version == "updated"
    assert loaded.table.loc[0, "sample_id"] == "casme2/01/EP02_01f"
    assert loaded.table["subject"].nunique() == 26


# --- SMIC ---------------------------------------------------------------------------------------------------


def test_smic_variants_and_non_micro(tmp_path):
    rows = [("s11", "s11_po_01", "positive"), ("s11", "s11_ne_02", "negative"), ("s12", "s12_sur_01", "surprise")]
    root = smic_root(tmp_path, rows, variant="VIS", frames=5)
    write_frames(root / "VIS" / "s11" / "non_micro" / "s11_nm_01", ["image000001.jpg"])
    with pytest.raises(DatasetError, match=r"(?s)no HS/ folder.*Expected layout of a SMIC root"):
        load_dataset("smic", root)
    loaded = load_dataset("smic_vis", root)
    table = loaded.table.set_index("sample_id")
    assert list(table.index) == ["smic/vis/s11/s11_ne_02", "smic/vis/s11/s11_po_01", "smic/vis/s12/s12_sur_01"]
    assert table.loc["smic/vis/s11/s11_po_01", "subject"] == "smic/s11"
    assert table.loc["smic/vis/s11/s11_po_01", ["onset", "offset"]].tolist() == [90000, 90004]
    assert table["apex"].isna().all() and (table["fps"] == 25.0).all()
    assert loaded.excluded["kind"].tolist() == ["non_micro"]
    assert load_dataset("smic", root, variant="vis").table["sample_id"].tolist() == list(table.index)
    with pytest.raises(DatasetError, match="unknown variant 'ir'"):
        load_dataset("smic", root, variant="ir")
