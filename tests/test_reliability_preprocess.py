"""Preprocessing under damage: damaged cached clips are remade (never "up to date") and refused when read,
clips with frames missing inside onset..offset are counted, and worker processes end with their parent."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import hlora_mer.data
from align_fixtures import make_table, table_row, write_frames
from hlora_mer.cli import main
from hlora_mer.errors import DatasetError
from hlora_mer.preprocess.cache import clip_relpath
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table
from hlora_mer.training.clip_dataset import AlignedClipDataset

PARAMS = PreprocessParams(num_frames=4, size=16, detector="none")
TESTS = Path(__file__).resolve().parent


def _frames(seed: int, n: int, shape=(24, 32)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def cached(tmp_path):
    """Three clips of 6 frames, preprocessed once."""
    rows = [table_row(f"toy/0{i}/c{i}", write_frames(tmp_path / "data" / f"c{i}", _frames(i, 6))) for i in range(3)]
    report = preprocess_table(make_table(rows), tmp_path / "out", PARAMS)
    assert len(report.done) == 3
    return tmp_path, rows, report


def _manifest(report) -> dict:
    return json.loads(report.manifest_path.read_text())


# --- damaged cached clips (item 6) -----------------------------------------------------------------------


def test_manifest_records_size_and_checksum_of_each_clip_file(cached) -> None:
    _, _, report = cached
    import hashlib

    for sample_id, entry in _manifest(report)["clips"].items():
        data = (report.cache_dir / clip_relpath(sample_id)).read_bytes()
        assert entry["file_size"] == len(data)
        assert entry["file_sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("damage", ["truncated", "same-size"])
def test_a_damaged_clip_is_recomputed_not_up_to_date(cached, caplog, damage: str) -> None:
    tmp_path, rows, report = cached
    path = report.cache_dir / clip_relpath("toy/01/c1")
    good = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:  # one pixel changed: the file still loads as a clip of the right shape; only the checksum tells
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="hlora_mer.preprocess.run"):
        again = preprocess_table(make_table(rows), tmp_path / "out", PARAMS)
    assert again.done == ["toy/01/c1"] and sorted(again.skipped) == ["toy/00/c0", "toy/02/c2"]
    assert list(again.recomputed) == ["toy/01/c1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "toy/01/c1" in warnings[0] and "recomputed" in warnings[0]
    assert path.read_bytes() == good
    # Now intact: up to date again.
    assert sorted(preprocess_table(make_table(rows), tmp_path / "out", PARAMS).skipped) == sorted(
        again.skipped + again.done
    )


@pytest.mark.parametrize("damage", ["truncated", "same-size", "missing"])
def test_reading_a_damaged_clip_raises_a_dataset_error_naming_the_file(cached, damage: str) -> None:
    _, rows, report = cached
    path = report.cache_dir / clip_relpath("toy/00/c0")
    good = path.read_bytes()
    dataset = AlignedClipDataset(make_table(rows), report.cache_dir)
    assert dataset[0]["clip"].shape == (4, 3, 16, 16)
    if damage == "truncated":
        path.write_bytes(good[:100])
    elif damage == "same-size":
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    else:
        path.unlink()
    with pytest.raises(DatasetError) as info:
        dataset[0]
    message = str(info.value)
    assert str(path) in message and "toy/00/c0" in message and "hlora-mer preprocess" in message


def test_clips_of_an_older_manifest_are_checked_once_and_get_their_checksum(cached, caplog) -> None:
    tmp_path, rows, report = cached
    manifest = _manifest(report)
    for entry in manifest["clips"].values():
        del entry["file_size"], entry["file_sha256"]
    report.manifest_path.write_text(json.dumps(manifest))
    broken = report.cache_dir / clip_relpath("toy/02/c2")
    broken.write_bytes(broken.read_bytes()[:-50])
    with caplog.at_level(logging.INFO, logger="hlora_mer.preprocess.run"):
        again = preprocess_table(make_table(rows), tmp_path / "out", PARAMS)
    assert again.done == ["toy/02/c2"] and sorted(again.skipped) == ["toy/00/c0", "toy/01/c1"]
    assert "toy/02/c2" in again.recomputed
    assert any("2 clip(s) of an older manifest had no checksum" in r.getMessage() for r in caplog.records)
    assert all("file_sha256" in e for e in _manifest(again)["clips"].values())


# --- clips with frames missing inside onset..offset (item 12) ----------------------------------------------


@pytest.fixture
def gappy_table(tmp_path):
    full = write_frames(tmp_path / "data" / "full", _frames(1, 6))
    # Frames 1, 2 and 10 of onset..offset 1..10: only 3 distinct frames for t = 4 in a 10-frame span.
    gappy = write_frames(tmp_path / "data" / "gappy", _frames(2, 2)) + write_frames(
        tmp_path / "data" / "gappy", _frames(3, 1), first_number=10
    )
    brief = write_frames(tmp_path / "data" / "brief", _frames(4, 3))  # a 3-frame clip: repeats are expected
    rows = [table_row("toy/01/full", full), table_row("toy/01/gappy", gappy), table_row("toy/01/brief", brief)]
    return make_table(rows)


def test_clips_with_missing_frames_in_their_span_are_counted_and_warned_once(gappy_table, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="hlora_mer.preprocess.run"):
        report = preprocess_table(gappy_table, tmp_path / "out", PARAMS)
    assert len(report.done) == 3
    assert report.short == ["toy/01/gappy"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("1 clip(s)") and "toy/01/gappy" in warnings[0]
    clips = _manifest(report)["clips"]
    assert clips["toy/01/gappy"]["distinct_frames"] == 3 and clips["toy/01/full"]["distinct_frames"] == 4
    assert clips["toy/01/brief"]["distinct_frames"] == 3
    # Still counted when the clip is up to date.
    assert preprocess_table(gappy_table, tmp_path / "out", PARAMS).short == ["toy/01/gappy"]


def test_the_cli_summary_shows_short_clips(gappy_table, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        hlora_mer.data,
        "load_dataset",
        lambda *a, **k: SimpleNamespace(table=gappy_table, excluded=pd.DataFrame()),
        raising=False,
    )
    argv = [
        "--quiet",
        "preprocess",
        "--dataset",
        "casme2",
        "--root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--frames",
        "4",
        "--size",
        "16",
        "--detector",
        "none",
        "--workers",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 short clip(s): fewer than 4 distinct frames" in out and "toy/01/gappy" in out


# --- worker processes end with their parent (item 8) --------------------------------------------------------

_SCRIPT = """
import json, sys, time
sys.path[:0] = {paths!r}
from align_fixtures import FixedDetector, make_table
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table


class SlowDetector(FixedDetector):
    def detect(self, image, *, upsample=0):
        time.sleep({delay})
        return super().detect(image, upsample=upsample)


if __name__ == "__main__":
    rows = json.load(open({rows!r}))
    params = PreprocessParams(num_frames=2, size=16, detector="dlib")
    try:
        preprocess_table(make_table(rows), {out!r}, params, workers=2, detector=SlowDetector())
    except KeyboardInterrupt:
        sys.exit(130)
"""


def _start(tmp_path, n_clips: int = 40, delay: float = 0.2) -> tuple[subprocess.Popen, Path]:
    rows = []
    frames = _frames(7, 2, shape=(48, 64))
    for i in range(n_clips):
        rows.append(table_row(f"toy/01/c{i:02d}", write_frames(tmp_path / "data" / f"c{i}", frames)))
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    src = str(Path(hlora_mer.data.__file__).resolve().parents[2])
    script.write_text(
        textwrap.dedent(_SCRIPT).format(
            paths=[str(TESTS), src], delay=delay, rows=str(tmp_path / "rows.json"), out=str(out)
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True
    )
    return proc, out


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _kill_group(proc: subprocess.Popen) -> None:
    """Leave nothing behind, whatever the test found (the group is the one the script was started in)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def _alive(psutil, procs) -> list:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow  # starts real worker processes and signals them
def test_workers_die_with_a_killed_parent_and_leave_no_partial_clip(tmp_path) -> None:
    psutil = pytest.importorskip("psutil")
    proc, out = _start(tmp_path)
    try:
        parent = psutil.Process(proc.pid)
        _wait_for(lambda: any(out.glob("*/clips/**/*.npy")), 30, "the first clip")
        children = parent.children(recursive=True)
        assert len(children) >= 2  # two workers (and the resource tracker)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _wait_for(lambda: not _alive(psutil, children), 5, "the worker processes to end")
    finally:
        _kill_group(proc)
    written = sorted(out.glob("*/clips/**/*.npy"))
    time.sleep(0.5)  # longer than a clip takes: nobody is still writing
    assert sorted(out.glob("*/clips/**/*.npy")) == written
    for path in written:  # complete or absent
        assert np.load(path).shape == (2, 16, 16, 3)


@pytest.mark.slow  # starts real worker processes and signals them
def test_ctrl_c_while_workers_start_prints_no_traceback(tmp_path) -> None:
    psutil = pytest.importorskip("psutil")
    proc, out = _start(tmp_path, n_clips=6, delay=0.05)
    try:
        parent = psutil.Process(proc.pid)
        _wait_for(lambda: len(parent.children()) >= 3, 30, "two workers and the resource tracker")
        children = parent.children(recursive=True)
        # The workers take about a second to import; past the parent's submissions, well before that.
        time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        _, stderr = proc.communicate(timeout=30)
        _wait_for(lambda: not _alive(psutil, children), 5, "the worker processes to end")
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


@pytest.mark.slow  # starts real worker processes and signals them
def test_sigterm_shuts_the_workers_down_cleanly_and_keeps_the_finished_clips(tmp_path) -> None:
    psutil = pytest.importorskip("psutil")
    proc, out = _start(tmp_path)
    try:
        parent = psutil.Process(proc.pid)
        _wait_for(lambda: any(out.glob("*/clips/**/*.npy")), 30, "the first clip")
        children = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGTERM)  # what `kill PID`, a job scheduler or a container stop sends
        _, stderr = proc.communicate(timeout=30)
        _wait_for(lambda: not _alive(psutil, children), 5, "the worker processes to end")
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, stderr  # stopped through the same path as Ctrl-C
    assert "leaked semaphore" not in stderr and "Traceback" not in stderr, stderr
    # The manifest was written on the way out: it names every clip on disk.
    written = {p.relative_to(next(out.iterdir())).as_posix() for p in out.glob("*/clips/**/*.npy")}
    assert written and {e["file"] for e in _manifest_of(out)["clips"].values()} == written


def _manifest_of(out: Path) -> dict:
    return json.loads(next(out.glob("*/manifest.json")).read_text())
