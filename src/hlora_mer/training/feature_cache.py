"""The frozen-prefix feature cache: compute the frozen part of the backbone once, reuse it everywhere.

HLoRA freezes the first ``frozen_blocks = N - N_l`` blocks of the backbone (and the embeddings), so the
tokens leaving block ``frozen_blocks`` are a fixed function of the aligned frame. This module computes
them once per clip, for the plain and the horizontally flipped clip, and stores them; training then runs
only the last N_l blocks, the fusion module and the head (``MERModel.forward_from_prefix``).

Storage: one ``(2, T, L, d)`` array per clip (index 0: plain, 1: flipped), fp16 by default, as a
memory-mapped ``.npy`` in a key folder on disk (with the SHA-256 of its bytes beside it, ``.npy.sha256``),
or in RAM when there is no folder (in-memory sources);
on CUDA the arrays of a run are moved to the GPU when they fit. With N_l = 0 nothing after the prefix
but the final layer norm runs, which acts per token, so only the CLS token is stored (``L = 1``).

The key (a hash) covers everything the tokens depend on: backbone name and weights, ``frozen_blocks``,
frame size and count, the preprocessing identity (the aligned-clip cache folder, whose name hashes its
parameters), the storage dtype and the compute precision; a change gives another folder, never stale
features. Every fill checks the stored files it would reuse (shape, dtype and size from the ``.npy``
header, then the checksum): a truncated or damaged file is recomputed, and the log says so.

Processes that share a key folder (sweep members, workers on a shared disk) fill it one at a time: a
fill holds ``fill.lock`` in the key folder (``filelock``) and, once it holds it, computes only what is
still missing, so no clip is computed or written twice; a process that waits says so in the log.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from filelock import FileLock, Timeout
from torch.utils.data import DataLoader, Dataset

from hlora_mer.errors import ConfigError
from hlora_mer.files import atomic_write_bytes, atomic_write_text, sha256_file

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DTYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "fp16": (np.dtype(np.float16), torch.float16),
    "fp32": (np.dtype(np.float32), torch.float32),
}
_DISK_MARGIN = 256 * 2**20  # leave this much free on the disk after filling
LOCK_FILE = "fill.lock"  # in the key folder: held by the process filling it
LOCK_WAIT_LOG_S = 2.0  # after waiting this long for another process's fill, say so (once)


def prefix_is_frozen(model: Any) -> bool:
    """Whether the model's prefix (embeddings + the first ``frozen_blocks`` blocks) has no trainable tensor.

    False in full fine-tuning: then the prefix changes with every step and no cache is possible.
    """
    backbone = model.backbone
    parts = [backbone.model.embeddings, *backbone.blocks[: model.frozen_blocks]]
    return not any(p.requires_grad for part in parts for p in part.parameters())


def source_identity(source: Any) -> str:
    """What the clips of a data source are: the aligned-clip cache folder, or a hash of in-memory clips."""
    cache_dir = getattr(source, "cache_dir", None)
    if cache_dir is not None:
        return f"aligned:{Path(cache_dir).resolve()}"
    clips = getattr(source, "clips", None)
    if isinstance(clips, torch.Tensor):
        digest = hashlib.sha256(clips.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        ids = "\n".join(map(str, source.table["sample_id"]))
        digest.update(ids.encode())
        return f"tensor:{digest.hexdigest()[:16]}"
    raise TypeError(f"cannot identify the clips of a {type(source).__name__} for the feature cache")


def clip_versions(source: Any) -> dict[str, str]:
    """Per sample id, a hash of its aligned clip's manifest entry (source fingerprint, frames, transform):
    a clip re-made from changed source files gets new features. Empty for in-memory sources (their
    identity already hashes every clip)."""
    cache_dir = getattr(source, "cache_dir", None)
    if cache_dir is None:
        return {}
    from hlora_mer.preprocess.cache import open_cache_dir

    entries = open_cache_dir(cache_dir).clips
    return {
        sid: hashlib.sha1(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()[:10]
        for sid, entry in entries.items()
    }


def cache_key(
    model: Any, *, image_size: int, num_frames: int, preprocess_id: str, dtype: str, compute: str = "fp32"
) -> dict[str, Any]:
    """The parameters the cached tokens depend on (hashed into the key folder's name).

    ``compute`` is the precision the prefix runs in (``train.precision``: bf16 / fp16 autocast on CUDA
    gives other tokens than fp32).
    """
    backbone = model.backbone
    return {
        "format": FORMAT_VERSION,
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "depth": backbone.depth,
        "frozen_blocks": model.frozen_blocks,
        "cls_only": model.frozen_blocks == backbone.depth,
        "image_size": image_size,
        "num_frames": num_frames,
        "preprocess": preprocess_id,
        "dtype": dtype,
        "compute": compute,
    }


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _file_name(sample_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in sample_id)[-48:]
    return f"{safe}-{hashlib.sha1(sample_id.encode()).hexdigest()[:10]}.npy"


@dataclass
class CacheReport:
    """What the cache holds for a run: clips, bytes, and how many were computed now."""

    directory: str | None
    key: str
    clips: int
    computed: int
    bytes: int
    per_clip_shape: tuple[int, ...]
    dtype: str
    on_device: str

    def describe(self) -> str:
        where = self.directory or "memory"
        return (
            f"{self.clips} clips x {self.per_clip_shape} {self.dtype} = {self.bytes / 2**20:.1f} MiB in {where} "
            f"(key {self.key}; {self.computed} computed now, {self.clips - self.computed} reused; "
            f"served from {self.on_device})"
        )


class FeatureCache:
    """Prefix tokens per sample id, ``(2, T, L, d)``: plain and flipped.

    Args:
        key: from :func:`cache_key`.
        root: folder under which the key folder is made; None keeps the arrays in RAM.
    """

    def __init__(
        self, key: dict[str, Any], root: str | Path | None = None, versions: dict[str, str] | None = None
    ) -> None:
        if key["dtype"] not in DTYPES:
            raise ConfigError(f"train.feature_cache_dtype must be one of {', '.join(DTYPES)}; got {key['dtype']!r}")
        self.key = key
        self.hash = key_hash(key)
        self.np_dtype, self.torch_dtype = DTYPES[key["dtype"]]
        self.versions = versions or {}  # sample id -> version of its aligned clip (part of the file name)
        self.dir: Path | None = None
        if root is not None:
            self.dir = Path(root) / f"{key['backbone'].replace('/', '_')}_fb{key['frozen_blocks']}_{self.hash}"
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "key.json"
            if not meta.is_file():
                atomic_write_text(meta, json.dumps(key, indent=1) + "\n")
        self._ram: dict[str, torch.Tensor] = {}
        self._device: dict[str, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to another process) without the GPU copies: the receiver moves what it needs itself."""
        return {**self.__dict__, "_device": None}

    # -- storage -----------------------------------------------------------------------------------

    def path(self, sample_id: str) -> Path:
        assert self.dir is not None
        version = self.versions.get(sample_id)
        return self.dir / _file_name(f"{sample_id}@{version}" if version else sample_id)

    def has(self, sample_id: str) -> bool:
        if self.dir is None:
            return sample_id in self._ram
        return self.path(sample_id).is_file()

    @staticmethod
    def _checksum_path(path: Path) -> Path:
        return path.with_name(path.name + ".sha256")

    def problem(self, sample_id: str, shape: tuple[int, ...]) -> str | None:
        """Why a stored file cannot be reused (wrong shape or dtype, truncated, checksum differs), or None.

        A file written before checksums were kept beside it gets its checksum now, when its header and
        size are right.
        """
        if self.dir is None:
            return None
        path = self.path(sample_id)
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                found_shape, _, found_dtype = read_header(handle)
                offset = handle.tell()
        except FileNotFoundError:
            return "the file is missing"
        except (ValueError, OSError, EOFError) as err:
            return f"its header does not read ({err})"
        if tuple(found_shape) != tuple(shape) or found_dtype != self.np_dtype:
            return f"it holds {found_dtype} {tuple(found_shape)}, expected {self.np_dtype} {tuple(shape)}"
        expected_size = offset + int(np.prod(shape)) * self.np_dtype.itemsize
        size = path.stat().st_size
        if size != expected_size:
            return f"it has {size} bytes, expected {expected_size} (truncated?)"
        checksum = self._checksum_path(path)
        digest = sha256_file(path)
        try:
            recorded = checksum.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            atomic_write_text(checksum, digest + "\n")
            return None
        if digest != recorded:
            return "its SHA-256 differs from the one recorded when it was written (the file was damaged)"
        return None

    def get(self, sample_id: str) -> torch.Tensor:
        """``(2, T, L, d)`` tokens in the storage dtype (a memory map, a RAM tensor or a GPU tensor)."""
        if self._device is not None and sample_id in self._device:
            return self._device[sample_id]
        if self.dir is None:
            return self._ram[sample_id]
        array = np.load(self.path(sample_id), mmap_mode="r")
        return torch.from_numpy(np.array(array))  # one read from the memory map, writable

    def put(self, sample_id: str, tokens: torch.Tensor) -> None:
        tokens = tokens.detach().to("cpu", self.torch_dtype).contiguous()
        if self.dir is None:
            self._ram[sample_id] = tokens
            return
        buffer = io.BytesIO()
        np.save(buffer, tokens.numpy())
        data = buffer.getvalue()
        path = self.path(sample_id)
        atomic_write_bytes(path, data)  # then its checksum: a file without a matching one is never trusted
        atomic_write_text(self._checksum_path(path), hashlib.sha256(data).hexdigest() + "\n")

    def clip_shape(self, model: Any, num_frames: int, image_size: int) -> tuple[int, ...]:
        bb = model.backbone
        tokens = 1 if self.key["cls_only"] else bb.num_prefix_tokens + (image_size // bb.patch_size) ** 2
        return (2, num_frames, tokens, bb.embed_dim)

    # -- filling -----------------------------------------------------------------------------------

    def fill(
        self,
        model: Any,
        dataset_factory: Callable[[list[str]], Dataset],
        sample_ids: Sequence[str],
        *,
        batch_size: int,
        device: torch.device,
        num_frames: int,
        image_size: int,
        precision: str = "fp32",
        num_workers: int = 0,
    ) -> int:
        """Compute the tokens of every sample id not cached yet; returns how many were computed.

        ``dataset_factory(ids)`` gives the un-flipped clips of ``ids`` (dict samples with ``clip``).

        Raises:
            ConfigError: when the disk cannot hold the missing clips.
        """
        shape = self.clip_shape(model, num_frames, image_size)
        missing = self._missing(sample_ids, shape, log=self.dir is None)
        if not missing:
            return 0
        if self.dir is None:  # RAM: this object alone fills it
            return self._compute(
                model, dataset_factory, missing, shape, batch_size, device, num_frames, precision, num_workers
            )
        # Another process (a sweep member, a worker on a shared folder) may be filling the same key folder:
        # one fills at a time, and each computes only what is still missing once it holds the lock.
        lock = FileLock(self.dir / LOCK_FILE)
        try:
            lock.acquire(timeout=LOCK_WAIT_LOG_S)
        except Timeout:
            logger.info("feature cache: waiting for another process filling %s", self.dir)
            lock.acquire()
        try:
            missing = self._missing(missing, shape)
            if not missing:
                logger.info("feature cache: another process filled %s; reusing its clips", self.dir)
                return 0
            return self._compute(
                model, dataset_factory, missing, shape, batch_size, device, num_frames, precision, num_workers
            )
        finally:
            lock.release()

    def _missing(self, sample_ids: Sequence[str], shape: tuple[int, ...], log: bool = True) -> list[str]:
        """The ids without a reusable stored entry: absent, or damaged (``log``: say which and why)."""
        missing, damaged = [], {}
        for sid in dict.fromkeys(map(str, sample_ids)):
            if not self.has(sid):
                missing.append(sid)
            elif (problem := self.problem(sid, shape)) is not None:
                damaged[sid] = problem
                missing.append(sid)
        if damaged and log:
            first = "; ".join(f"{sid}: {why}" for sid, why in list(damaged.items())[:3])
            logger.warning(
                "feature cache: %d stored file(s) in %s cannot be reused and are recomputed (%s%s)",
                len(damaged),
                self.dir,
                first,
                " ..." if len(damaged) > 3 else "",
            )
        return missing

    def _compute(
        self,
        model: Any,
        dataset_factory: Callable[[list[str]], Dataset],
        missing: list[str],
        shape: tuple[int, ...],
        batch_size: int,
        device: torch.device,
        num_frames: int,
        precision: str,
        num_workers: int,
    ) -> int:
        from hlora_mer.training.engine import _autocast, collate

        per_clip = int(np.prod(shape)) * self.np_dtype.itemsize
        need = per_clip * len(missing)
        if self.dir is not None:
            free = shutil.disk_usage(self.dir).free
            if need + _DISK_MARGIN > free:
                raise ConfigError(
                    f"the frozen-prefix feature cache needs {need / 2**30:.2f} GiB for {len(missing)} clips in "
                    f"{self.dir}, but only {free / 2**30:.2f} GiB are free. Free space there, point "
                    "train.feature_cache_dir at a larger disk, use train.feature_cache_dtype=fp16, or turn the "
                    "cache off with train.feature_cache=false"
                )
        logger.info("feature cache: computing the frozen prefix of %d clips (%.1f MiB)", len(missing), need / 2**20)
        was_training = model.training
        model.eval()
        loader = DataLoader(
            dataset_factory(missing),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=collate,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(0),
            pin_memory=device.type == "cuda",
        )
        with torch.no_grad():
            for batch in loader:
                clips = batch["clip"].to(device, non_blocking=True)
                with _autocast(device, precision):
                    plain = model.prefix(clips)  # (B*T, L, d)
                    flipped = model.prefix(clips.flip(-1))
                if self.key["cls_only"]:
                    plain, flipped = plain[:, :1], flipped[:, :1]
                both = torch.stack([plain, flipped], dim=1)  # (B*T, 2, L, d)
                both = both.view(len(batch["sample_id"]), num_frames, 2, *both.shape[-2:]).transpose(1, 2)
                both = both.to(self.torch_dtype).cpu()
                for sid, tokens in zip(batch["sample_id"], both, strict=True):
                    self.put(sid, tokens)
        model.train(was_training)
        return len(missing)

    def to_device(self, sample_ids: Sequence[str], device: torch.device, fraction: float = 0.5) -> bool:
        """Hold the tokens of ``sample_ids`` on ``device`` (CUDA) when they fit in ``fraction`` of its free memory."""
        if device.type != "cuda":
            return False
        ids = list(dict.fromkeys(map(str, sample_ids)))
        if not ids:
            return False
        size = self.get(ids[0]).numel() * self.np_dtype.itemsize * len(ids)
        free, _ = torch.cuda.mem_get_info(device)
        if size > fraction * free:
            logger.info("feature cache: %.1f GiB do not fit on %s; reading from host memory", size / 2**30, device)
            return False
        self._device = {s: self.get(s).to(device) for s in ids}
        return True

    def report(self, sample_ids: Sequence[str], computed: int) -> CacheReport:
        ids = list(dict.fromkeys(map(str, sample_ids)))
        first = self.get(ids[0]) if ids else torch.zeros(0)
        return CacheReport(
            directory=str(self.dir) if self.dir else None,
            key=self.hash,
            clips=len(ids),
            computed=computed,
            bytes=first.numel() * self.np_dtype.itemsize * len(ids),
            per_clip_shape=tuple(first.shape),
            dtype=self.key["dtype"],
            on_device="gpu" if self._device is not None else ("disk (memory-mapped)" if self.dir else "memory"),
        )


class CachedTokenDataset(Dataset):
    """Dict samples ``{"tokens": (T, L, d), "label", "sample_id", "subject"}`` read from a :class:`FeatureCache`.

    The flip comes with the key, as for the clip datasets (``training.data.unpack_key``), so a seed gives the
    same flips with and without the cache.
    """

    def __init__(self, cache: FeatureCache, rows: pd.DataFrame, *, train: bool, flip_prob: float) -> None:
        self.cache = cache
        self.sample_ids = [str(s) for s in rows["sample_id"]]
        self.labels = [int(v) for v in rows["label_index"]]
        self.subjects = [str(s) for s in rows["subject"]]
        self.train, self.flip_prob = train, flip_prob

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        from hlora_mer.training.data import unpack_key

        index, flip = unpack_key(key)
        sid = self.sample_ids[index]
        both = self.cache.get(sid)
        return {
            "tokens": both[1 if flip else 0],
            "label": self.labels[index],
            "sample_id": sid,
            "subject": self.subjects[index],
        }


class CachedSource:
    """A data source whose datasets serve cached prefix tokens instead of clips (same table and classes)."""

    def __init__(self, source: Any, cache: FeatureCache) -> None:
        self.source, self.cache = source, cache
        self.table, self.classes, self.info = source.table, source.classes, source.info
        self._rows = source.table.set_index(source.table["sample_id"].astype(str))

    def dataset(self, sample_ids: Sequence[str], *, train: bool) -> Dataset:
        rows = self._rows.loc[list(map(str, sample_ids))].reset_index(drop=True)
        rows["sample_id"] = list(map(str, sample_ids))
        return CachedTokenDataset(
            self.cache, rows, train=train, flip_prob=float(getattr(self.source, "flip_prob", 0.5))
        )


def default_root(cfg: Any, source: Any) -> Path | None:
    """``train.feature_cache_dir``, else ``features/`` beside the aligned-clip cache; None (RAM) for in-memory clips."""
    if cfg.train.feature_cache_dir:
        return Path(cfg.train.feature_cache_dir)
    cache_dir = getattr(source, "cache_dir", None)
    if cache_dir is not None:
        return Path(cache_dir).parent / "features"
    return None


def switched_off(cfg: Any) -> bool:
    """Whether the config turns the cache off (``train.feature_cache=false``); says so in the log."""
    if cfg.train.feature_cache:
        return False
    logger.info("frozen-prefix feature cache: off (train.feature_cache=false); the backbone runs end to end")
    return True


def prepare_cached_source(
    cfg: Any,
    source: Any,
    model: Any,
    device: torch.device,
    sample_ids: Sequence[str] | None = None,
    *,
    in_memory: bool = False,
) -> tuple[CachedSource, CacheReport] | None:
    """Fill the cache for every sample of ``source`` with ``model``'s frozen prefix; None when no cache applies.

    The model must be built from ``cfg`` (its prefix weights are the pretrained or seeded backbone, the
    same for every fold); the cache is bypassed when ``train.feature_cache`` is off or the prefix trains.
    ``in_memory`` keeps the tokens in RAM even where a cache folder would be used.
    """
    if switched_off(cfg):
        return None
    if not prefix_is_frozen(model):
        logger.info("frozen-prefix feature cache: off (model.backbone.finetune=full trains every block)")
        return None
    from hlora_mer.training.engine import compute_precision

    key = cache_key(
        model,
        image_size=cfg.model.image_size,
        num_frames=cfg.model.num_frames,
        preprocess_id=source_identity(source),
        dtype=cfg.train.feature_cache_dtype,
        compute=compute_precision(device, cfg.train.precision),
    )
    cache = FeatureCache(key, None if in_memory else default_root(cfg, source), clip_versions(source))
    ids = [str(s) for s in (sample_ids if sample_ids is not None else source.table["sample_id"])]
    model.to(device)
    computed = cache.fill(
        model,
        lambda s: source.dataset(s, train=False),
        ids,
        batch_size=cfg.train.batch_size,
        device=device,
        num_frames=cfg.model.num_frames,
        image_size=cfg.model.image_size,
        precision=cfg.train.precision,
        num_workers=cfg.train.num_workers,
    )
    cache.to_device(ids, device)
    report = cache.report(ids, computed)
    logger.info(
        "frozen-prefix feature cache: on; training runs only the last %d block(s), the fusion and the head. %s",
        model.backbone.depth - model.frozen_blocks,
        report.describe(),
    )
    return CachedSource(source, cache), report
