"""Atomic writes: a folder being replaced is never lost, and what is renamed into place is on disk first."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from hlora_mer.files import atomic_write_bytes, atomic_write_dir, atomic_write_text

OLD = {"model.safetensors": "old weights", "sub/config.yaml": "old: 1\n"}
NEW = {"model.safetensors": "new weights", "sub/config.yaml": "new: 2\n", "extra.json": "{}\n"}


def _fill_with(content: dict[str, str]):
    def fill(tmp: Path) -> None:
        for rel, text in content.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)

    return fill


def _read_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _failing_fill(tmp: Path) -> None:
    (tmp / "model.safetensors").write_text("half")
    raise RuntimeError("fill failed")


def _fail_on_call(monkeypatch, n: int, exc: BaseException) -> list[tuple[str, str]]:
    """Make the ``n``-th ``os.replace``/``os.rename`` (counted together) raise ``exc``; returns the calls made."""
    calls: list[tuple[str, str]] = []
    real = {"replace": os.replace, "rename": os.rename}

    def make(name: str):
        def fake(src, dst, *args, **kwargs):
            calls.append((str(src), str(dst)))
            if len(calls) == n:
                raise exc
            return real[name](src, dst, *args, **kwargs)

        return fake

    monkeypatch.setattr(os, "replace", make("replace"))
    monkeypatch.setattr(os, "rename", make("rename"))
    return calls


def test_a_failure_between_the_renames_leaves_the_old_folder_in_place(tmp_path, monkeypatch) -> None:
    target = tmp_path / "checkpoint"
    atomic_write_dir(target, _fill_with(OLD))
    calls = _fail_on_call(monkeypatch, 2, OSError("disk gone"))
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_dir(target, _fill_with(NEW))
    assert len(calls) >= 2  # the old folder was moved aside, then the new one failed to move in
    assert _read_tree(target) == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # nothing left beside it
    monkeypatch.undo()
    atomic_write_dir(target, _fill_with(NEW))
    assert _read_tree(target) == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def _crash_on_second_rename(target: str) -> None:
    """Child process: replace ``target`` and die (no clean-up, like SIGKILL) at the second rename."""
    count = [0]
    real_replace, real_rename = os.replace, os.rename

    def crash(real):
        def fake(src, dst, *args, **kwargs):
            count[0] += 1
            if count[0] == 2:
                os._exit(3)
            return real(src, dst, *args, **kwargs)

        return fake

    os.replace, os.rename = crash(real_replace), crash(real_rename)  # type: ignore[assignment]
    atomic_write_dir(target, _fill_with(NEW))


def _crash_between_renames(target: Path) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=_crash_on_second_rename, args=(str(target),))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 3


def test_a_crash_between_the_renames_is_recovered_by_the_next_write(tmp_path) -> None:
    target = tmp_path / "checkpoint"
    atomic_write_dir(target, _fill_with(OLD))
    _crash_between_renames(target)
    # The next write restores the old folder before anything else: a failing fill leaves it whole.
    with pytest.raises(RuntimeError, match="fill failed"):
        atomic_write_dir(target, _failing_fill)
    assert _read_tree(target) == OLD
    atomic_write_dir(target, _fill_with(NEW))
    assert _read_tree(target) == NEW
    assert not (tmp_path / ".checkpoint.old").exists()


def _record_fsync(monkeypatch) -> list[tuple]:
    """Record, in order, every fsync (by the inode it flushed) and every rename."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", (st.st_dev, st.st_ino)))
        real_fsync(fd)

    def replace(src, dst, *args, **kwargs) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _inode(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


@pytest.mark.parametrize("write", [atomic_write_text, atomic_write_bytes])
def test_atomic_file_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch, write):
    path = tmp_path / "sub" / "results.json"
    events = _record_fsync(monkeypatch)
    write(path, "{}\n" if write is atomic_write_text else b"{}\n")
    rename = events.index(("replace", str(path)))
    assert ("fsync", _inode(path)) in events[:rename]  # the file's bytes are on disk before it gets its name
    assert ("fsync", _inode(path.parent)) in events[rename + 1 :]  # and the new name is on disk too


def test_atomic_write_dir_fsyncs_every_file_and_folder_before_the_rename(tmp_path, monkeypatch) -> None:
    target = tmp_path / "export"
    atomic_write_dir(target, _fill_with(OLD))
    events = _record_fsync(monkeypatch)
    atomic_write_dir(target, _fill_with(NEW))
    rename = events.index(("replace", str(target)))
    before = {inode for kind, inode in events[:rename] if kind == "fsync"}
    written = [target / rel for rel in NEW] + [target, target / "sub"]
    assert {_inode(p) for p in written} <= before
    assert ("fsync", _inode(tmp_path)) in events[rename + 1 :]
