"""The loaders reproduce the counts of docs/datasets.md on the real annotation files (HLoRA-MER Tables 1, 2).

Each dataset root is built in tmp_path from the real annotation file plus 8x8 JPEGs for the onset, apex
and offset frames, in the owner's layout.
"""

from __future__ import annotations

import pandas as pd
import pytest

from data_fixtures import (
    CASME2_OBJECTIVE,
    casme2_root,
    casme3_root,
    megc_root,
    place,
    samm_root,
)
from hlora_mer.data import apply_label_scheme, load_dataset, summarize
from hlora_mer.errors import DatasetError


def counts(table: pd.DataFrame, scheme: str) -> dict[str, int]:
    labelled, _ = apply_label_scheme(table, scheme)
    return labelled["label"].value_counts().to_dict()


@pytest.fixture(scope="module")
def casme2(tmp_path_factory):
    return load_dataset("casme2", casme2_root(tmp_path_factory.mktemp("c2")))


@pytest.fixture(scope="module")
def samm(tmp_path_factory):
    return load_dataset("samm", samm_root(tmp_path_factory.mktemp("samm")))


@pytest.fixture(scope="module")
def casme3(tmp_path_factory):
    return load_dataset("casme3", casme3_root(tmp_path_factory.mktemp("c3")))


@pytest.fixture(scope="module")
def megc(tmp_path_factory):
    return load_dataset("megc2019", megc_root(tmp_path_factory.mktemp("megc")))


# --- CASME II -------------------------------------------------------------------------------------------


def test_casme2_20190701_reads_every_row_with_frames(casme2):
    assert casme2.version == "20190701"
    assert casme2.annotation_md5 == "967bf9f284b7f8c363c939cbded62398"
    assert len(casme2.table) == 255 and len(casme2.excluded) == 0
    assert casme2.table["subject"].nunique() == 26
    assert all(len(p) >= 2 for p in casme2.table["frame_paths"])


def test_casme2_5cls_counts(casme2):
    labelled, dropped = apply_label_scheme(casme2.table, "casme2_5cls")
    assert len(labelled) == 249
    assert labelled["label"].value_counts().to_dict() == {
        "happiness": 32,
        "disgust": 63,
        "repression": 27,
        "surprise": 28,
        "others": 99,
    }
    assert labelled["subject"].nunique() == 26
    assert sorted(dropped["emotion"]) == ["fear"] * 2 + ["sadness"] * 4
    assert set(dropped["kind"]) == {"dropped_label"}


def test_casme2_3cls_counts(casme2):
    labelled, _ = apply_label_scheme(casme2.table, "casme2_3cls")
    assert len(labelled) == 156
    assert labelled["label"].value_counts().to_dict() == {"positive": 32, "surprise": 28, "negative": 96}
    assert labelled["subject"].nunique() == 25
    assert "casme2/18" not in set(labelled["subject"])
    # label_index follows the scheme's class order
    assert (labelled["label_index"] == labelled["label"].map({"negative": 0, "positive": 1, "surprise": 2})).all()


def test_casme2_hde_counts(casme2):
    assert counts(casme2.table, "hde_3cls") == {"happiness": 32, "surprise": 28, "others": 99}


def test_casme2_20140508_cross_check(tmp_path):
    loaded = load_dataset("casme2", casme2_root(tmp_path, "20140508", frames=None), version="20140508")
    assert loaded.annotation_md5 == "62769c86dce8655b2fb29013cba93c6f"
    five, _ = apply_label_scheme(loaded.table, "casme2_5cls")
    assert len(five) == 246 and (five["label"] == "surprise").sum() == 25
    assert counts(loaded.table, "casme2_3cls") == {"positive": 32, "surprise": 25, "negative": 99}


def test_casme2_slash_apex_is_na_and_subject_is_text(casme2):
    row = casme2.table.set_index("sample_id").loc["casme2/04/EP12_01f"]
    assert row["apex"] is pd.NA
    assert (row["onset"], row["offset"]) == (261, 321)
    assert casme2.table["apex"].isna().sum() == 1
    assert casme2.table["subject_raw"].str.fullmatch(r"\d\d").all()
    assert str(casme2.table["apex"].dtype) == "Int64"


def test_casme2_filenames_repeat_but_sample_ids_are_unique(casme2):
    table = casme2.table
    assert table["clip"].duplicated().any()  # EP02_01f is in sub01 and sub09
    assert table["sample_id"].is_unique
    assert {"casme2/01/EP02_01f", "casme2/09/EP02_01f"} <= set(table["sample_id"])


def test_casme2_objective_classes_two_versions(tmp_path):
    root = casme2_root(tmp_path, frames=None)
    coding = load_dataset("casme2", root)
    assert counts(coding.table, "objective_5cls") == {"I": 30, "II": 18, "III": 93, "IV": 15, "V": 18}  # 174
    place(CASME2_OBJECTIVE, root)
    objective = load_dataset("casme2", root)
    assert sum(counts(objective.table, "objective_5cls").values()) == 185
    assert counts(objective.table, "objective_5cls") == {"I": 25, "II": 15, "III": 99, "IV": 26, "V": 20}
    assert any(CASME2_OBJECTIVE in note for note in objective.notes)


def test_casme2_missing_default_version_names_the_one_found(tmp_path):
    root = casme2_root(tmp_path, "20140508", frames=None)
    with pytest.raises(DatasetError, match=r"(?s)no 20190701 annotation file.*Expected layout.*version='20140508'"):
        load_dataset("casme2", root)


# --- SAMM -----------------------------------------------------------------------------------------------


def test_samm_reads_header_on_row_14_with_text_subjects(samm):
    assert samm.annotation_md5 == "27c6613fa3c0fcb146c152c4ada83f7d"
    assert len(samm.table) == 159 and samm.table["subject"].nunique() == 29
    assert "samm/006" in set(samm.table["subject"])
    assert samm.table["subject_raw"].str.fullmatch(r"\d{3}").all()
    assert samm.table.loc[0, "sample_id"] == "samm/006/006_1_2"
    assert (samm.table.loc[0, "onset"], samm.table.loc[0, "apex"], samm.table.loc[0, "offset"]) == (5562, 5588, 5632)


def test_samm_5cls_counts(samm):
    labelled, _ = apply_label_scheme(samm.table, "samm_5cls")
    assert len(labelled) == 136
    assert labelled["label"].value_counts().to_dict() == {
        "happiness": 26,
        "anger": 57,
        "contempt": 12,
        "surprise": 15,
        "others": 26,
    }
    assert labelled["subject"].nunique() == 27


def test_samm_3cls_counts(samm):
    labelled, _ = apply_label_scheme(samm.table, "samm_3cls")
    assert len(labelled) == 133
    assert labelled["label"].value_counts().to_dict() == {"positive": 26, "surprise": 15, "negative": 92}
    assert labelled["subject"].nunique() == 28 and "samm/025" not in set(labelled["subject"])


def test_samm_hde_and_objective_counts(samm):
    assert counts(samm.table, "hde_3cls") == {"happiness": 26, "surprise": 15, "others": 26}
    assert counts(samm.table, "objective_5cls") == {"I": 24, "II": 13, "III": 20, "IV": 8, "V": 3}


def test_samm_apex_fixes_not_applied_to_in_range_apexes(samm):
    # The shipped copy has in-range apexes for 028_4_1, 032_3_1, 032_3_2: they must stay as written.
    apex = samm.table.set_index("clip")["apex"]
    assert (apex["028_4_1"], apex["032_3_1"], apex["032_3_2"]) == (1113, 4930, 5127)
    assert sum("fix not needed" in n for n in samm.notes) == 3


# --- CAS(ME)^3 ------------------------------------------------------------------------------------------


def test_casme3_v2_gives_860_not_943(casme3):
    assert casme3.version == "v2"
    assert casme3.annotation_md5 == "f35de8e39ceb370966f8641ef310e15b"
    assert len(casme3.table) == 860 and len(casme3.excluded) == 0
    assert casme3.table["subject"].nunique() == 94
    assert counts(casme3.table, "casme3_7cls") == {
        "happiness": 55,
        "anger": 64,
        "disgust": 250,
        "fear": 86,
        "surprise": 187,
        "sadness": 57,
        "others": 161,
    }
    assert counts(casme3.table, "casme3_4cls") == {"negative": 457, "surprise": 187, "others": 161, "positive": 55}
    assert sum(counts(casme3.table, "casme3_3cls").values()) == 699


def test_casme3_text_cells_are_cast_and_key_includes_onset(casme3):
    table = casme3.table
    assert str(table["onset"].dtype) == "Int64"
    row = table.set_index("sample_id").loc["casme3/spNO.1/b/166"]
    assert (row["onset"], row["apex"], row["offset"]) == (166, 175, 179)
    assert table.duplicated(["subject", "clip"]).any()
    assert table["sample_id"].is_unique
    assert (table["emotion"] == "Others").sum() == 3  # kept as written; casme3_7cls folds it into others


def test_casme3_documented_bad_rows_are_corrected(casme3):
    table = casme3.table.set_index("sample_id")
    assert table.loc["casme3/spNO.149/d/112", "apex"] == 123
    assert table.loc["casme3/spNO.214/c/5", "offset"] == 34
    assert table.loc["casme3/spNO.216/d/2647", ["onset", "apex", "offset"]].tolist() == [2647, 2668, 2694]
    assert table.loc["casme3/spNO.216/e/1", ["onset", "apex"]].tolist() == [1, 1]
    assert table.loc["casme3/spNO.40/e/1812", "offset"] == 1845
    assert table.loc["casme3/spNO.40/e/2327", "offset"] == 2403
    assert sum(n.startswith("fixed row") for n in casme3.notes) == 6
    assert (casme3.table["offset"] >= casme3.table["onset"]).all()
    ok = casme3.table.dropna(subset=["apex"])
    assert ((ok["apex"] >= ok["onset"]) & (ok["apex"] <= ok["offset"])).all()


def test_casme3_upper_case_filename_found_on_lower_case_folder(tmp_path):
    root = casme3_root(tmp_path, frames=None)
    folder = root / "part_A" / "spNO.14" / "j" / "color"  # the row writes 'J'
    folder.mkdir(parents=True)
    for n in (1012, 1019, 1038):
        (folder / f"{n}.jpg").write_bytes(b"")
    row = load_dataset("casme3", root).table.set_index("sample_id").loc["casme3/spNO.14/J/1012"]
    assert row["frame_numbers"] == (1012, 1019, 1038)


# --- MEGC2019 composite -----------------------------------------------------------------------------------


def test_megc2019_is_exactly_the_official_csv(megc):
    assert megc.annotation_md5 == "ed429a7d56fbf800d5aeecdedec21a7a"
    table = megc.table
    assert len(table) == 442
    assert table["dataset"].value_counts().to_dict() == {"casme2": 145, "samm": 133, "smic": 164}
    assert table["subject"].nunique() == 68
    assert {"casme2/01", "samm/006", "smic/s1"} <= set(table["subject"])
    labelled, dropped = apply_label_scheme(table, "megc2019_3cls")
    assert len(dropped) == 0
    assert labelled["label"].value_counts().to_dict() == {"negative": 250, "positive": 109, "surprise": 83}
    per_part = labelled.groupby("dataset")["label"].value_counts().unstack()
    assert per_part.loc["casme2"].tolist() == [88, 32, 25]
    assert per_part.loc["samm"].tolist() == [92, 26, 15]
    assert per_part.loc["smic"].tolist() == [70, 51, 43]


def test_megc2019_leaves_out_the_two_disgust_clips_explicitly(megc):
    excluded = megc.excluded.set_index("sample_id")
    assert excluded.loc["casme2/04/EP12_01f", "kind"] == "not_in_megc2019"
    assert excluded.loc["casme2/05/EP09_05f", "kind"] == "not_in_megc2019"
    assert len(megc.excluded) == (255 - 145) + (159 - 133)
    assert summarize(megc).excluded == {"not_in_megc2019": 136}


def test_megc2019_same_rows_with_20190701(tmp_path):
    loaded = load_dataset("megc2019", megc_root(tmp_path, "20190701"))
    assert len(loaded.table) == 442
    assert any("20190701" in note for note in loaded.notes)
