"""Users' own data (manifest, folder tree), MEVIEW via manifest, and the beyond-the-paper datasets.

MMEW, CASME, CAS(ME)^2 and 4DME annotation files are not available here: these tests write small
workbooks with the documented columns (docs/datasets.md) and check the loaders read them as documented.
"""

from __future__ import annotations

import pandas as pd
import pytest

from data_fixtures import write_frames
from hlora_mer.data import apply_label_scheme, check_dataset, load_dataset
from hlora_mer.errors import DatasetError


def test_manifest_frames_videos_and_fps(tmp_path):
    write_frames(tmp_path / "clips" / "a", [f"frame{n:04d}.png" for n in range(5, 15)])
    (tmp_path / "clips" / "b.mp4").write_bytes(b"\x00")
    (tmp_path / "manifest.csv").write_text(
        "subject,clip,path,emotion,onset,apex,offset,fps\n"
        "p1,a,clips/a,happiness,,,,30\n"
        "p1,b,clips/b.mp4,surprise,0,4,20,\n"
        "p2,c,clips/c.mp4,surprise,0,4,20,\n"
        "p2,d,clips/b.mp4,surprise,,,,\n"
        "p3,e,clips/a,others,20,,30,\n"
    )
    loaded = load_dataset("manifest", tmp_path, dataset_name="mydata", fps=25)
    table = loaded.table.set_index("sample_id")
    assert list(table.index) == ["mydata/p1/a", "mydata/p1/b", "mydata/p2/c", "mydata/p2/d", "mydata/p3/e"]
    a, b = table.loc["mydata/p1/a"], table.loc["mydata/p1/b"]
    assert (a["onset"], a["offset"], a["frame_numbers"][:2]) == (5, 14, (5, 6))  # bounds from the folder
    assert a["fps"] == 30.0 and b["fps"] == 25.0
    assert b["video_path"].endswith("clips/b.mp4") and b["frame_paths"] == ()
    assert table.loc["mydata/p1/a", "subject"] == "mydata/p1"
    # a video without onset/offset is the whole video
    assert table.loc["mydata/p2/d", ["onset", "offset"]].isna().all()
    # bounds outside the frames on disk leave nothing to show: kept frameless and reported by check
    assert table.loc["mydata/p3/e", "frame_paths"] == ()
    kinds = {(p.sample_id, p.kind) for p in check_dataset(loaded)}
    assert ("mydata/p2/c", "missing_video") in kinds and ("mydata/p1/b", "missing_video") not in kinds
    assert ("mydata/p3/e", "missing_frames") in kinds


def test_manifest_missing_columns_and_file(tmp_path):
    with pytest.raises(
        DatasetError, match=r"(?s)no csv annotation file.*manifest.csv.*Expected layout of a CSV manifest root"
    ):
        load_dataset("manifest", tmp_path)
    (tmp_path / "manifest.csv").write_text("subject,clip,emotion\n1,a,happy\n")
    with pytest.raises(DatasetError, match=r"lacks columns \['path'\]"):
        load_dataset("manifest", tmp_path)


def test_meview_needs_a_manifest_and_says_why(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)meview_manifest.csv.*MEVIEW's own distribution format is UNCONFIRMED"):
        load_dataset("meview", tmp_path)
    write_frames(tmp_path / "poker1", [f"{n}.jpg" for n in range(1, 6)])
    (tmp_path / "meview_manifest.csv").write_text(
        "subject,clip,path,emotion,onset,apex,offset\n"
        "1,poker1,poker1,happiness,1,3,5\n"
        "2,poker2,poker1,contempt,1,2,5\n"
        "2,poker3,poker1,surprise,1,2,5\n"
    )
    loaded = load_dataset("meview", tmp_path)
    assert loaded.table["fps"].tolist() == [25.0] * 3
    labelled, _ = apply_label_scheme(loaded.table, "meview_3cls")
    assert labelled["label"].tolist() == ["positive", "negative", "surprise"]


def test_folder_tree_of_the_official_code(tmp_path):
    write_frames(tmp_path / "disgust" / "01_EP19_05f", ["img1.jpg", "img2.jpg", "img10.jpg"])
    write_frames(tmp_path / "happiness" / "17_EP02_01f", ["img5.jpg"])
    write_frames(tmp_path / "happiness" / "noprefix", ["img5.jpg"])
    (tmp_path / "surprise").mkdir()
    (tmp_path / "surprise" / "006_1_2.mp4").write_bytes(b"\x00")
    loaded = load_dataset("folder_tree", tmp_path, dataset_name="casme2_data_5")
    table = loaded.table.set_index("sample_id")
    assert list(table.index) == [
        "casme2_data_5/01/01_EP19_05f",
        "casme2_data_5/17/17_EP02_01f",
        "casme2_data_5/006/006_1_2",
    ]
    assert table.loc["casme2_data_5/01/01_EP19_05f", "frame_numbers"] == (1, 2, 10)
    assert table.loc["casme2_data_5/01/01_EP19_05f", "emotion"] == "disgust"
    assert table.loc["casme2_data_5/006/006_1_2", "video_path"].endswith("006_1_2.mp4")
    assert loaded.excluded["kind"].tolist() == ["missing_key"]
    assert "subject_separator" in loaded.excluded["reason"].iloc[0]


def test_folder_tree_empty_root_is_a_clear_error(tmp_path):
    write_frames(tmp_path, ["img1.jpg"])
    with pytest.raises(DatasetError, match=r"(?s)no <class>/<clip>/ folders.*point it at the folder above"):
        load_dataset("folder_tree", tmp_path)


def test_mmew_documented_columns_and_repression_folder(tmp_path):
    pd.DataFrame(
        {
            "Subject": ["S01", "S01"],
            "Filename": ["1_1_1", "1_5_1"],
            "OnsetFrame": [1, 1],
            "ApexFrame": [20, 15],
            "OffsetFrame": [40, 30],
            "Action Units": ["AU12", "AU4"],
            "Estimated Emotion": ["happiness", "others"],
            "remarks": [None, None],
        }
    ).to_excel(tmp_path / "MMEW_Micro_Exp.xlsx", index=False)
    write_frames(tmp_path / "Micro_Expression" / "happiness" / "1_1_1", ["1.jpg", "20.jpg", "40.jpg"])
    write_frames(tmp_path / "Micro_Expression" / "repression" / "1_5_1", ["1.jpg", "15.jpg", "30.jpg"])
    table = load_dataset("mmew", tmp_path).table.set_index("sample_id")
    assert table.loc["mmew/S01/1_1_1", "frame_numbers"] == (1, 20, 40)
    assert table.loc["mmew/S01/1_5_1", "frame_numbers"] == (1, 15, 30)  # 'others' read from the repression folder
    assert table["fps"].tolist() == [90.0, 90.0]


def test_casme_documented_columns(tmp_path):
    pd.DataFrame(
        {
            "Subject": [1],
            "Filename": ["EP01_5"],
            "Unnamed": [None],
            "OnsetF": [10],
            "ApexF1": [12],
            "ApexF2": [13],
            "OffsetF": [20],
            "AU": ["4"],
            "Emotion": ["disgust"],
        }
    ).rename(columns={"Unnamed": " "}).to_excel(tmp_path / "casme.xlsx", index=False)
    write_frames(tmp_path / "CASME_raw_selected" / "sub01" / "EP01_5", [f"EP01_5-{n:03d}.jpg" for n in range(10, 21)])
    row = load_dataset("casme", tmp_path).table.iloc[0]
    assert (row["sample_id"], row["apex"], row["frame_numbers"][0], len(row["frame_numbers"])) == (
        "casme/01/EP01_5",
        12,
        10,
        11,
    )


def test_4dme_documented_columns(tmp_path):
    pd.DataFrame(
        {
            "sub_ID": ["S1"],
            "fold_name": ["S1_a_1"],
            "Onset": [3],
            "Apex": [5],
            "Offset": [9],
            "AUs": ["AU4"],
            "Emotion": ["negative"],
            "Positive": [0],
            "Negative": [1],
        }
    ).to_excel(tmp_path / "4DME_Labelling_Micro_release v1.xlsx", index=False)
    write_frames(tmp_path / "gray_micro" / "S1" / "S1_a_1", [f"{n}.jpg" for n in range(3, 10)], gray=True)
    row = load_dataset("4dme", tmp_path).table.iloc[0]
    assert (row["sample_id"], row["emotion"], len(row["frame_paths"])) == ("4dme/S1/S1_a_1", "negative", 7)


def test_cas_me_2_headerless_sheet_micro_only(tmp_path):
    path = tmp_path / "CAS(ME)^2code_final.xlsx"
    rows = [
        [1, "anger1_1", 557, 572, 608, "4+10", "negative", "macro-expression", "anger"],
        [1, "anger1_2", 300, 0, 320, "4", "negative", "micro-expression", "anger"],
        [2, "happy1_1", 10, 12, 0, "12", "positive", "micro-expression", "happiness"],
    ]
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame(rows).to_excel(writer, sheet_name="CASMEcode_final", header=False, index=False)
        pd.DataFrame([[1, "s15", 15], [2, "s16", 16]]).to_excel(
            writer, sheet_name="naming rule1", header=False, index=False
        )
        pd.DataFrame([["0401", "anger1"], ["0502", "happy1"]]).to_excel(
            writer, sheet_name="naming rule2", header=False, index=False
        )
    write_frames(tmp_path / "rawpic" / "s15" / "15_0401girlcrashing", [f"img{n}.jpg" for n in (300, 310, 320)])
    loaded = load_dataset("cas_me_2", tmp_path)
    table = loaded.table.set_index("sample_id")
    assert list(table.index) == ["cas_me_2/s15/anger1_2"]
    assert table.loc["cas_me_2/s15/anger1_2", "apex"] is pd.NA  # 0 means missing
    assert table.loc["cas_me_2/s15/anger1_2", "frame_numbers"] == (300, 310, 320)
    assert sorted(loaded.excluded["kind"]) == ["expression_type", "missing_offset"]
    assert len(load_dataset("cas_me_2", tmp_path, expression_type="all").table) == 2
