"""Run an experiment's folds into a run folder, resumably; then pool the predictions and report.

For every seed and fold: build a fresh model, train it for the fixed budget on the fold's training
subjects (optionally minus a validation split of them), predict the test subjects, and write the fold's
outputs. A fold is finished when its ``result.json`` exists: it is written last, atomically, after the
predictions and the checkpoint, so an interrupted run resumes by skipping finished folds, and its final
metrics are identical to those of an uninterrupted run (they are always computed from the files).

A fold is computed (:func:`compute_fold`, which writes nothing) and then written (:func:`write_fold`), so
that an executor may compute folds elsewhere and still have one process write the run folder:
:class:`SequentialExecutor` runs them here, one after the other (the default), and
``training.ray_executor.RayExecutor`` runs them as Ray tasks (``docs/scale-out.md``).

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
from typing import Any, Protocol

import numpy as np
import pandas as pd

from hlora_mer import __version__
from hlora_mer import run_folder as rf
from hlora_mer.config import ExperimentConfig, to_yaml
from hlora_mer.errors import UserError
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
    on_status: Callable[[int, int, int], None] | None = None  # (folds done, running, failed): parallel executors


ModelFactory = Callable[[ExperimentConfig], Any]


def default_model_factory(cfg: ExperimentConfig) -> Any:
    """``build_model(cfg.model)`` on a copy of the backbone loaded once per process (``models.pool``)."""
    from hlora_mer.models.pool import build_model_from_pool

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


@dataclass
class FoldOutput:
    """What one fold run produced, written into the run folder by :func:`write_fold`.

    Files as text and bytes, so that a fold trained in another process or on another machine can send
    them back to the one process that writes the run folder.
    """

    job: FoldRun
    record: dict[str, Any]  # result.json
    predictions: str | None  # the fold's predictions.csv (None without test subjects)
    checkpoint: dict[str, bytes] | None  # file name -> bytes (None with train.save_checkpoints=false)


def compute_fold(
    cfg: ExperimentConfig,
    source: DataSource,
    job: FoldRun,
    *,
    samples: pd.DataFrame | None = None,
    model_factory: ModelFactory = default_model_factory,
    on_step: Callable[[int, int, float], None] | None = None,
) -> FoldOutput:
    """Train and evaluate one fold for one seed; writes nothing."""
    from hlora_mer.evaluation.metrics import scores
    from hlora_mer.models.checkpoint import checkpoint_files, label_scheme_record

    fold, seed, train_ids, val_ids = job.fold, job.seed, job.train_ids, job.val_ids
    fold_seed = derive_seed(seed, fold.index)
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
        on_step=on_step,
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
    predictions = None
    if test_set is not None:
        pred = predict_with(model, test_set, cfg, device)
        leaky_pred = result.leaky_best["predictions"] if result.leaky_best else None
        predictions = _predictions_frame(pred, source, fold, seed, leaky_pred).to_csv(index=False)
        if result.leaky_best:
            record["leaky_best"] = {"step": result.leaky_best["step"], "acc": result.leaky_best["acc"]}
    checkpoint = None
    if cfg.train.save_checkpoints:
        checkpoint = checkpoint_files(
            model,
            cfg.model,
            list(source.classes),
            {
                "experiment": cfg.name,
                "protocol": cfg.eval.protocol,
                "label_scheme": cfg.data.label_scheme,
                # the scheme written out, so that predict --dataset scores with it where it is not registered
                "label_scheme_definition": label_scheme_record(cfg.data),
                # how a new clip must be prepared for this model: the same sampling and alignment
                "preprocess": preprocess_params(cfg).identity(),
                "fold": fold.name,
                "seed": seed,
                "train_subjects": sorted(
                    source.table.set_index("sample_id").loc[list(train_ids), "subject"].astype(str).unique()
                ),
            },
        )
    return FoldOutput(job, record, predictions, checkpoint)


def write_fold(run_dir: Path, output: FoldOutput) -> None:
    """Write a fold's files; ``result.json`` last, which marks the fold finished."""
    from hlora_mer.models.checkpoint import write_files

    out = rf.fold_dir(run_dir, output.job.seed, output.job.fold)
    if output.predictions is not None:
        atomic_write_text(out / rf.FOLD_PREDICTIONS, output.predictions)
    checkpoint = output.checkpoint
    if checkpoint is not None:
        atomic_write_dir(out / rf.CHECKPOINT_DIR, lambda tmp: write_files(tmp, checkpoint))
    atomic_write_text(out / rf.RESULT_FILE, json.dumps(output.record, indent=1, default=float) + "\n")


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
    cb = callbacks or RunCallbacks()
    output = compute_fold(cfg, source, job, samples=samples, model_factory=model_factory, on_step=cb.on_step)
    write_fold(run_dir, output)
    return output.record


def predict_with(model: Any, dataset: Any, cfg: ExperimentConfig, device: Any) -> Predictions:
    from hlora_mer.training.engine import predict

    return predict(model, dataset, batch_size=cfg.train.batch_size, device=device, precision=cfg.train.precision)


def with_feature_cache(
    cfg: ExperimentConfig,
    source: DataSource,
    model_factory: ModelFactory = default_model_factory,
    *,
    in_memory: bool = False,
) -> DataSource:
    """``source`` serving cached frozen-prefix tokens (filled now for every sample), or ``source`` itself
    when the cache is off or impossible (full fine-tuning). Every fold's model has the same frozen prefix
    (the pretrained or seeded backbone), so one fill serves all folds and seeds. ``in_memory`` keeps the
    tokens in RAM instead of the cache folder (to ship them to machines that do not share the disk)."""
    from hlora_mer.training.feature_cache import prepare_cached_source, switched_off

    if switched_off(cfg):  # no model needs building to know that
        return source
    model = model_factory(cfg)
    if not hasattr(model, "forward_from_prefix"):
        logger.info("frozen-prefix feature cache: off (the model has no prefix / suffix split)")
        return source
    prepared = prepare_cached_source(cfg, source, model, resolve_device(cfg.train.device), in_memory=in_memory)
    del model
    return prepared[0] if prepared is not None else source


@dataclass
class PreparedRun:
    """A run folder made ready (or checked for resuming), with the fold runs still to do."""

    cfg: ExperimentConfig  # resolved: model.num_classes from the classes
    run_dir: Path
    source: DataSource
    samples: pd.DataFrame  # the samples' records (run_folder.parse_samples), for the folds' data hashes
    jobs: list[FoldRun]
    pending: list[FoldRun]  # not finished yet


def prepare_run(
    cfg: ExperimentConfig, run_dir: str | Path, source: DataSource, *, excluded: pd.DataFrame | None = None
) -> PreparedRun:
    """Plan the fold runs of ``cfg`` and create (or check, to resume) the run folder; trains nothing.

    Raises:
        ConfigError: an impossible protocol or split, or an existing run with other settings or data.
    """
    run_dir = Path(run_dir)
    cfg = resolve_config(cfg, tuple(source.classes))
    jobs = plan_fold_runs(cfg, source.table)
    folds = list({job.fold.name: job.fold for job in jobs}.values())
    samples = prepare_run_dir(run_dir, cfg, source, folds, excluded)
    pending = [job for job in jobs if not rf.is_finished(run_dir, job.seed, job.fold)]
    return PreparedRun(cfg, run_dir, source, samples, jobs, pending)


@dataclass(frozen=True)
class FoldFailure:
    """A fold run that failed for good; the run folder keeps every other fold and resumes."""

    run_dir: Path
    fold: str
    seed: int
    error: str

    def describe(self) -> str:
        return f"{self.run_dir}: fold {self.fold} seed {self.seed}: {self.error}"


class FoldsFailed(UserError):
    """Some fold runs failed for good; the finished ones are kept and the same command resumes."""

    def __init__(self, failures: list[FoldFailure], total: int) -> None:
        self.failures = failures
        lines = "\n".join(f"  {f.describe()}" for f in failures)
        super().__init__(
            f"{len(failures)} of {total} fold runs failed:\n{lines}\n"
            "Every other fold is saved in its run folder. Fix the cause and run the same command again: it "
            "resumes and runs only the folds that are not finished."
        )


class SequentialExecutor:
    """Every fold run in this process, one after the other (the default executor)."""

    def run(
        self,
        runs: list[PreparedRun],
        *,
        model_factory: ModelFactory = default_model_factory,
        callbacks: RunCallbacks | None = None,
    ) -> list[FoldFailure]:
        """Run the pending folds of ``runs``, writing each into its run folder; an error stops the run."""
        cb = callbacks or RunCallbacks()
        if cb.on_start:
            total = sum(len(r.jobs) for r in runs)
            cb.on_start(total, total - sum(len(r.pending) for r in runs))
        for run in runs:
            source = with_feature_cache(run.cfg, run.source, model_factory) if run.pending else run.source
            pending = {(job.seed, job.fold.name) for job in run.pending}
            for job in run.jobs:
                fold, seed = job.fold, job.seed
                if (seed, fold.name) not in pending:
                    logger.debug("fold %s seed %d already finished; skipped", fold.name, seed)
                    if cb.on_fold_end:
                        cb.on_fold_end(fold.name, seed, True)
                    continue
                if cb.on_fold_start:
                    cb.on_fold_start(fold.name, seed, run.cfg.train.steps)
                run_fold(
                    run.cfg, source, job, run.run_dir, samples=run.samples, model_factory=model_factory, callbacks=cb
                )
                if cb.on_fold_end:
                    cb.on_fold_end(fold.name, seed, False)
        return []


class Executor(Protocol):
    """Runs the pending folds of prepared runs and writes them (``SequentialExecutor``, ``RayExecutor``)."""

    def run(
        self,
        runs: list[PreparedRun],
        *,
        model_factory: ModelFactory = ...,
        callbacks: RunCallbacks | None = None,
    ) -> list[FoldFailure]: ...


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    source: DataSource,
    *,
    excluded: pd.DataFrame | None = None,
    model_factory: ModelFactory = default_model_factory,
    callbacks: RunCallbacks | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run (or resume) every fold of every seed, then pool and report; returns ``metrics.json``'s content.

    Args:
        cfg: the experiment; ``model.num_classes`` is set from ``source.classes``.
        run_dir: the run folder (created; an existing one must hold the same training settings).
        source: the labelled samples and their Dataset factory (``training.data``).
        excluded: rows left out before training, written to ``excluded.csv``.
        model_factory: ``cfg -> fresh model``, called once per fold (default: ``build_model(cfg.model)`` on a
            copy of the backbone loaded once per process, ``models.pool``).
        callbacks: progress hooks.
        executor: where the folds run (default: ``SequentialExecutor``, here, one after the other).

    Raises:
        FoldsFailed: some folds failed for good (only an executor that goes on past a failure reports
            this); the others are saved and the run resumes.
    """
    from hlora_mer.evaluation.report import finalize_run

    run = prepare_run(cfg, run_dir, source, excluded=excluded)
    failures = (executor or SequentialExecutor()).run([run], model_factory=model_factory, callbacks=callbacks)
    if failures:
        raise FoldsFailed(failures, len(run.jobs))
    return finalize_run(run.run_dir)
