"""CAS(ME)^3 Part C (``casme3_partc``) and Part A + C (``casme3_ac``) on annotation files written here."""

from __future__ import annotations

import pandas as pd
import pytest

from data_fixtures import write_frames
from hlora_mer.data import apply_label_scheme, load_dataset
from hlora_mer.data.annotations.diff import infer_dataset, load_version
from hlora_mer.data.datasets.casme3 import partc_action_units
from hlora_mer.errors import DatasetError

# sub, count, onset, offset, au, emotion: the owners' Part C columns (no apex).
PARTC = [
    (1, 1, 100, 130, "4,7", "negative"),
    (1, 2, 200, 215, "12", "positive"),
    (2, 1, 50, 70, "1\uff0c2", "surprise"),  # the Chinese comma
    (12, 1, 10, 30, "4, 7, L10", "others"),
    (12, 2, 90, 80, "4", "negative"),  # offset before onset
]
# Subject, Filename, Onset, Apex, Offset, AU, Objective class, emotion: Part A v2, every cell text.
PARTA = [
    ("spNO.1", "b", "166", "175", "179", "4", "III", "disgust"),
    ("spNO.1", "b", "300", "305", "320", "R12", "I", "happy"),
    ("spNO.2", "a", "10", "12", "20", "1+2", "VII", "surprise"),
    ("spNO.2", "c", "40", "44", "50", "", "VII", "Others"),
]


def write_partc(path, rows=PARTC):
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["sub", "count", "onset", "offset", "au", "emotion"])
    with pd.ExcelWriter(path) as writer:
        frame.to_excel(writer, sheet_name="mockCrimeME", index=False)
    return path


def write_parta(path, rows=PARTA):
    columns = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame(rows, columns=columns).to_excel(writer, sheet_name="label", index=False)
    return path


@pytest.fixture
def partc_root(tmp_path):
    root = tmp_path / "casme3"
    write_partc(root / "annotation" / "partC" / "CAS(ME)3_part_C_ME.xlsx")
    write_frames(root / "part_C" / "1" / "a" / "color", (f"{n}.jpg" for n in range(95, 220)))
    write_frames(root / "part_C" / "02" / "a" / "color", (f"{n}.jpg" for n in range(50, 71)))
    return root


def test_partc_reads_the_owners_columns(partc_root):
    loaded = load_dataset("casme3_partc", partc_root)
    table = loaded.table.set_index("sample_id")
    assert list(table.index) == ["casme3_partc/1/1", "casme3_partc/1/2", "casme3_partc/2/1", "casme3_partc/12/1"]
    assert list(table["subject"]) == ["casme3_partc/1", "casme3_partc/1", "casme3_partc/2", "casme3_partc/12"]
    assert list(table["emotion"]) == ["negative", "positive", "surprise", "others"]
    assert table["apex"].isna().all()  # no apex in the file, and none made up
    assert (table.loc["casme3_partc/1/1", "onset"], table.loc["casme3_partc/1/1", "offset"]) == (100, 130)
    assert list(table["action_units"]) == ["4+7", "12", "1+2", "4+7+L10"]
    assert list(loaded.excluded["kind"]) == ["invalid_interval"]
    assert loaded.excluded["sample_id"].iloc[0] == "casme3_partc/12/2"
    assert (loaded.version, table["fps"].iloc[0]) == ("v1", 30.0)


def test_partc_frames_are_the_interval_of_the_subject_recording(partc_root):
    table = load_dataset("casme3_partc", partc_root).table.set_index("sample_id")
    assert table.loc["casme3_partc/1/1", "frame_numbers"] == tuple(range(100, 131))
    assert table.loc["casme3_partc/1/2", "frame_numbers"] == tuple(range(200, 216))
    assert table.loc["casme3_partc/2/1", "frame_numbers"] == tuple(range(50, 71))  # folder "02"
    assert table.loc["casme3_partc/12/1", "frame_paths"] == ()  # no folder: kept, frameless


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("4,7", "4+7"), ("1\uff0c2", "1+2"), ("4, 7 ,L10", "4+7+L10"), ("R12+L14", "R12+L14"), ("12", "12")],
)
def test_partc_action_units_use_the_plus_form(written, canonical):
    assert partc_action_units(written) == canonical


def test_partc_labels_map_with_the_casme3_4_and_3_class_schemes(partc_root):
    table = load_dataset("casme3_partc", partc_root).table
    labelled, _ = apply_label_scheme(table, "casme3_4cls")
    assert list(labelled["label"]) == ["negative", "positive", "surprise", "others"]
    three, left_out = apply_label_scheme(table, "casme3_3cls")
    assert list(three["label"]) == ["negative", "positive", "surprise"] and len(left_out) == 1
    with pytest.raises(DatasetError, match=r"does not cover dataset 'casme3_partc'.*\['casme3_3cls', 'casme3_4cls'"):
        apply_label_scheme(table, "casme3_7cls")


def test_partc_wrong_sheet_is_named(tmp_path):
    path = tmp_path / "CAS(ME)3_part_C_ME.xlsx"
    pd.DataFrame(PARTC).to_excel(path, sheet_name="Sheet1", index=False)
    with pytest.raises(DatasetError, match=r"has no sheet 'mockCrimeME'; its sheets are \['Sheet1'\]"):
        load_dataset("casme3_partc", tmp_path)


def test_parts_a_and_c_combined(partc_root):
    write_parta(partc_root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx")
    loaded = load_dataset("casme3_ac", partc_root)
    table = loaded.table
    assert len(table) == len(PARTA) + 4
    assert table["dataset"].value_counts().to_dict() == {"casme3": 4, "casme3_partc": 4}
    assert table["subject"].nunique() == 2 + 3  # Part A's spNO.x and Part C's numbers stay apart
    assert set(loaded.parts) == {"casme3", "casme3_partc"} and len(loaded.excluded) == 1
    labelled, left_out = apply_label_scheme(table, "casme3_4cls")
    assert labelled["label"].value_counts().to_dict() == {"negative": 2, "positive": 2, "surprise": 2, "others": 2}
    assert left_out.empty


def test_parts_a_and_c_needs_part_c(tmp_path):
    write_parta(tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx")
    with pytest.raises(DatasetError, match=r"(?s)casme3_ac: no Part C annotation in .*-o part_c=PATH"):
        load_dataset("casme3_ac", tmp_path)
    partc = write_partc(tmp_path / "elsewhere" / "partc.xlsx")
    assert len(load_dataset("casme3_ac", tmp_path, part_c=str(partc)).table) == len(PARTA) + 4


def test_a_part_a_file_is_diffed_as_casme3_not_as_the_composite(partc_root):
    path = write_parta(partc_root / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx")
    assert infer_dataset(path) == "casme3"
    assert infer_dataset(partc_root) is None  # a root with both parts: casme3 or casme3_partc
    assert load_version(path).dataset == "casme3"


def test_partc_question_mark_after_an_au_is_that_au_uncertain(tmp_path):
    # Part C 10/1 is written '13?': AU13, uncertain (a '?' after an AU), not an unreadable code.
    from hlora_mer.data import check_dataset
    from hlora_mer.data.annotations.action_units import (
        AU,
        RULE_QUESTION_SUFFIX,
        au_report,
        au_table,
        objective_class_from_aus,
    )

    rows = [(10, 1, 10, 20, "13?", "negative"), (10, 2, 30, 40, "6, 12?", "positive"), (11, 1, 5, 9, "4", "others")]
    write_partc(tmp_path / "CAS(ME)3_part_C_ME.xlsx", rows)
    table = load_dataset("casme3_partc", tmp_path).table
    problems = check_dataset(load_dataset("casme3_partc", tmp_path))
    assert [p for p in problems if p.kind == "unparsed_action_units"] == []
    report = au_report(table)
    assert report.unparsed == ()
    assert [(sid, r.rule) for sid, r in report.rules] == [
        ("casme3_partc/10/1", RULE_QUESTION_SUFFIX.name),
        ("casme3_partc/10/2", RULE_QUESTION_SUFFIX.name),
    ]
    onehot = au_table(table)
    assert onehot.loc["casme3_partc/10/1"].to_dict() == {"AU4": 0, "AU6": 0, "AU12": 0, "AU13": 1}
    classes = {
        sid: objective_class_from_aus(parse(code))
        for sid, code in zip(table["sample_id"], table["action_units"], strict=True)
    }
    assert classes == {"casme3_partc/10/1": "VII", "casme3_partc/10/2": "I", "casme3_partc/11/1": "III"}
    assert parse(table["action_units"].iloc[0]) == {AU(13, uncertain=True)}


def parse(code):
    from hlora_mer.data.annotations.action_units import parse_action_units

    return parse_action_units(code).aus


def test_real_partc_every_au_cell_parses(tmp_path, annotations_dir):
    import shutil

    from hlora_mer.data.annotations.action_units import AU, au_report, objective_class_from_aus

    shutil.copyfile(annotations_dir / "CAS(ME)3_part_C_ME.xlsx", tmp_path / "CAS(ME)3_part_C_ME.xlsx")
    table = load_dataset("casme3_partc", tmp_path).table.set_index("sample_id", drop=False)
    assert len(table) == 165
    assert au_report(table).unparsed == ()
    assert table.loc["casme3_partc/10/1", "action_units"] == "13?"
    assert parse("13?") == {AU(13, uncertain=True)}
    assert objective_class_from_aus(parse(table.loc["casme3_partc/10/1", "action_units"])) == "VII"
