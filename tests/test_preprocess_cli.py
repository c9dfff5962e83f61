"""``hlora-mer preprocess`` end to end, with a stand-in dataset loader (the real loaders are tested with
the dataset issue) and the real dlib detector on astronaut clips."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import hlora_mer.data
from align_fixtures import make_clip, make_table, similarity, table_row, write_frames
from hlora_mer.cli import main


@pytest.fixture
def fake_dataset(tmp_path, monkeypatch):
    """A two-clip 'casme2' whose loader returns a canonical table; one clip has no face."""
    root = tmp_path / "CASME2"
    face = write_frames(root / "sub01" / "EP01_01", make_clip(similarity(10.0, 0.9, 0, 0), 3), first_number=46)
    grey = write_frames(root / "sub01" / "EP02_01", [np.full((480, 640, 3), 128, np.uint8)] * 2, first_number=10)
    table = make_table([table_row("casme2/01/EP01_01", face), table_row("casme2/01/EP02_01", grey)])
    calls = []

    def load_dataset(name, root_, *, annotation=None, version=None, **options):
        calls.append((name, str(root_), annotation, version))
        return SimpleNamespace(table=table, excluded=pd.DataFrame())

    monkeypatch.setattr(hlora_mer.data, "load_dataset", load_dataset, raising=False)
    return root, calls


def test_preprocess_writes_cache_and_failure_report(fake_dataset, tmp_path, capsys) -> None:
    pytest.importorskip("dlib")
    root, calls = fake_dataset
    out = tmp_path / "aligned"
    argv = [
        "--quiet",
        "preprocess",
        "--dataset",
        "casme2",
        "--root",
        str(root),
        "--out",
        str(out),
        "--frames",
        "3",
        "--workers",
        "1",
        "--version",
        "20190701",
    ]
    assert main(argv) == 0
    assert calls == [("casme2", str(root), None, "20190701")]
    text = capsys.readouterr().out
    assert "1 done, 0 up to date, 1 failed" in text
    assert "failed casme2/01/EP02_01: no face found" in text
    folder = next(out.iterdir())
    assert folder.name.startswith("t3_s224_dlib_uniform_")
    assert f"manifest:       {folder / 'manifest.json'}" in text
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["clips"]) == {"casme2/01/EP01_01"}
    assert np.load(folder / manifest["clips"]["casme2/01/EP01_01"]["file"]).shape == (3, 224, 224, 3)
    with (folder / "failures.csv").open() as f:
        assert [r["sample_id"] for r in csv.DictReader(f)] == ["casme2/01/EP02_01"]

    # Idempotent: the good clip is up to date, the failed one is tried again.
    assert main(argv) == 0
    assert "0 done, 1 up to date, 1 failed" in capsys.readouterr().out
    # Another margin: another folder, everything redone.
    assert main([*argv, "--margin", "0.7"]) == 0
    assert "1 done, 0 up to date, 1 failed" in capsys.readouterr().out
    assert len(list(out.iterdir())) == 2


def test_invalid_options_are_one_line_errors(fake_dataset, tmp_path, capsys) -> None:
    root, _ = fake_dataset
    base = ["preprocess", "--dataset", "casme2", "--root", str(root), "--out", str(tmp_path / "o")]
    assert main([*base, "--frames", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: num_frames must be >= 1, got 0"
    with pytest.raises(SystemExit):
        main([*base, "--detector", "opencv"])
    assert "invalid choice: 'opencv'" in capsys.readouterr().err


def test_all_failed_returns_1(tmp_path, monkeypatch, capsys) -> None:
    grey = write_frames(tmp_path / "g", [np.full((60, 80, 3), 128, np.uint8)] * 2)
    table = make_table([table_row("x/1/a", grey, offset=5, onset=4)])  # no frame in 4..5
    monkeypatch.setattr(hlora_mer.data, "load_dataset", lambda *a, **k: SimpleNamespace(table=table), raising=False)
    argv = [
        "-q",
        "preprocess",
        "--dataset",
        "x",
        "--root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--detector",
        "none",
    ]
    assert main(argv) == 1
    assert "failed x/1/a: no frame between onset 4 and offset 5" in capsys.readouterr().out


def test_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["preprocess", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--dataset",
        "--root",
        "--annotation",
        "--version",
        "--out",
        "--frames",
        "--size",
        "--detector",
        "--margin",
        "--sampling",
        "--workers",
    ):
        assert option in text


def test_an_output_under_a_file_is_one_line_and_creates_nothing(fake_dataset, tmp_path, capsys) -> None:
    root, _ = fake_dataset
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["preprocess", "--dataset", "casme2", "--root", str(root), "--out", str(blocker / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(blocker) in err and "--out" in err
    assert blocker.read_text() == "x"
