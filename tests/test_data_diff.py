"""``hlora-mer data diff`` and ``hlora_mer.data.annotations.diff`` on two CASME II-format coding files written here,
and on the real CASME II 20140508 / 20190701 files where ``HLORA_MER_ANNOTATIONS`` is set."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from data_fixtures import CASME2_FILES, annotation
from hlora_mer.cli import main
from hlora_mer.data.annotations.diff import count_changes, diff_tables, load_pair, load_version, one_sided_fields
from hlora_mer.errors import DatasetError

# Subject, Filename, Onset, Apex, Offset, Action Units, Estimated Emotion, Objective Classes
OLD = [
    ("01", "EP02_01f", 46, 59, 86, "12", "happiness", 1),
    ("01", "EP03_02", 131, 139, 161, "L10", "others", 7),
    ("02", "EP01_11f", 21, 30, 61, "?", "sadness", 3),
    ("02", "EP02_04f", 10, "/", 40, "R12 + R15", "disgust", 3),
    ("03", "EP08_1", 40, 50, 90, "4", "repression", 2),
    ("04", "EP12_01f", 5, 20, 33, "4+7", "disgust", 3),
]
NEW = [
    ("01", "EP02_01f", 46, 59, 86, "12", "happiness", 1),  # unchanged
    ("01", "EP03_02", 131, 139, 161, "L10", "others", 6),  # objective class 7 -> 6
    ("02", "EP01_11f", 21, 30, 61, "16+24", "surprise", 3),  # AU ? -> 16+24, sadness -> surprise
    ("02", "EP02_04f", 10, 25, 40, "R12+R15", "disgust", 3),  # apex / -> 25; AU only loses its spaces
    ("03", "EP08_1", 41, 50, 91, "4", "repression", 2),  # onset and offset
    ("05", "EP09_05f", 100, 110, 140, "1+2", "surprise", 5),  # added; 04/EP12_01f removed
]


def write_coding(path, rows, *, objective: bool = True):
    """A CASME II coding workbook: the owner's columns, two of them with a blank header."""
    columns = ["Subject", "Filename", "Unnamed: 2", "OnsetFrame", "ApexFrame", "OffsetFrame", "Unnamed: 6"]
    columns += ["Action Units", "Estimated Emotion"] + (["Objective Classes"] if objective else [])
    records = []
    for subject, clip, onset, apex, offset, aus, emotion, objective_class in rows:
        record = [subject, clip, None, onset, apex, offset, None, aus, emotion]
        records.append(record + ([objective_class] if objective else []))
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(records, columns=columns).rename(columns={"Unnamed: 2": " ", "Unnamed: 6": "  "})
    frame.to_excel(path, index=False)
    return path


@pytest.fixture
def versions(tmp_path):
    old = write_coding(tmp_path / "old" / "CASME2-coding-20140508.xlsx", OLD)
    new = write_coding(tmp_path / "new" / "CASME2-coding-20190701.xlsx", NEW)
    return old, new


def _rows(diff):
    return {tuple(r) for r in diff.itertuples(index=False)}


def test_diff_tables_lists_every_change(versions):
    a, b = load_pair(*versions)
    assert (a.dataset, a.version, b.version) == ("casme2", "20140508", "20190701")
    diff = diff_tables(a.loaded.table, b.loaded.table)
    assert _rows(diff) == {
        ("casme2/04/EP12_01f", "sample", "present", "absent"),
        ("casme2/05/EP09_05f", "sample", "absent", "present"),
        ("casme2/02/EP01_11f", "emotion", "sadness", "surprise"),
        ("casme2/02/EP01_11f", "action_units", "?", "16+24"),
        ("casme2/02/EP02_04f", "apex", None, "25"),
        ("casme2/03/EP08_1", "onset", "40", "41"),
        ("casme2/03/EP08_1", "offset", "90", "91"),
        ("casme2/01/EP03_02", "objective_class", "VII", "VI"),
    }
    assert len(diff) == 8  # no row twice
    assert list(diff["field"][:2]) == ["sample", "sample"]  # removed and added first
    assert count_changes(diff) == {
        "added": 1,
        "removed": 1,
        "emotion": 1,
        "onset": 1,
        "apex": 1,
        "offset": 1,
        "action_units": 1,
        "objective_class": 1,
    }


def test_identical_versions_have_no_differences(versions):
    a, b = load_pair(versions[0], versions[0])
    assert diff_tables(a.loaded.table, b.loaded.table).empty


def test_a_field_only_one_version_has_is_not_compared_per_sample(tmp_path):
    old = write_coding(tmp_path / "CASME2-coding-20140508.xlsx", OLD, objective=False)
    new = write_coding(tmp_path / "CASME2-coding-20190701.xlsx", OLD)
    a, b = load_pair(old, new)
    assert one_sided_fields(a.loaded.table, b.loaded.table) == {"objective_class": "b"}
    assert diff_tables(a.loaded.table, b.loaded.table).empty
    # Asked for explicitly, the column shows up as one change per sample.
    forced = diff_tables(a.loaded.table, b.loaded.table, fields=["objective_class"])
    assert len(forced) == len(OLD) and set(forced["a"].isna()) == {True}


def test_files_are_read_on_their_own_not_with_the_objective_class_file_beside_them(tmp_path):
    new = write_coding(tmp_path / "CASME2-coding-20190701.xlsx", NEW)
    pd.DataFrame({"Subject": ["01"], "Filename": ["EP03_02"], "Objective Class": [2]}).to_excel(
        tmp_path / "CASME2-ObjectiveClasses.xlsx", index=False
    )
    from_file = load_version(new).loaded.table.set_index("sample_id")
    assert from_file.loc["casme2/01/EP03_02", "objective_class"] == "VI"  # the coding file's column
    from_root = load_version(tmp_path).loaded.table.set_index("sample_id")
    assert from_root.loc["casme2/01/EP03_02", "objective_class"] == "II"  # the root as load_dataset reads it


def test_cli_prints_the_summary_first_then_the_table_and_writes_the_csv(versions, tmp_path, capsys):
    out_csv = tmp_path / "diff.csv"
    assert main(["-q", "data", "diff", str(versions[0]), str(versions[1]), "--out", str(out_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "casme2: A casme2 20140508 (CASME2-coding-20140508.xlsx, 6 samples) -> B casme2 20190701"
    )
    assert lines[0].endswith(
        "1 added, 1 removed; changed: emotion 1, onset 1, apex 1, offset 1, action_units 1, objective_class 1"
    )
    assert lines[1].split() == ["sample_id", "field", "a", "b"]
    assert lines[2].split() == ["casme2/04/EP12_01f", "sample", "present", "absent"]
    assert ["casme2/02/EP02_04f", "apex", "-", "25"] in [line.split() for line in lines]
    with open(out_csv, newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == ["sample_id", "field", "a", "b"]
    expected = diff_tables(*(load_version(p).loaded.table for p in versions))
    assert written[1:] == [["" if v is None else v for v in row] for row in expected.itertuples(index=False)]


def test_cli_roots_and_versions(tmp_path, capsys):
    root = tmp_path / "root"
    write_coding(root / "CASME2-coding-20140508.xlsx", OLD)
    write_coding(root / "CASME2-coding-20190701.xlsx", NEW)
    assert main(["-q", "data", "diff", str(root), str(root)]) == 2
    err = capsys.readouterr().err
    assert "holds casme2 versions ['20140508', '20190701']; pass --version-a with one of them" in err
    args = ["-q", "data", "diff", str(root), str(root), "--version-a", "20140508", "--version-b", "20190701"]
    assert main(args) == 0
    assert "1 added, 1 removed" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize(
    ("make_b", "message"),
    [
        (
            lambda tmp: tmp / "missing.xlsx",
            r"B \(.*missing.xlsx\) does not exist; pass an annotation file or a dataset root",
        ),
        (
            lambda tmp: write_coding(tmp / "SAMM_Micro_FACS_Codes_v2.xlsx", NEW),
            r"compares two versions of one dataset, but A \(.*\) is casme2 and B \(.*\) is samm",
        ),
    ],
    ids=["missing", "other-dataset"],
)
def test_cli_bad_input_is_one_clear_message(versions, tmp_path, capsys, make_b, message):
    import re

    assert main(["-q", "data", "diff", str(versions[0]), str(make_b(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data diff: ") and re.search(message, err) and "Traceback" not in err


def test_unknown_file_names_need_dataset(tmp_path, capsys):
    old = write_coding(tmp_path / "coding_old.xlsx", OLD)
    new = write_coding(tmp_path / "coding_new.xlsx", NEW)
    assert main(["-q", "data", "diff", str(old), str(new)]) == 2
    assert "cannot tell the dataset of A from the file name 'coding_old.xlsx'" in capsys.readouterr().err
    assert main(["-q", "data", "diff", str(old), str(new), "--dataset", "casme2"]) == 0
    assert "1 added, 1 removed" in capsys.readouterr().out


def test_diff_tables_refuses_tables_of_different_datasets(versions):
    a = load_version(versions[0]).loaded.table
    b = a.assign(dataset="samm")
    with pytest.raises(DatasetError, match=r"A is \['casme2'\] and B is \['samm'\]"):
        diff_tables(a, b)


def test_real_casme2_20140508_against_20190701():
    a = load_version(annotation(CASME2_FILES["20140508"]))
    b = load_version(annotation(CASME2_FILES["20190701"]))
    diff = diff_tables(a.loaded.table, b.loaded.table)
    counts = count_changes(diff)
    # docs/datasets.md: same samples and frames; sadness -> surprise on three clips; AUs re-coded.
    assert counts["added"] == counts["removed"] == 0
    assert counts["onset"] == counts["apex"] == counts["offset"] == 0
    assert 0 < counts["emotion"] < 10 and set(diff[diff["field"] == "emotion"]["b"]) == {"surprise"}
    assert counts["action_units"] > 10
    assert ("casme2/05/EP05_03", "action_units", "?", "16+24") in _rows(diff)
    assert one_sided_fields(a.loaded.table, b.loaded.table) == {"objective_class": "b"}


def test_diff_does_not_warn_about_frames(versions, caplog, capsys):
    # A diff compares annotations: frames are irrelevant there, on bare files and on roots alike.
    import logging

    from hlora_mer.data import load_dataset

    with caplog.at_level(logging.WARNING):
        load_dataset("casme2", versions[0].parent, version="20140508")  # as a dataset: the warning stays
    assert any("no frames on disk" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_pair(versions[0].parent, versions[1].parent)
    assert not [r.getMessage() for r in caplog.records if "frames" in r.getMessage()]
    capsys.readouterr()
    assert main(["data", "diff", str(versions[0]), str(versions[1])]) == 0
    assert "no frames on disk" not in capsys.readouterr().err
