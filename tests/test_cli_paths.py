"""Output and cache folders are checked before any work: one line on stderr, exit code 2, nothing created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hlora_mer.cli import main
from hlora_mer.errors import UserError
from hlora_mer.files import check_writable_dir, check_writable_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "model.backbone.name=test_vit_reg",
    "model.backbone.pretrained=false",
    "model.image_size=28",
    "train.steps=2",
    "train.device=cpu",
    "data.detector=none",
]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a folder\n")
    return path


def _deny_writes_under(monkeypatch, folder: Path) -> None:
    """``os.access`` answers 'no write' for ``folder`` (tests run as root, where chmod blocks nothing)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).absolute() == folder.absolute() and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


# -- the helper ---------------------------------------------------------------------------------------------


def test_check_writable_dir_accepts_a_new_folder_without_creating_it(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "run"
    assert check_writable_dir(target, "run folder") == target
    assert _tree(tmp_path) == []
    assert check_writable_dir(tmp_path, "run folder") == tmp_path


def test_check_writable_dir_under_a_file_names_the_file(tmp_path) -> None:
    blocker = _a_file(tmp_path)
    with pytest.raises(UserError) as err:
        check_writable_dir(blocker / "run" / "x", "run folder", "choose another folder with -o")
    assert str(err.value) == (
        f"cannot write the run folder {blocker / 'run' / 'x'}: {blocker} is a file, "
        "not a folder; choose another folder with -o"
    )
    with pytest.raises(UserError, match=r"notes\.txt: it is a file, not a folder"):
        check_writable_dir(blocker, "run folder")
    assert _tree(tmp_path) == ["notes.txt"]


def test_check_writable_dir_reports_a_folder_without_write_permission(tmp_path, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    _deny_writes_under(monkeypatch, locked)
    with pytest.raises(UserError) as err:
        check_writable_dir(locked / "run", "run folder", "choose another folder with -o")
    assert str(err.value) == (
        f"cannot write the run folder {locked / 'run'}: {locked} is not writable "
        "(Permission denied); choose another folder with -o"
    )
    assert _tree(locked) == []


def test_check_writable_file(tmp_path, monkeypatch) -> None:
    assert check_writable_file(tmp_path / "new" / "table.md", "report file") == tmp_path / "new" / "table.md"
    existing = _a_file(tmp_path)
    assert check_writable_file(existing, "report file") == existing  # replaced atomically
    with pytest.raises(UserError, match=r"report file .*: it is a folder, not a file; choose"):
        check_writable_file(tmp_path, "report file", "choose another file with -o")
    with pytest.raises(UserError, match=r"notes\.txt is a file, not a folder"):
        check_writable_file(existing / "table.md", "report file")
    _deny_writes_under(monkeypatch, tmp_path)
    with pytest.raises(UserError, match="is not writable"):
        check_writable_file(existing, "report file")


# -- the commands -------------------------------------------------------------------------------------------


def _train(tmp_path: Path, *args: str) -> int:
    # The data root does not exist: a folder check that came after reading the data would fail differently.
    return main(
        ["train", "-c", str(CONFIGS / "debug_tiny.yaml"), f"data.roots.casme2={tmp_path / 'no-data'}", *TINY, *args]
    )


def test_train_run_folder_under_a_file(tmp_path, capsys) -> None:
    blocker = _a_file(tmp_path)
    assert _train(tmp_path, "-o", str(blocker / "run")) == 2
    line = _one_line_error(capsys)
    assert f"cannot write the run folder {blocker / 'run'}" in line and "is a file, not a folder" in line
    assert _tree(tmp_path) == ["notes.txt"]


def test_train_output_that_is_an_existing_file(tmp_path, capsys) -> None:
    blocker = _a_file(tmp_path)
    assert _train(tmp_path, "-o", str(blocker)) == 2
    assert f"run folder {blocker}: it is a file, not a folder; choose another folder with -o" in _one_line_error(capsys)
    assert _tree(tmp_path) == ["notes.txt"]


def test_train_cache_dir_that_is_a_file(tmp_path, capsys) -> None:
    blocker = _a_file(tmp_path)
    assert _train(tmp_path, "-o", str(tmp_path / "run"), f"data.cache_dir={blocker}") == 2
    line = _one_line_error(capsys)
    assert f"cannot write the cache folder (data.cache_dir) {blocker}: it is a file" in line
    assert "data.cache_dir=FOLDER" in line
    assert _tree(tmp_path) == ["notes.txt"]


def test_train_unwritable_run_parent(tmp_path, capsys, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    _deny_writes_under(monkeypatch, locked)
    assert _train(tmp_path, "-o", str(locked / "run")) == 2
    assert f"{locked} is not writable (Permission denied)" in _one_line_error(capsys)
    assert _tree(tmp_path) == ["locked"]


def test_train_unwritable_feature_cache(tmp_path, capsys) -> None:
    blocker = _a_file(tmp_path)
    assert _train(tmp_path, "-o", str(tmp_path / "run"), f"train.feature_cache_dir={blocker / 'f'}") == 2
    assert "feature cache folder (train.feature_cache_dir)" in _one_line_error(capsys)
    assert _tree(tmp_path) == ["notes.txt"]


def test_train_bad_image_size_fails_before_any_work(tmp_path, capsys) -> None:
    assert _train(tmp_path, "-o", str(tmp_path / "run"), "model.image_size=15") == 2
    assert "model.image_size=15 is not a multiple of the patch size 14" in _one_line_error(capsys)
    assert _tree(tmp_path) == []


def test_report_output_checked_before_reading_and_written_atomically(tmp_path, capsys, monkeypatch) -> None:
    import hlora_mer.evaluation.report as report
    import hlora_mer.files as files

    blocker = _a_file(tmp_path)
    read = []
    monkeypatch.setattr(report, "compare_runs", lambda runs, metrics=None: read.append(runs) or "| run |\n")
    assert main(["report", str(tmp_path / "run"), "-o", str(blocker / "table.md")]) == 2
    assert "cannot write the report file" in _one_line_error(capsys) and read == []
    assert main(["report", str(tmp_path / "run"), "-o", str(tmp_path)]) == 2
    assert "it is a folder, not a file; choose another file with -o" in _one_line_error(capsys)

    written = []
    real = files.atomic_write_text
    monkeypatch.setattr(files, "atomic_write_text", lambda path, text: written.append(path) or real(path, text))
    assert main(["report", str(tmp_path / "run"), "-o", str(tmp_path / "out" / "table.md")]) == 0
    assert (tmp_path / "out" / "table.md").read_text() == "| run |\n" == capsys.readouterr().out
    assert written == [str(tmp_path / "out" / "table.md")]


def test_synth_output_under_a_file(tmp_path, capsys) -> None:
    blocker = _a_file(tmp_path)
    assert main(["synth", str(blocker / "synth"), "--subjects", "2"]) == 2
    assert f"cannot write the SynthME folder {blocker / 'synth'}: {blocker} is a file" in _one_line_error(capsys)
    assert _tree(tmp_path) == ["notes.txt"]


def test_demo_workdir_under_a_file_generates_nothing(tmp_path, capsys) -> None:
    blocker = _a_file(tmp_path)
    assert main(["demo", "--workdir", str(blocker / "demo"), "--subjects", "2"]) == 2
    line = _one_line_error(capsys)
    assert f"cannot write the demo work folder {blocker / 'demo'}" in line and "--workdir" in line
    assert _tree(tmp_path) == ["notes.txt"]


def test_demo_settings_checked_before_synthme(tmp_path, capsys) -> None:
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--subjects", "2", "model.image_size=15"]) == 2
    assert "model.image_size=15" in _one_line_error(capsys)
    assert _tree(tmp_path) == []
