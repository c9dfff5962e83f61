"""Writing files so that a reader never sees half of one: write beside the target, then rename over it.

Every file and folder the package writes goes through here, so that a killed process leaves either the
old content or the new one (never a truncated file), and so that what it writes follows the user's umask
like any ``open(path, "w")`` would (``tempfile.mkstemp`` alone creates files readable by the owner only).

What is renamed into place is flushed to disk first (``fsync`` of every file written, and of the folders
that hold them), and the folder holding the new name is flushed after the rename, so that a power cut does
not leave a name pointing at bytes that never reached the disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_CHUNK = 1 << 20
# Where atomic_write_dir moves the folder it replaces, beside it, until the new one is in place.
_ASIDE = ".{name}.old"


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, Path(tmp)


def _fsync_path(path: str | Path) -> None:
    """Flush one file or folder to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk.

    Windows cannot open a folder for this; there it does nothing.
    """
    if os.name != "nt":
        _fsync_path(path)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (and ``root`` itself) to disk."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                _fsync_path(path)
        _fsync_dir(folder)


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` in one rename.

    On any error (or an interrupt) the temporary file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes only ('w' or 'wb'); got mode {mode!r}")
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        kwargs: dict[str, Any] = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", newline=newline) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def _recover_aside(directory: Path, aside: Path) -> None:
    """Finish or undo a replacement of ``directory`` that a killed process left half done.

    :func:`atomic_write_dir` moves the old folder to ``aside``, moves the new one in, then removes ``aside``.
    Killed between the two moves, it leaves only ``aside`` (the old folder, whole): put it back. Killed
    after them, ``directory`` is the new folder, whole: the rest of ``aside`` goes.
    """
    if not os.path.lexists(aside):
        return
    if os.path.lexists(directory):
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(aside, directory)
        _fsync_dir(directory.parent)


def atomic_write_dir(directory: str | Path, fill: Callable[[Path], object]) -> None:
    """Build a folder with ``fill(tmp_dir)`` beside ``directory``, then put it in place of ``directory``.

    An existing ``directory`` is replaced only after ``fill`` succeeded and the new folder is on disk
    (every file and folder in it fsynced). The old folder is moved aside (to ``.NAME.old``), the new one
    moved in, and only then is the old one removed, so the old folder or the new one is under its name at
    every moment but the one between the two renames. A failure there puts the old folder back; a process
    killed there leaves the old folder aside, which the next call for the same ``directory`` puts back
    before doing anything else.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    aside = directory.parent / _ASIDE.format(name=directory.name)
    _recover_aside(directory, aside)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if os.path.lexists(directory):
            os.replace(directory, aside)
            try:
                os.replace(tmp, directory)
            except BaseException:
                os.replace(aside, directory)
                raise
        else:
            os.replace(tmp, directory)
        _fsync_dir(directory.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _dir_problem(path: Path, *, target: bool = True) -> str | None:
    """Why the folder ``path`` could not be created or written into, or None; creates nothing.

    ``target``: ``path`` is what the message is about (it is called "it"), not the folder of a file.
    """
    found = next((p for p in (path, *path.parents) if os.path.lexists(p)), None)
    if found is None:  # a relative path's last parent is ".", which exists unless the working folder is gone
        return "the working folder no longer exists"
    name = "it" if target and found == path else str(found)
    if not found.exists():
        return f"{name} is a broken symbolic link"
    if not found.is_dir():
        return f"{name} is a file, not a folder" if found.is_file() else f"{name} is not a folder"
    if not os.access(found, os.W_OK | os.X_OK):
        return f"{name} is not writable (Permission denied)"
    return None


def check_writable_dir(path: str | Path, what: str, fix: str = "choose another folder") -> Path:
    """Check, without creating anything, that the folder ``path`` exists or can be made, and can be written.

    Walks up to the first ancestor that exists: it must be a folder the user may write into and enter
    (``os.access`` W_OK and X_OK); ``path`` itself, if it exists, must be such a folder.

    Args:
        path: the folder the caller is about to create or write into.
        what: what the folder is, for the message (``run folder``, ``cache folder``).
        fix: what the user can do instead (``choose another folder with -o``).

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        UserError: one line naming ``path``, the ancestor at fault and why, and ``fix``.
    """
    from hlora_mer.errors import UserError

    path = Path(path).expanduser()
    problem = _dir_problem(path)
    if problem is not None:
        raise UserError(f"cannot write the {what} {path}: {problem}; {fix}")
    return path


def check_writable_file(path: str | Path, what: str, fix: str = "choose another file") -> Path:
    """Check, without creating anything, that the file ``path`` can be written atomically.

    ``path`` must not be a folder, and its folder must exist or be creatable and be writable (an
    atomic write creates a temporary file beside the target, then renames it).

    Raises:
        UserError: one line naming ``path`` and why it cannot be written, and ``fix``.
    """
    from hlora_mer.errors import UserError

    path = Path(path).expanduser()
    problem = "it is a folder, not a file" if path.is_dir() else _dir_problem(path.parent, target=False)
    if problem is not None:
        raise UserError(f"cannot write the {what} {path}: {problem}; {fix}")
    return path
