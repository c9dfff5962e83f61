"""Run an experiment's folds into a run folder, resumably; then pool the predictions and report.

For every seed and fold: build a fresh model, train it for the fixed budget on the fold's training
subjects (optionally minus a validation split of them), predict the test subjects, and write the fold's
outputs. A fold is finished when its ``result.json`` exists: it is written last, atomically, after the
predictions and the checkpoint, so an interrupted run resumes by skipping finished folds, and its final
metrics are identical to those of an uninterrupted run (they are always computed from the files).

The run folder's layout and the resume check live in ``hlora_mer.run_folder``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hlora_mer import __version__
from hlora_mer import run_folder as rf
from hlora_mer.config import ExperimentConfig, to_yaml
from hlora_mer.files import atomic_write_dir, atomic_write_text
from hlora_mer.training.data import DataSource, preprocess_params, sample_records
from hlora_mer.training.engine import Predictions, derive_seed, resolve_device, seed_everything, train_fixed_budget
from hlora_mer.training.splits import Fold, make_folds, validation_split

logger = logging.getLogger(__name__)


@dataclass
class RunCallbacks:
    """Progress hooks; the CLI draws bars with them, the library never does."""

    on_start: Callable[[int, int], None] | None = None  # (fold runs in total, already finished)
    on_fold_start: Callable[[str, int, int], None] | None = None  # (fold, seed, steps)
    on_step: Callable[[int, int, float], None] | None = None  # (step, steps, loss)
    on_fold_end: Callable[[str, int, bool], None] | None = None  # (fold, seed, skipped)


ModelFactory = Callable[[ExperimentConfig], Any]


def default_model_factory(cfg: ExperimentConfig) -> Any:
    """``build_model(cfg.model)`` on a copy of the backbone loaded once per process (``models.backbone_pool``)."""
    from hlora_mer.models.backbone_pool import build_model_from_pool

    return build_model_from_pool(cfg.model)


def git_commit() -> dict[str, Any]:
    """The commit of the source tree this package runs from, and whether it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def resolve_config(cfg: ExperimentConfig, classes: tuple[str, ...]) -> ExperimentConfig:
    """``cfg`` with ``model.num_classes`` set from the label scheme's classes."""
    if cfg.model.num_classes != len(classes):
        logger.info("model.num_classes set to %d from label scheme %s", len(classes), cfg.data.label_scheme)
    model = dataclasses.replace(cfg.model, num_classes=len(classes))
    return dataclasses.replace(cfg, model=model, sweep={})


# --------------------------------------------------------------------------------------------------
# the run


def prepare_run_dir(
    run_dir: Path, cfg: ExperimentConfig, source: DataSource, folds: list[Fold], excluded: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Create the run folder, or check that an existing one may resume with these settings and this data.

    Everything is checked before anything is written: a refused resume leaves every file as it was.

    Returns:
        The samples' records (``run_folder.parse_samples``), for the folds' data hashes.

    Raises:
        ConfigError: an existing run was trained with other settings or on other data.
    """
    samples_csv = rf.samples_text(sample_records(source))
    for line in rf.check_resume(run_dir, cfg, folds, samples_csv):
        logger.info("%s", line)
    import torch

    run_info = {
        "hlora_mer_version": __version__,
        **git_commit(),
        "torch_version": torch.__version__,
        "device": str(resolve_device(cfg.train.device)),
        "protocol": cfg.eval.protocol,
        "classes": list(source.classes),
        "label_scheme": cfg.data.label_scheme,
        "samples": len(source.table),
        "subjects": int(source.table["subject"].nunique()),
        "data": source.info,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / rf.CONFIG_FILE, to_yaml(cfg))
    atomic_write_text(run_dir / rf.RUN_FILE, json.dumps(run_info, indent=2, default=str) + "\n")
    atomic_write_text(run_dir / rf.FOLDS_FILE, json.dumps([f.to_dict() for f in folds], indent=1) + "\n")
    atomic_write_text(run_dir / rf.SAMPLES_FILE, samples_csv)
    if excluded is not None:
        atomic_write_text(run_dir / rf.EXCLUDED_FILE, rf.excluded_text(excluded))
    return rf.parse_samples(samples_csv)


def _predictions_frame(
    pred: Predictions, source: DataSource, fold: Fold, seed: int, leaky: Predictions | None
) -> pd.DataFrame:
    rows = source.table.set_index(source.table["sample_id"].astype(str)).loc[pred.sample_ids]
    classes = list(source.classes)
    frame = pd.DataFrame(
        {
            "sample_id": pred.sample_ids,
            "subject": rows["subject"].astype(str).to_numpy(),
            "dataset": rows["dataset"].astype(str).to_numpy(),
            "label": [classes[i] for i in pred.labels],
            "label_index": pred.labels,
            "prediction": [classes[i] for i in pred.preds],
            "prediction_index": pred.preds,
        }
    )
    for i, c in enumerate(classes):
        frame[f"prob_{c}"] = pred.probs[:, i].astype(np.float64) if len(pred.probs) else []
    frame["fold"] = fold.name
    frame["seed"] = seed
    if leaky is not None:
        if list(leaky.sample_ids) != list(pred.sample_ids):
            raise AssertionError("leaky predictions are not in test order")
        frame["leaky_prediction_index"] = leaky.preds
    return frame


@dataclass(frozen=True)
class FoldRun:
    """One fold for one seed, with the training ids left after its validation split."""

    seed: int
    fold: Fold
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]


def plan_fold_runs(cfg: ExperimentConfig, table: pd.DataFrame) -> list[FoldRun]:
    """Every (seed, fold) of ``cfg`` on the labelled ``table``, validation splits drawn.

    Cheap, and called before any work so that a protocol or split that cannot be made fails at once.

    Raises:
        ConfigError: e.g. more validation subjects asked for than a fold trains on.
    """
    folds = make_folds(table, cfg.eval.protocol, cfg.eval.directions, cfg.eval.folds)
    runs = []
    for seed in cfg.eval.seeds:
        for fold in folds:
            train_ids, val_ids = validation_split(
                table, fold.train_ids, cfg.train.val_subjects, derive_seed(seed, fold.index, 1), fold=fold.name
            )
            runs.append(FoldRun(seed, fold, train_ids, val_ids))
    return runs


def run_fold(
    cfg: ExperimentConfig,
    source: DataSource,
    job: FoldRun,
    run_dir: Path,
    *,
    samples: pd.DataFrame | None = None,
    model_factory: ModelFactory = default_model_factory,
    callbacks: RunCallbacks | None = None,
) -> dict:
    """Train and evaluate one fold for one seed; write its files; return its result record."""
    from hlora_mer.evaluation.metrics import scores

    cb = callbacks or RunCallbacks()
    fold, seed, train_ids, val_ids = job.fold, job.seed, job.train_ids, job.val_ids
    fold_seed = derive_seed(seed, fold.index)
    out = rf.fold_dir(run_dir, seed, fold)
    if samples is None:
        samples = rf.parse_samples(rf.samples_text(sample_records(source)))
    seed_everything(fold_seed)  # the fresh model's random init (LoRA A, fusion, head) is part of the seed
    model = model_factory(cfg)
    device = resolve_device(cfg.train.device)
    m = len(source.classes)
    train_set = source.dataset(train_ids, train=True)
    val_set = source.dataset(val_ids, train=False) if val_ids else None
    test_set = source.dataset(fold.test_ids, train=False) if fold.test_ids else None
    leaky = cfg.eval.leaky_best_epoch and test_set is not None
    logger.info(
        "fold %s (seed %d): %d train, %d val, %d test samples",
        fold.name,
        seed,
        len(train_ids),
        len(val_ids),
        len(fold.test_ids),
    )
    result = train_fixed_budget(
        model,
        train_set,
        cfg.train,
        seed=fold_seed,
        device=device,
        val_set=val_set,
        test_set=test_set,
        leaky=leaky,
        score_fn=lambda p: scores(p.labels, p.preds, m),
        on_step=cb.on_step,
    )
    record: dict[str, Any] = {
        "fold": fold.name,
        "index": fold.index,
        "seed": seed,
        "fold_seed": fold_seed,
        "ids_hash": rf.ids_hash(fold),
        "data_hash": rf.data_hash(samples, fold),
        "n_train": len(train_ids),
        "n_val": len(val_ids),
        "n_test": len(fold.test_ids),
        "val_subjects": sorted(source.table.set_index("sample_id").loc[list(val_ids), "subject"].astype(str).unique())
        if val_ids
        else [],
        "steps": result.steps,
        "final_loss": result.final_loss,
        "selected_step": result.selected_step,
        "curve": [dataclasses.asdict(p) for p in result.curve],
        "losses": result.losses,
    }
    if test_set is not None:
        pred = predict_with(model, test_set, cfg, device)
        leaky_pred = result.leaky_best["predictions"] if result.leaky_best else None
        frame = _predictions_frame(pred, source, fold, seed, leaky_pred)
        atomic_write_text(out / rf.FOLD_PREDICTIONS, frame.to_csv(index=False))
        if result.leaky_best:
            record["leaky_best"] = {"step": result.leaky_best["step"], "acc": result.leaky_best["acc"]}
    if cfg.train.save_checkpoints:
        _save_checkpoint_atomic(
            model,
            cfg,
            out / rf.CHECKPOINT_DIR,
            source.classes,
            {
                "experiment": cfg.name,
                "protocol": cfg.eval.protocol,
                "label_scheme": cfg.data.label_scheme,
                # how a new clip must be prepared for this model: the same sampling and alignment
                "preprocess": preprocess_params(cfg).identity(),
                "fold": fold.name,
                "seed": seed,
                "train_subjects": sorted(
                    source.table.set_index("sample_id").loc[list(train_ids), "subject"].astype(str).unique()
                ),
            },
        )
    atomic_write_text(out / rf.RESULT_FILE, json.dumps(record, indent=1, default=float) + "\n")  # marks the fold done
    return record


def predict_with(model: Any, dataset: Any, cfg: ExperimentConfig, device: Any) -> Predictions:
    from hlora_mer.training.engine import predict

    return predict(model, dataset, batch_size=cfg.train.batch_size, device=device, precision=cfg.train.precision)


def _save_checkpoint_atomic(
    model: Any, cfg: ExperimentConfig, directory: Path, classes: tuple[str, ...], extra: dict[str, Any]
) -> None:
    from hlora_mer.models.checkpoint import save_checkpoint

    atomic_write_dir(directory, lambda tmp: save_checkpoint(model, cfg.model, tmp, list(classes), extra=extra))


def with_feature_cache(
    cfg: ExperimentConfig, source: DataSource, model_factory: ModelFactory = default_model_factory
) -> DataSource:
    """``source`` serving cached frozen-prefix tokens (filled now for every sample), or ``source`` itself
    when the cache is off or impossible (full fine-tuning). Every fold's model has the same frozen prefix
    (the pretrained or seeded backbone), so one fill serves all folds and seeds."""
    from hlora_mer.training.feature_cache import prepare_cached_source

    model = model_factory(cfg)
    if not hasattr(model, "forward_from_prefix"):
        logger.info("frozen-prefix feature cache: off (the model has no prefix / suffix split)")
        return source
    prepared = prepare_cached_source(cfg, source, model, resolve_device(cfg.train.device))
    del model
    return prepared[0] if prepared is not None else source


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    source: DataSource,
    *,
    excluded: pd.DataFrame | None = None,
    model_factory: ModelFactory = default_model_factory,
    callbacks: RunCallbacks | None = None,
) -> dict[str, Any]:
    """Run (or resume) every fold of every seed, then pool and report; returns ``metrics.json``'s content.

    Args:
        cfg: the experiment; ``model.num_classes`` is set from ``source.classes``.
        run_dir: the run folder (created; an existing one must hold the same training settings).
        source: the labelled samples and their Dataset factory (``training.data``).
        excluded: rows left out before training, written to ``excluded.csv``.
        model_factory: ``cfg -> fresh model`` (default ``build_model(cfg.model)``), called once per fold.
        callbacks: progress hooks.
    """
    from hlora_mer.evaluation.report import finalize_run

    run_dir = Path(run_dir)
    cfg = resolve_config(cfg, tuple(source.classes))
    jobs = plan_fold_runs(cfg, source.table)
    folds = list({job.fold.name: job.fold for job in jobs}.values())
    samples = prepare_run_dir(run_dir, cfg, source, folds, excluded)
    cb = callbacks or RunCallbacks()
    finished = {(job.seed, job.fold.name) for job in jobs if rf.is_finished(run_dir, job.seed, job.fold)}
    if len(finished) < len(jobs):
        source = with_feature_cache(cfg, source, model_factory)
    if cb.on_start:
        cb.on_start(len(jobs), len(finished))
    for job in jobs:
        fold, seed = job.fold, job.seed
        if (seed, fold.name) in finished:
            logger.debug("fold %s seed %d already finished; skipped", fold.name, seed)
            if cb.on_fold_end:
                cb.on_fold_end(fold.name, seed, True)
            continue
        if cb.on_fold_start:
            cb.on_fold_start(fold.name, seed, cfg.train.steps)
        run_fold(cfg, source, job, run_dir, samples=samples, model_factory=model_factory, callbacks=cb)
        if cb.on_fold_end:
            cb.on_fold_end(fold.name, seed, False)
    return finalize_run(run_dir)
