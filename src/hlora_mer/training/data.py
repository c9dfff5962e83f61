"""The one place where an experiment's data config becomes torch Datasets.

The fold runner only needs a :class:`DataSource`: a labelled sample table (``sample_id``, ``subject``,
``dataset``, ``label``, ``label_index``), the class names, and ``dataset(ids, train=...)`` returning a
torch ``Dataset`` of dict samples (``clip`` (T, 3, H, W) normalised, ``label``, ``sample_id``,
``subject``). Two implementations:

- :class:`TensorSource`: clips already in memory (tests, notebooks);
- :class:`CacheSource`: the aligned-clip cache of ``hlora-mer preprocess``
  (``hlora_mer.training.clip_dataset.AlignedClipDataset``).

:func:`build_source` is the glue: ``data.datasets`` -> ``hlora_mer.data.load_dataset`` -> label scheme ->
``hlora_mer.preprocess.run.preprocess_table`` (only clips missing from the cache run) -> ``CacheSource``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import pandas as pd
import torch
from torch.utils.data import Dataset

from hlora_mer.config import ExperimentConfig
from hlora_mer.errors import DatasetError

if TYPE_CHECKING:
    from hlora_mer.preprocess.run import PreprocessParams

logger = logging.getLogger(__name__)

TABLE_COLUMNS: tuple[str, ...] = ("sample_id", "subject", "dataset", "label", "label_index")


class DataSource(Protocol):
    """What the fold runner reads: a labelled table, class names and a Dataset factory."""

    table: pd.DataFrame
    classes: tuple[str, ...]
    info: dict[str, Any]

    def dataset(self, sample_ids: Sequence[str], *, train: bool) -> Dataset: ...


def check_table(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Validate the columns the runner needs; returns the table indexed 0..N-1."""
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"the labelled table lacks column(s) {missing}; expected {list(TABLE_COLUMNS)}")
    bad = table.loc[(table["label_index"] < 0) | (table["label_index"] >= len(classes))]
    if len(bad):
        raise ValueError(f"label_index outside 0..{len(classes) - 1} for {bad['sample_id'].iloc[0]}")
    return table.reset_index(drop=True)


def unpack_key(key: int | tuple[int, bool]) -> tuple[int, bool]:
    """A dataset key: an index (no flip), or ``(index, flip)`` as the training sampler gives them.

    The flip is decided by the sampler from a seeded generator of its own; datasets never draw randomness.
    """
    if isinstance(key, tuple):
        return int(key[0]), bool(key[1])
    return int(key), False


class _TensorDataset(Dataset):
    def __init__(self, clips: torch.Tensor, rows: pd.DataFrame, train: bool, flip_prob: float) -> None:
        self.clips, self.rows, self.train, self.flip_prob = clips, rows, train, flip_prob

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        i, flip = unpack_key(key)
        row = self.rows.iloc[i]
        clip = self.clips[int(row["_pos"])]  # (T, 3, H, W)
        if flip:
            clip = clip.flip(-1)  # every frame along W, together
        return {
            "clip": clip,
            "label": int(row["label_index"]),
            "sample_id": str(row["sample_id"]),
            "subject": str(row["subject"]),
        }


@dataclass
class TensorSource:
    """In-memory clips ``(N, T, 3, H, W)``, row ``i`` of ``table`` is clip ``i``."""

    table: pd.DataFrame
    clips: torch.Tensor
    classes: tuple[str, ...]
    flip_prob: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.table = check_table(self.table, self.classes)
        if self.clips.ndim != 5 or len(self.clips) != len(self.table):
            raise ValueError(f"expected clips (N={len(self.table)}, T, 3, H, W), got {tuple(self.clips.shape)}")
        self._pos = pd.Series(range(len(self.table)), index=self.table["sample_id"].astype(str))

    def clip_fingerprints(self) -> dict[str, str]:
        """Per sample id, a hash of its clip's values."""
        return {
            str(sid): hashlib.sha256(
                self.clips[i].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
            ).hexdigest()[:16]
            for sid, i in self._pos.items()
        }

    def dataset(self, sample_ids: Sequence[str], *, train: bool) -> Dataset:
        rows = self.table.set_index(self.table["sample_id"].astype(str)).loc[list(sample_ids)].reset_index(drop=True)
        rows["_pos"] = self._pos.loc[list(sample_ids)].to_numpy()
        return _TensorDataset(self.clips, rows, train, self.flip_prob)


@dataclass
class CacheSource:
    """Clips from a preprocessing cache folder (the parameter-set folder holding ``manifest.json``)."""

    table: pd.DataFrame
    cache_dir: Path
    classes: tuple[str, ...]
    num_frames: int
    flip_prob: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.table = check_table(self.table, self.classes)

    def clip_fingerprints(self) -> dict[str, str]:
        """Per sample id, the identity of its aligned clip in the cache manifest (changes when it is re-made)."""
        from hlora_mer.preprocess.cache import open_cache_dir

        entries = open_cache_dir(self.cache_dir).clips
        return {sid: str(entry.get("file_sha256") or entry.get("fingerprint")) for sid, entry in entries.items()}

    def dataset(self, sample_ids: Sequence[str], *, train: bool) -> Dataset:
        from hlora_mer.training.clip_dataset import AlignedClipDataset

        rows = self.table.set_index(self.table["sample_id"].astype(str)).loc[list(sample_ids)].reset_index(drop=True)
        return AlignedClipDataset(
            rows, self.cache_dir, train=train, flip_prob=self.flip_prob, num_frames=self.num_frames
        )


def sample_records(source: DataSource) -> pd.DataFrame:
    """Per sample, everything a fold's result depends on besides the settings: id, subject, label, onset /
    apex / offset (where the table has them) and ``clip``, the fingerprint of the clip the model sees."""
    table = source.table
    records = table[[c for c in (*TABLE_COLUMNS, "onset", "apex", "offset") if c in table.columns]].copy()
    for column in ("onset", "apex", "offset"):
        if column in records.columns:  # frame numbers, '' when missing (an apex of '/')
            records[column] = [("" if pd.isna(v) else str(int(v))) for v in records[column]]
    fingerprints = source.clip_fingerprints() if hasattr(source, "clip_fingerprints") else {}
    records["clip"] = [fingerprints.get(str(s), "") for s in records["sample_id"]]
    return records


def load_labelled_table(cfg: ExperimentConfig) -> tuple[pd.DataFrame, tuple[str, ...], pd.DataFrame, dict[str, Any]]:
    """Read every dataset of ``cfg.data`` and apply the label scheme.

    Returns:
        ``(table, classes, excluded, info)``: the labelled table, the scheme's class names, the rows left
        out (by the loader or the scheme, with ``reason``), and per-dataset provenance (version, md5).

    Raises:
        DatasetError: a root that is not set or does not exist (the message says which override to pass).
    """
    from hlora_mer.data import apply_label_scheme, get_scheme, load_dataset

    if cfg.data.composite:
        from hlora_mer.data.annotations.composites import load_composite, load_composite_table

        composite = load_composite(cfg.data.composite)
        comp_table, comp_excluded, comp_info = load_composite_table(
            composite, cfg.data.roots, versions=cfg.data.versions, options=cfg.data.options
        )
        return comp_table, composite.classes, comp_excluded, comp_info
    scheme = get_scheme(cfg.data.label_scheme)
    tables, excluded, info = [], [], {}
    for name in cfg.data.datasets:
        root = cfg.data.roots.get(name)
        if not root:
            raise DatasetError(
                f"no root folder for dataset {name!r}: pass data.roots.{name}=/path/to/{name} "
                "(the folder as downloaded; layouts in docs/datasets.md)"
            )
        loaded = load_dataset(name, root, version=cfg.data.versions.get(name), **(cfg.data.options.get(name) or {}))
        tables.append(loaded.table)
        excluded.append(loaded.excluded)
        info[name] = {
            "root": str(root),
            "version": loaded.version,
            "annotation_md5": loaded.annotation_md5,
            "samples": len(loaded.table),
        }
    table = pd.concat(tables, ignore_index=True)
    labelled, dropped = apply_label_scheme(table, scheme)
    excluded.append(dropped)
    all_excluded = (
        pd.concat([e for e in excluded if len(e)], ignore_index=True)
        if any(len(e) for e in excluded)
        else pd.DataFrame(columns=["sample_id", "reason"])
    )
    if labelled.empty:

        def reasons(rows: pd.DataFrame) -> str:
            """Rows left out, counted by kind (most frequent first), each kind with one example reason."""
            kinds = rows["kind"].fillna("other").astype(str) if "kind" in rows else pd.Series("other", rows.index)
            parts = []
            for kind, count in kinds.value_counts().items():
                example = rows.loc[kinds == kind, "reason"].dropna().astype(str).head(1).tolist()
                parts.append(f"{count} {kind}" + (f", e.g. {example[0]}" if example else ""))
            return "; ".join(parts) or "no reason recorded"

        head = f"label scheme {scheme.name} keeps no sample of {list(cfg.data.datasets)}"
        if table.empty:
            left_out = [e for e in excluded[:-1] if len(e)]
            rows = pd.concat(left_out, ignore_index=True) if left_out else pd.DataFrame(columns=["kind", "reason"])
            check = " and ".join(f"'hlora-mer data check {n} {cfg.data.roots.get(n)}'" for n in cfg.data.datasets)
            raise DatasetError(
                f"{head}: the loader kept 0 of {len(rows)} annotation rows "
                f"({reasons(rows) if len(rows) else 'the annotation has no rows'}); see {check}"
            )
        column = scheme.source_column
        found = table[column].fillna("(blank)").astype(str).value_counts().to_dict() if column in table else {}
        raise DatasetError(
            f"{head}: the scheme leaves out all {len(table)} samples the loader kept ({reasons(dropped)}); "
            f"{column} values found: {found}; the scheme's classes are {list(scheme.classes)}. Choose a label "
            "scheme for these datasets with data.label_scheme ('hlora-mer data list' shows them)"
        )
    return labelled.reset_index(drop=True), tuple(scheme.classes), all_excluded, info


def preprocess_params(cfg: ExperimentConfig) -> PreprocessParams:
    """The preprocessing an experiment's clips go through (and any clip its model is later applied to)."""
    from hlora_mer.data.sampling import SamplingMode
    from hlora_mer.preprocess.run import PreprocessParams

    return PreprocessParams(
        num_frames=cfg.model.num_frames,
        size=cfg.model.image_size,
        detector=cfg.data.detector,
        margin=cfg.data.margin,
        landmark_model=cfg.data.landmark_model,
        sampling=cast(SamplingMode, cfg.data.sampling),  # the config checked it is one of SAMPLING_MODES
        estimate_apex=cfg.data.estimate_apex,
    )


def build_source(
    cfg: ExperimentConfig,
    *,
    progress: Callable[[Any], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    check: Callable[[pd.DataFrame], object] | None = None,
) -> tuple[CacheSource, pd.DataFrame]:
    """The data of an experiment, preprocessed into the cache: ``(source, excluded rows)``.

    Clips that fail preprocessing are dropped with a warning and listed in the excluded rows (reason
    ``preprocessing failed: ...``), never silently.

    Args:
        cfg: the experiment (``data`` section, plus ``model.num_frames`` / ``model.image_size``).
        progress: called once per clip by the preprocessing (done, skipped or failed).
        on_plan: called with the number of clips before preprocessing starts (for a progress bar).
        check: called with the labelled table before preprocessing starts (e.g. to make the folds), so that
            a protocol that cannot be run fails before any clip is aligned.
    """
    from hlora_mer.preprocess.run import preprocess_table

    table, classes, excluded, info = load_labelled_table(cfg)
    params = preprocess_params(cfg)
    cache_root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.output_dir) / "cache"
    if check is not None:
        check(table)
    if on_plan is not None:
        on_plan(len(table))
    report = preprocess_table(table, cache_root, params, workers=cfg.data.preprocess_workers, progress=progress)
    if report.failed:
        logger.warning(
            "%d clip(s) failed preprocessing and are left out (see %s)", len(report.failed), report.failures_path
        )
        failed = table[table["sample_id"].isin(report.failed)].copy()
        failed["reason"] = [f"preprocessing failed: {report.failed[s]}" for s in failed["sample_id"]]
        excluded = pd.concat([excluded, failed], ignore_index=True)
        table = table[~table["sample_id"].isin(report.failed)].reset_index(drop=True)
    info["cache_dir"] = str(Path(report.cache_dir).resolve())
    source = CacheSource(table, Path(report.cache_dir), classes, cfg.model.num_frames, cfg.data.flip_prob, info)
    return source, excluded
