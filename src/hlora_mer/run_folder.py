"""The run folder: its file names, how each file is read, and the check that decides whether a run may resume.

Both ``training`` (which writes a run) and ``evaluation`` (which pools and reports it) use this module, so
the layout lives in one place::

    RUN/config.yaml                 the resolved config (model.num_classes from the label scheme)
    RUN/run.json                    package version, git commit, torch, device, classes, data provenance
    RUN/folds.json                  every fold: name, training and test sample ids
    RUN/samples.csv                 every sample a fold may use, with what its result depends on: label,
                                    onset / apex / offset, and the fingerprint of its aligned clip
    RUN/excluded.csv                samples left out by the loader, the label scheme or preprocessing
    RUN/folds/seed<S>/<fold>/       predictions.csv, result.json, checkpoint/ (trainable tensors only)
    RUN/predictions.csv             all folds and seeds, pooled
    RUN/metrics.json  RUN/report.md  RUN/confusion.png

A fold is finished when its ``result.json`` exists (written last, atomically). A run resumes only when
everything a finished fold depends on is unchanged: the training settings (:func:`training_identity`) and,
per sample, the record in ``samples.csv``. Any difference refuses the resume before a single file is
written, with a message naming what changed.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, cast

import pandas as pd

from hlora_mer.config import ExperimentConfig, from_dict, to_dict
from hlora_mer.errors import ConfigError, UserError
from hlora_mer.training.splits import Fold

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
FOLDS_FILE = "folds.json"
SAMPLES_FILE = "samples.csv"
EXCLUDED_FILE = "excluded.csv"
RESULT_FILE = "result.json"
FOLD_PREDICTIONS = "predictions.csv"
CHECKPOINT_DIR = "checkpoint"
PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CONFUSION_FILE = "confusion.png"

# Per sample, what a fold's result depends on (besides the settings): the columns of samples.csv.
SAMPLE_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "subject",
    "dataset",
    "label",
    "label_index",
    "onset",
    "apex",
    "offset",
    "clip",
)
EXCLUDED_COLUMNS: tuple[str, ...] = ("sample_id", "dataset", "subject", "emotion", "kind", "reason")

# Settings that change only the report, not what is trained: a run may resume with other values. A fold's
# training depends on its seed and fold index only, so eval.seeds and eval.folds choose which fold runs
# exist: a run can be extended with more seeds, and each finished fold is still checked. Where the data lies
# (data.roots, data.cache_dir) is not what it is: samples.csv checks each sample's content on resume.
REPORT_ONLY: frozenset[str] = frozenset(
    {
        "name",
        "description",
        "output_dir",
        "eval.seeds",
        "eval.bootstrap",
        "eval.confidence",
        "eval.metrics",
        "eval.folds",
        "train.device",
        "train.save_checkpoints",
        "data.preprocess_workers",
        "data.cache_dir",
        "data.roots",
        "train.feature_cache_dir",
    }
)


# --------------------------------------------------------------------------------------------------
# paths and readers


def fold_dir(run_dir: str | Path, seed: int, fold: Fold) -> Path:
    return Path(run_dir) / "folds" / f"seed{seed}" / fold.key


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_config(run_dir: str | Path) -> ExperimentConfig:
    """The resolved config of a run folder.

    Raises:
        UserError: the folder is not a run folder.
    """
    import yaml

    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file() or not (run_dir / FOLDS_FILE).is_file():
        raise UserError(
            f"{run_dir} is not a run folder (no {CONFIG_FILE} / {FOLDS_FILE}); "
            "pass a folder written by 'hlora-mer train'"
        )
    return from_dict(ExperimentConfig, yaml.safe_load(path.read_text(encoding="utf-8")) or {})


def read_folds(run_dir: str | Path) -> list[Fold]:
    return [
        Fold(f["name"], f["index"], tuple(f["train_ids"]), tuple(f["test_ids"]))
        for f in read_json(Path(run_dir) / FOLDS_FILE)
    ]


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; the run folder is incomplete")
    return read_json(path)


def read_result(run_dir: str | Path, seed: int, fold: Fold) -> dict[str, Any] | None:
    """A fold's ``result.json``, or None while the fold is unfinished."""
    path = fold_dir(run_dir, seed, fold) / RESULT_FILE
    return read_json(path) if path.is_file() else None


def read_fold_predictions(run_dir: str | Path, seed: int, fold: Fold) -> pd.DataFrame:
    return pd.read_csv(
        fold_dir(run_dir, seed, fold) / FOLD_PREDICTIONS,
        dtype={"sample_id": str, "subject": str, "fold": str, "dataset": str},
    )


# --------------------------------------------------------------------------------------------------
# what a fold depends on


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("roots", "versions", "options", "sweep"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def training_identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """The flattened settings that change what a fold trains (everything but :data:`REPORT_ONLY`)."""
    return {k: v for k, v in _flatten(to_dict(cfg)).items() if k not in REPORT_ONLY}


def samples_text(records: pd.DataFrame) -> str:
    """``samples.csv``'s text for a table with (some of) :data:`SAMPLE_COLUMNS`; absent columns stay empty."""
    frame = pd.DataFrame({c: records[c] if c in records.columns else "" for c in SAMPLE_COLUMNS})
    return frame.to_csv(index=False)


def parse_samples(text: str) -> pd.DataFrame:
    """Samples as written, every cell a string (so a record compares equal to its own round trip)."""
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).set_index("sample_id", drop=False)


def ids_hash(fold: Fold) -> str:
    text = json.dumps([list(fold.train_ids), list(fold.test_ids)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_hash(samples: pd.DataFrame, fold: Fold) -> str:
    """A hash of the records of every sample the fold trains on or tests (from :func:`parse_samples`)."""
    ids = [*fold.train_ids, *fold.test_ids]
    rows = samples.loc[ids, list(SAMPLE_COLUMNS)].to_numpy().tolist()
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def _cell(samples: pd.DataFrame, sample_id: Hashable, column: str) -> str:
    """One cell of a :func:`parse_samples` table (pandas-stubs types it as any scalar; it is read as str)."""
    return cast(str, samples.at[sample_id, column])


def describe_changes(old: pd.DataFrame, new: pd.DataFrame, limit: int = 5) -> list[str]:
    """Human lines naming the samples whose records differ between two :func:`parse_samples` tables."""
    lines = []
    removed = [s for s in old.index if s not in new.index]
    added = [s for s in new.index if s not in old.index]
    changed = []
    for sid in old.index.intersection(new.index, sort=False):
        diffs = [
            f"{c} {_cell(old, sid, c) or '-'} -> {_cell(new, sid, c) or '-'}"
            for c in SAMPLE_COLUMNS
            if _cell(old, sid, c) != _cell(new, sid, c)
        ]
        if diffs:
            changed.append(f"{sid} ({'; '.join(diffs)})")
    for what, items in (("changed", changed), ("removed", removed), ("added", added)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            lines.append(f"{len(items)} sample(s) {what}: {', '.join(items[:limit])}{more}")
    return lines


# --------------------------------------------------------------------------------------------------
# may this run resume?


def check_resume(run_dir: str | Path, cfg: ExperimentConfig, folds: Sequence[Fold], samples_csv: str) -> list[str]:
    """Decide whether ``run_dir`` may (re)start with these settings and data; writes nothing.

    Returns:
        Log lines describing the folder's state (empty for a new folder).

    Raises:
        ConfigError: the folder holds finished folds trained with other settings or on other data; the
            message names the settings or samples that changed and how to start afresh.
    """
    import yaml

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"the run folder {run_dir} is a file; choose another folder with --output")
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        return []
    afresh = f"to start afresh, choose another folder with --output or delete {run_dir}"
    old_cfg = from_dict(ExperimentConfig, yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {})
    a, b = training_identity(old_cfg), training_identity(cfg)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:5])
        raise ConfigError(
            f"{run_dir} holds a run with other settings ({shown}); resume it with the same config, or {afresh}"
        )
    finished = [
        (seed, fold, result)
        for seed in cfg.eval.seeds
        for fold in folds
        if (result := read_result(run_dir, seed, fold)) is not None
    ]
    if not finished:
        return [f"{run_dir} holds no finished fold; starting it again"]
    new = parse_samples(samples_csv)
    old_path = run_dir / SAMPLES_FILE
    if not old_path.is_file():
        raise ConfigError(
            f"{run_dir} has finished folds but no {SAMPLES_FILE}, so it cannot be checked that they "
            f"were trained on the same data; {afresh}"
        )
    old = parse_samples(old_path.read_text(encoding="utf-8"))
    changes = describe_changes(old, new)
    if changes:
        raise ConfigError(
            f"the data changed since {run_dir} was started, so its {len(finished)} finished fold "
            f"run(s) were trained on other data: {'; '.join(changes)}. Resuming would mix two "
            f"versions of the data; {afresh}"
        )
    for seed, fold, result in finished:
        if result.get("ids_hash") != ids_hash(fold) or result.get("data_hash") != data_hash(new, fold):
            raise ConfigError(
                f"{fold_dir(run_dir, seed, fold)} was trained on other samples than fold {fold.name} "
                f"has now (the data, the label scheme or the folds changed); {afresh}"
            )
    return [f"resuming the run in {run_dir}: {len(finished)} fold run(s) finished"]


def is_finished(run_dir: str | Path, seed: int, fold: Fold) -> bool:
    return (fold_dir(run_dir, seed, fold) / RESULT_FILE).is_file()


def excluded_text(excluded: pd.DataFrame) -> str:
    cols = [c for c in EXCLUDED_COLUMNS if c in excluded.columns]
    return excluded[cols].to_csv(index=False)
