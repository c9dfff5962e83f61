"""The on-disk cache of aligned clips, with its manifest.

Layout under the output folder chosen by the user::

    OUT/
      t8_s224_dlib_uniform_3f2a9c1d7e/      one folder per parameter set: name = readable part + hash
        params.json                         the parameters that produced every clip below
        manifest.lock                       held while a process merges its entries into the manifest
        manifest.json                       per clip: file, source fingerprint and hashes, frames, transform;
                                            failures with their reason
        failures.csv                        sample_id,reason (the failure report, for people)
        clips/casme2/01/EP02_01f.npy        uint8 (T, S, S, 3) RGB, one file per clip

The folder name contains a hash of every parameter that changes the pixels (and of ``ALIGN_VERSION``),
so a parameter change writes to a new folder and can never serve stale clips. Inside a folder, a clip is
up to date when its manifest entry's source fingerprint (names, sizes and modification times of the
frames it was made from, plus the frame numbers chosen) still matches the files, and its ``.npy`` still
has the size and SHA-256 recorded when it was written (``file_size``, ``file_sha256``). A truncated or
damaged ``.npy`` is therefore never "up to date": ``preprocess`` remakes it, and reading it raises a
``DatasetError`` that says so. Entries written before checksums were recorded are checked once by
loading the file (dtype and shape); a clip that loads gets its checksum recorded, one that does not is
remade.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from hlora_mer.errors import DatasetError
from hlora_mer.files import atomic_write_bytes, atomic_write_text

MANIFEST_NAME = "manifest.json"
PARAMS_NAME = "params.json"
FAILURES_NAME = "failures.csv"
# Held while the manifest is read, merged and rewritten, so that two processes never lose each other's entries.
LOCK_NAME = "manifest.lock"
MANIFEST_FORMAT = 1
# Bump when the same parameters would produce different pixels (a change in align.py or sampling.py).
ALIGN_VERSION = 1

_SAFE_PART = re.compile(r"[^A-Za-z0-9._-]")


def params_hash(params: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable parameter mapping."""
    text = json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def clip_relpath(sample_id: str) -> str:
    """Where a sample's clip lives under the cache folder, e.g. ``clips/casme2/01/EP02_01f.npy``.

    Characters that are unsafe in file names become ``_``; if that changes the id, a hash of the id is
    appended so that two ids never share a file.
    """
    parts = [_SAFE_PART.sub("_", p) for p in str(sample_id).split("/")]
    parts = ["_" if p in ("", ".", "..") else p for p in parts]
    if "/".join(parts) != sample_id:
        parts[-1] += "-" + hashlib.sha1(sample_id.encode()).hexdigest()[:8]
    return "clips/" + "/".join(parts) + ".npy"


def save_clip(path: Path, clip: np.ndarray) -> dict[str, Any]:
    """Write a clip atomically (a killed run never leaves a half-written ``.npy`` behind).

    Returns:
        ``{"file_size": ..., "file_sha256": ...}`` of the bytes written, for the manifest entry.
    """
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(clip, dtype=np.uint8))
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return {"file_size": len(data), "file_sha256": hashlib.sha256(data).hexdigest()}


def _decode_clip(data: bytes, entry: Mapping[str, Any]) -> np.ndarray:
    """The clip in ``data``; ValueError when it does not load as the uint8 array the entry describes."""
    try:
        clip = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"it does not load as an array ({err})") from err
    shape = entry.get("shape")
    if clip.dtype != np.uint8 or clip.ndim != 4 or (shape is not None and list(clip.shape) != list(shape)):
        raise ValueError(f"it holds a {clip.dtype} array of shape {clip.shape}, expected uint8 {shape}")
    return clip


class ClipCache:
    """One parameter set's folder: clips, manifest and failure report.

    Args:
        root: The output folder (``--out``).
        name: The folder name for this parameter set (readable part + :func:`params_hash`).
        params: The parameters, written to ``params.json``.
    """

    def __init__(self, root: str | Path, name: str, params: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.dir = self.root / name
        self.params = dict(params)
        self.manifest_path = self.dir / MANIFEST_NAME
        self.failures_path = self.dir / FAILURES_NAME
        self._clips: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, dict[str, Any]] = {}
        # Entries changed by this run; merged into the file on flush so that a concurrent run's work survives.
        self._changed: set[str] = set()
        # Entries of an older manifest (no checksum) that were checked by loading, and got their checksum now.
        self.checksums_added: list[str] = []

    def open(self) -> ClipCache:
        """Create the folder (or check an existing one) and load its manifest."""
        self.dir.mkdir(parents=True, exist_ok=True)
        params_path = self.dir / PARAMS_NAME
        if params_path.exists():
            on_disk = json.loads(params_path.read_text(encoding="utf-8"))
            if on_disk != self.params:
                raise DatasetError(
                    f"{params_path} holds other parameters than this run's ({on_disk} != {self.params}); "
                    f"the folder was changed by hand: delete {self.dir} and run again"
                )
        else:
            atomic_write_text(params_path, json.dumps(self.params, indent=2, sort_keys=True) + "\n")
        self._clips, self._failures = self._read_manifest()
        return self

    def _read_manifest(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        if not self.manifest_path.exists():
            return {}, {}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{self.manifest_path} is not valid JSON ({err}); delete it to rebuild the cache"
            ) from err
        if data.get("format") != MANIFEST_FORMAT:
            raise DatasetError(f"{self.manifest_path} has format {data.get('format')!r}, expected {MANIFEST_FORMAT}")
        return dict(data.get("clips", {})), dict(data.get("failures", {}))

    @property
    def clips(self) -> Mapping[str, Mapping[str, Any]]:
        """Manifest entries of the clips written so far, by sample_id."""
        return self._clips

    @property
    def failures(self) -> Mapping[str, Mapping[str, Any]]:
        """Failures recorded so far, by sample_id (each with a ``reason``)."""
        return self._failures

    def clip_path(self, sample_id: str) -> Path:
        """The ``.npy`` file of a sample (whether or not it exists yet)."""
        return self.dir / clip_relpath(sample_id)

    def is_fresh(self, sample_id: str, fingerprint: str) -> bool:
        """Whether the sample's clip was made from the same source files and frames, and its file is intact
        (:meth:`clip_problem`)."""
        entry = self._clips.get(sample_id)
        if not entry:
            return False
        return entry.get("fingerprint") == fingerprint and self.clip_problem(sample_id) is None

    def _check_bytes(self, sample_id: str, data: bytes) -> str | None:
        entry = self._clips[sample_id]
        expected = entry.get("file_sha256")
        if expected is None:  # an entry of an older manifest: check by loading, then record the checksum
            try:
                _decode_clip(data, entry)
            except ValueError as err:
                return str(err)
            entry["file_size"], entry["file_sha256"] = len(data), hashlib.sha256(data).hexdigest()
            self._changed.add(sample_id)
            self.checksums_added.append(sample_id)
            return None
        if len(data) != entry.get("file_size", len(data)):
            return f"it has {len(data)} bytes, the manifest recorded {entry['file_size']} (truncated?)"
        if hashlib.sha256(data).hexdigest() != expected:
            return "its SHA-256 differs from the one recorded when it was written (the file was damaged)"
        return None

    def clip_problem(self, sample_id: str) -> str | None:
        """Why a recorded clip's file cannot be trusted (missing, wrong size, wrong checksum), or None.

        The size is compared first (no read); then the file is read and hashed (about 1 ms per
        8 x 224 x 224 x 3 clip).
        """
        entry = self._clips.get(sample_id)
        if entry is None:
            return "it is not in the manifest"
        path = self.dir / entry["file"]
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "its file is missing"
        if "file_size" in entry and size != entry["file_size"]:
            return f"it has {size} bytes, the manifest recorded {entry['file_size']} (truncated?)"
        return self._check_bytes(sample_id, path.read_bytes())

    def record_done(self, sample_id: str, entry: Mapping[str, Any]) -> None:
        """Record a clip written to :meth:`clip_path` (``entry`` must hold ``fingerprint``)."""
        self._clips[sample_id] = {"file": clip_relpath(sample_id), **entry}
        self._failures.pop(sample_id, None)
        self._changed.add(sample_id)

    def record_failure(self, sample_id: str, reason: str, **details: Any) -> None:
        """Record a clip that could not be made; a stale clip of the same sample is forgotten."""
        self._failures[sample_id] = {"reason": reason, **details}
        if self._clips.pop(sample_id, None) is not None:
            self.clip_path(sample_id).unlink(missing_ok=True)
        self._changed.add(sample_id)

    def flush(self) -> None:
        """Merge this run's changes into the manifest on disk and write it and the failure report (atomically).

        The read, merge and write happen under ``manifest.lock`` (``filelock``, like the feature cache's
        fill lock): two processes flushing the same folder at once keep each other's entries.
        """
        with FileLock(self.dir / LOCK_NAME):
            self._merge_and_write()

    def _merge_and_write(self) -> None:
        clips, failures = self._read_manifest()
        for sample_id in self._changed:
            for mine, theirs in ((self._clips, clips), (self._failures, failures)):
                if sample_id in mine:
                    theirs[sample_id] = mine[sample_id]
                else:
                    theirs.pop(sample_id, None)
        self._clips, self._failures = clips, failures
        self._changed.clear()
        manifest = {
            "format": MANIFEST_FORMAT,
            "params": self.params,
            "clips": dict(sorted(clips.items())),
            "failures": dict(sorted(failures.items())),
        }
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1) + "\n")
        lines = [["sample_id", "reason"], *([sid, f["reason"]] for sid, f in sorted(failures.items()))]
        buf = io.StringIO()
        csv.writer(buf).writerows(lines)
        atomic_write_text(self.failures_path, buf.getvalue())

    def load_clip(self, sample_id: str) -> np.ndarray:
        """Read a cached clip, ``(T, S, S, 3)`` uint8, checked against its manifest entry.

        Raises:
            FileNotFoundError: If the sample is not in the cache, with what to run.
            DatasetError: If the clip's file is missing, truncated or damaged (it does not match the size
                and SHA-256 recorded when it was written), naming the file and what to run.
        """
        entry = self._clips.get(sample_id)
        if entry is None:
            reason = self._failures.get(sample_id, {}).get("reason")
            why = f"preprocessing failed: {reason}" if reason else "it was not preprocessed"
            raise FileNotFoundError(
                f"no aligned clip for {sample_id} in {self.dir} ({why}). Run 'hlora-mer preprocess' first."
            )
        path = self.dir / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            problem: str | None = "its file is missing"
        else:
            problem = self._check_bytes(sample_id, data)
            if problem is None:
                try:
                    return _decode_clip(data, entry)
                except ValueError as err:
                    problem = str(err)
        raise DatasetError(
            f"the cached clip of {sample_id} ({path}) cannot be used: {problem}. "
            "Run 'hlora-mer preprocess' again with the same parameters: it remakes damaged clips."
        )


def open_cache_dir(cache_dir: str | Path) -> ClipCache:
    """Open an existing parameter-set folder (the one holding ``manifest.json``) for reading.

    Raises:
        FileNotFoundError: If the folder has no manifest, with what to run.
    """
    cache_dir = Path(cache_dir)
    params_path = cache_dir / PARAMS_NAME
    if not (cache_dir / MANIFEST_NAME).is_file() or not params_path.is_file():
        found = sorted(p.parent.name for p in cache_dir.glob(f"*/{MANIFEST_NAME}"))
        hint = f" It holds these parameter sets: {', '.join(found)}." if found else ""
        raise FileNotFoundError(
            f"{cache_dir} is not a preprocessing cache folder (no {MANIFEST_NAME} and {PARAMS_NAME}).{hint} "
            "Run 'hlora-mer preprocess' and pass the parameter-set folder it prints."
        )
    params = json.loads(params_path.read_text(encoding="utf-8"))
    return ClipCache(cache_dir.parent, cache_dir.name, params).open()
