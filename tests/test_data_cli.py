"""``hlora-mer data summary|check|list`` through ``hlora_mer.cli.main``."""

from __future__ import annotations

import pytest

from data_fixtures import casme2_root, megc_root, samm_root, write_frames
from hlora_mer.cli import main


@pytest.fixture(scope="module")
def casme2_tree(tmp_path_factory):
    return casme2_root(tmp_path_factory.mktemp("cli"))


def test_summary_prints_counts_version_and_md5(casme2_tree, capsys):
    assert main(["data", "summary", "casme2", str(casme2_tree), "--labels", "casme2_5cls"]) == 0
    out = capsys.readouterr().out
    assert "version      20190701" in out
    assert "md5          967bf9f284b7f8c363c939cbded62398" in out
    assert "samples      249\n" in out
    for line in (
        "happiness        32",
        "disgust          63",
        "repression       27",
        "surprise         28",
        "others           99",
        "per subject (26 subjects)",
        "casme2/26        16",
    ):
        assert line in out
    assert "scheme: dropped_label" in out and "excluded     6" in out


def test_summary_samm_3cls(tmp_path, capsys):
    assert main(["data", "summary", "samm", str(samm_root(tmp_path, frames=None)), "--labels", "samm_3cls"]) == 0
    out = capsys.readouterr().out
    assert "samples      133 (133 without frames on disk)" in out
    assert "negative         92" in out and "per subject (28 subjects)" in out


def test_summary_megc2019_composite(tmp_path, capsys):
    assert main(["data", "summary", "megc2019", str(megc_root(tmp_path)), "--labels", "megc2019_3cls"]) == 0
    out = capsys.readouterr().out
    assert "samples      442" in out and "per subject (68 subjects)" in out
    assert "per dataset  smic 164, casme2 145, samm 133" in out
    assert "negative         250\n  positive         109\n  surprise         83" in out
    assert "not_in_megc2019          136" in out


def test_check_reports_problems_and_exit_code(casme2_tree, capsys):
    # The fixture writes only onset/apex/offset frames: every clip has a gap, an error.
    assert main(["data", "check", "casme2", str(casme2_tree)]) == 1
    out = capsys.readouterr().out
    assert "255 samples checked, 0 excluded; 255 samples with errors" in out
    assert "  error    frame_gap                255" in out
    assert "  warning  no_apex                  1" in out
    assert "no_apex                casme2/04/EP12_01f" not in out  # warnings listed only on request

    (casme2_tree / "CASME2_RAW_selected" / "sub01" / "EP02_01f" / "img46.jpg").write_bytes(b"broken")
    assert main(["data", "check", "casme2", str(casme2_tree), "--warnings"]) == 1
    out = capsys.readouterr().out
    assert "unreadable_image       casme2/01/EP02_01f: cannot read" in out
    assert "no_apex                casme2/04/EP12_01f" in out


def test_check_clean_tree_exits_0(tmp_path, capsys):
    write_frames(tmp_path / "anger" / "1_a", [f"{n}.jpg" for n in range(1, 9)])
    assert main(["data", "check", "folder_tree", str(tmp_path)]) == 0
    assert "1 samples checked, 0 excluded; 0 samples with errors" in capsys.readouterr().out


def test_check_counts_short_clips(tmp_path, capsys):
    write_frames(tmp_path / "anger" / "1_a", ["1.jpg", "2.jpg", "3.jpg"])
    assert main(["data", "check", "folder_tree", str(tmp_path), "--num-frames", "4", "--warnings"]) == 0
    out = capsys.readouterr().out
    assert "short_clip             folder_tree/1/1_a: 3 frames, fewer than T=4" in out


def test_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "casme2       CASME II versions 20190701, 20140508, updated (default 20190701)" in out
    assert "megc2019_3cls" in out and "smic_vis" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "summary", "casme2", "{missing}"], "Expected layout of a CASME II root"),
        (["data", "summary", "casme2", "{empty}"], "no 20190701 annotation file"),
        (["data", "summary", "casme2", "{tree}", "--labels", "nope"], "unknown label scheme 'nope'"),
        (["data", "summary", "nodataset", "{empty}"], "unknown dataset 'nodataset'"),
        (["data", "summary", "casme2", "{tree}", "-o", "colour"], "is not KEY=VALUE"),
        (["data", "summary", "casme2", "{tree}", "-o", "colour=1"], "unknown option(s) ['colour']"),
        (["data", "summary", "casme2", "{tree}", "--version", "2020"], "unknown annotation version '2020'"),
        (["data", "summary", "samm", "{tree}", "--labels", "casme2_5cls"], "no v2 annotation file"),
        (["data", "check", "casme2", "{tree}", "--num-frames", "0"], "--num-frames must be at least 1"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(argv, message, casme2_tree, tmp_path, capsys):
    paths = {"{missing}": str(tmp_path / "missing"), "{empty}": str(tmp_path), "{tree}": str(casme2_tree)}
    assert main([paths.get(a, a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("error: ") == 1
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_unknown_label_in_data_is_one_message(tmp_path, capsys):
    write_frames(tmp_path / "hapiness" / "1_a", ["1.jpg"])
    assert main(["data", "summary", "folder_tree", str(tmp_path), "--labels", "casme2_5cls"]) == 2
    err = capsys.readouterr().err
    assert "does not cover dataset 'folder_tree'" in err
