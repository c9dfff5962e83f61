"""Clearer data messages: why no sample is left, and blank subject cells named by row and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hlora_mer.config import ExperimentConfig, from_dict
from hlora_mer.errors import DatasetError

# -- when no sample is left ---------------------------------------------------------------------------------


def _casme2_root(root: Path, rows: list[tuple[str | None, str, str]]) -> Path:
    """A CASME II root with only a coding file: (subject, filename, emotion) rows, no frames."""
    from openpyxl import Workbook

    from hlora_mer.synthme.generate import ANNOTATION_FILE, HEADER

    root.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    sheet = book.active
    sheet.append(list(HEADER))
    for i, (subject, clip, emotion) in enumerate(rows):
        sheet.append([subject, clip, None, 10 + i, 12 + i, 20 + i, None, "4", emotion, "I"])
    book.save(root / ANNOTATION_FILE)
    return root


def _experiment(root: Path, **data) -> ExperimentConfig:
    return from_dict(ExperimentConfig, {"data": {"datasets": ["casme2"], "roots": {"casme2": str(root)}, **data}})


def test_no_sample_left_by_the_loader_says_why(tmp_path) -> None:
    from hlora_mer.training.data import load_labelled_table

    root = _casme2_root(
        tmp_path / "c2", [("01", "EP01", "happiness"), ("02", "EP02", "disgust"), ("03", "EP03", "others")]
    )
    cfg = _experiment(root, options={"casme2": {"require_frames": True}})
    with pytest.raises(DatasetError) as err:
        load_labelled_table(cfg)
    message = str(err.value)
    assert "label scheme casme2_5cls keeps no sample of ['casme2']: the loader kept 0 of 3 annotation rows" in message
    assert "3 no_frames, e.g. row 2 of CASME2-coding-20190701.xlsx: frames not found" in message
    assert f"hlora-mer data check casme2 {root}" in message


def test_no_sample_left_by_the_scheme_lists_the_labels_found(tmp_path) -> None:
    from hlora_mer.training.data import load_labelled_table

    root = _casme2_root(tmp_path / "c2", [("01", "EP01", "fear"), ("02", "EP02", "sadness"), ("03", "EP03", "fear")])
    with pytest.raises(DatasetError) as err:
        load_labelled_table(_experiment(root))
    message = str(err.value)
    assert "keeps no sample of ['casme2']: the scheme leaves out all 3 samples the loader kept" in message
    assert "3 dropped_label, e.g. emotion 'fear' is not used by casme2_5cls" in message
    assert "emotion values found: {'fear': 2, 'sadness': 1}" in message and "data.label_scheme" in message


# -- blank subject cells --------------------------------------------------------------------------------------


def test_blank_subject_is_an_exclusion_naming_the_row_and_file(tmp_path) -> None:
    from hlora_mer.data import load_dataset

    root = _casme2_root(
        tmp_path / "c2",
        [("01", "EP01", "happiness"), (None, "EP02", "disgust"), ("02", "EP03", "others"), ("02", "", "others")],
    )
    loaded = load_dataset("casme2", root)
    assert sorted(loaded.table["subject"].unique()) == ["casme2/01", "casme2/02"]
    reasons = dict(zip(loaded.excluded["clip"].fillna(""), loaded.excluded["reason"], strict=True))
    assert reasons["EP02"] == "row 3 of CASME2-coding-20190701.xlsx: subject is blank"
    assert reasons[""] == "row 5 of CASME2-coding-20190701.xlsx: clip name is blank"
    assert set(loaded.excluded["kind"]) == {"missing_key"}


def test_blank_subject_in_the_megc2019_ground_truth_names_the_line(tmp_path) -> None:
    from hlora_mer.data.datasets.megc2019 import read_megc_csv

    path = tmp_path / "combined_3class_gt.csv"
    path.write_text("casme2,sub01,EP01_01,0\ncasme2,,EP02_01,1\n")
    with pytest.raises(DatasetError, match=r"combined_3class_gt\.csv line 2: subject is blank"):
        read_megc_csv(path)
