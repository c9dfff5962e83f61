"""``hlora-mer train``, ``hlora-mer evaluate`` and ``hlora-mer report``: protocols, metrics and run folders.

Protocols, honesty rules and the run folder layout: ``docs/training.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser(
        "train",
        help="train and evaluate an experiment (LOSO, composite, HDE or all subjects) into a run folder",
        description="Run every fold of an experiment config with a fixed training budget, pool the test "
        "predictions and write predictions.csv, metrics.json and report.md. An existing run folder with the "
        "same settings is resumed: finished folds are skipped.",
    )
    t.add_argument("-c", "--config", required=True, help="experiment YAML (see configs/)")
    t.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. data.roots.casme2=/data/CASME2 train.steps=300",
    )
    t.add_argument(
        "-o", "--output", help="run folder (default: <output_dir>/<name>; sweeps: one subfolder per variant)"
    )
    t.add_argument(
        "--variant",
        action="append",
        default=[],
        help="run only this sweep variant (repeatable; default: every variant)",
    )
    t.add_argument("--dry-run", action="store_true", help="print the resolved config(s) and exit")
    scale = t.add_argument_group("scale-out (docs/scale-out.md)")
    scale.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: every fold here, one after the other (default); ray: every fold of every variant as a Ray "
        "task (needs pip install 'hlora-mer[ray]')",
    )
    scale.add_argument(
        "--address", help="Ray cluster to join, e.g. auto (default: start a local Ray instance for this run)"
    )
    scale.add_argument("--cpus-per-fold", type=float, default=1.0, help="CPUs per fold task (default 1)")
    scale.add_argument("--gpus-per-fold", type=float, default=0.0, help="GPUs per fold task, e.g. 1 or 0.5 (default 0)")
    scale.add_argument(
        "--max-retries", type=int, default=2, help="reruns of a fold whose worker or node died (default 2)"
    )
    scale.add_argument(
        "--no-shared-disk",
        action="store_true",
        help="the Ray nodes do not see this machine's data and cache folders: the feature cache is filled here, "
        "in memory, and sent to them",
    )
    t.set_defaults(func=train)

    e = subparsers.add_parser(
        "evaluate",
        help="recompute predictions.csv, metrics.json and report.md of run folders from their fold files",
        description="Pool the finished folds of each run folder again (e.g. after an interruption, or with "
        "another bootstrap size) without training.",
    )
    e.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    e.add_argument("--bootstrap", type=int, help="bootstrap resamples (overrides the run's eval.bootstrap)")
    e.set_defaults(func=evaluate)

    r = subparsers.add_parser(
        "report",
        help="put several runs side by side as a paper-style Markdown table",
        description="One row per run (a sweep folder expands to its variants), the paper-style columns of each. "
        "Runs that differ in N_l (model.lora.last_n_blocks) also get a plot of ACC and UF1 against N_l (Fig. 3), "
        "written beside -o FILE, or into the sweep folder.",
    )
    r.add_argument("runs", nargs="+", metavar="RUN", help="run folders or sweep folders")
    r.add_argument("--metrics", help="comma-separated columns instead of each run's eval.metrics, e.g. acc,uf1,uar")
    r.add_argument("-o", "--output", help="also write the table to this file")
    r.set_defaults(func=report)


class _Bars:
    """tqdm bars for folds and steps, driven by the runner's callbacks."""

    def __init__(self, quiet: bool, label: str) -> None:
        from tqdm import tqdm

        self.tqdm, self.quiet, self.label = tqdm, quiet, label
        self.folds: Any = None
        self.steps: Any = None

    def on_start(self, total: int, finished: int) -> None:
        self.folds = self.tqdm(
            total=total, initial=finished, desc=f"{self.label} folds", unit="fold", disable=self.quiet, position=0
        )

    def on_fold_start(self, fold: str, seed: int, steps: int) -> None:
        self.folds.set_postfix_str(f"{fold} seed {seed}")
        self.steps = self.tqdm(total=steps, desc=f"  {fold}", unit="step", leave=False, disable=self.quiet, position=1)

    def on_step(self, step: int, total: int, loss: float) -> None:
        self.steps.update(1)
        self.steps.set_postfix(loss=f"{loss:.4f}")

    def on_status(self, done: int, running: int, failed: int) -> None:
        self.folds.set_postfix_str(f"{running} running, {failed} failed")

    def on_fold_end(self, fold: str, seed: int, skipped: bool) -> None:
        if self.steps is not None:
            self.steps.close()
            self.steps = None
        if not skipped:
            self.folds.update(1)

    def close(self) -> None:
        if self.steps is not None:
            self.steps.close()
        if self.folds is not None:
            self.folds.close()


def check_outputs(runs: dict[Path, Any], fix: str = "choose another folder with -o") -> None:
    """Before any work: each run folder, and the caches its config writes, can be created and written.

    Creates nothing; raises UserError naming the first folder that cannot be written and why.
    """
    from hlora_mer.files import check_writable_dir

    for run_dir, cfg in runs.items():
        check_writable_dir(run_dir, "run folder", fix)
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else Path(cfg.output_dir) / "cache"
        check_writable_dir(cache, "cache folder (data.cache_dir)", "set data.cache_dir=FOLDER to a writable folder")
        if cfg.train.feature_cache_dir:
            check_writable_dir(
                cfg.train.feature_cache_dir,
                "feature cache folder (train.feature_cache_dir)",
                "set train.feature_cache_dir=FOLDER to a writable folder, or null",
            )


def prepare_variant(cfg: Any, run_dir: Path, quiet: bool) -> Any:
    """Read and preprocess the data of ``cfg`` (with a progress bar) and make its run folder ready."""
    from tqdm import tqdm

    from hlora_mer.models.backbones import resolve_spec
    from hlora_mer.training.data import build_source
    from hlora_mer.training.runner import plan_fold_runs, prepare_run

    resolve_spec(cfg.model.backbone.name)  # an unknown backbone fails before any data is read
    pbar: list[Any] = []  # created once the number of clips is known, i.e. after the data was read
    try:
        source, excluded = build_source(
            cfg,
            on_plan=lambda n: pbar.append(tqdm(total=n, desc=f"{cfg.name}: preprocess", unit="clip", disable=quiet)),
            progress=lambda _result: pbar[0].update(1),
            check=lambda table: plan_fold_runs(cfg, table),  # an impossible protocol fails before preprocessing
        )
    finally:
        for bar in pbar:
            bar.close()
    return prepare_run(cfg, run_dir, source, excluded=excluded)


def execute(runs: list[Any], executor: Any, quiet: bool, label: str) -> None:
    """Run the pending folds of prepared runs with progress bars; raise FoldsFailed when some failed for good."""
    from hlora_mer.training.runner import FoldsFailed, RunCallbacks

    bars = _Bars(quiet, label)
    try:  # log lines already go above the bars: cli.main redirects the package's handler through tqdm
        failures = executor.run(
            runs,
            callbacks=RunCallbacks(bars.on_start, bars.on_fold_start, bars.on_step, bars.on_fold_end, bars.on_status),
        )
    finally:
        bars.close()
    if failures:
        raise FoldsFailed(failures, sum(len(r.jobs) for r in runs))


def run_variant(cfg: Any, run_dir: Path, quiet: bool) -> dict[str, Any]:
    """Preprocess, train every fold here and pool one run; returns its ``metrics.json`` content."""
    from hlora_mer.evaluation.report import finalize_run
    from hlora_mer.training.runner import SequentialExecutor

    execute([prepare_variant(cfg, run_dir, quiet)], SequentialExecutor(), quiet, cfg.name)
    return finalize_run(run_dir)


def make_executor(args: argparse.Namespace) -> Any:
    """The executor the command line asks for; a Ray one fails now, before any work, when Ray is missing."""
    from hlora_mer.training.runner import SequentialExecutor

    if getattr(args, "executor", "local") == "local":
        ray_only = [
            flag
            for flag, used in [
                ("--address", args.address is not None),
                ("--cpus-per-fold", args.cpus_per_fold != 1.0),
                ("--gpus-per-fold", args.gpus_per_fold != 0.0),
                ("--no-shared-disk", args.no_shared_disk),
            ]
            if used
        ]
        if ray_only:
            from hlora_mer.errors import UserError

            raise UserError(f"{', '.join(ray_only)} only apply with --executor ray; add it, or leave them out")
        return SequentialExecutor()
    from hlora_mer.training.ray_executor import RayExecutor, import_ray

    import_ray()
    executor = RayExecutor(
        args.address,
        cpus_per_fold=args.cpus_per_fold,
        gpus_per_fold=args.gpus_per_fold,
        max_retries=args.max_retries,
        shared_disk=not args.no_shared_disk,
    )
    executor.start()  # an unreachable --address, or resources no node has, fail now: before any work
    return executor


def train(args: argparse.Namespace) -> int:
    from hlora_mer.config import apply_overrides, load_experiment, sweep_variants, to_yaml
    from hlora_mer.errors import ConfigError

    cfg = load_experiment(args.config, args.overrides)
    variants = sweep_variants(cfg)
    if args.variant:
        unknown = [v for v in args.variant if v not in variants]
        if unknown:
            raise ConfigError(f"unknown sweep variant(s) {unknown}; the config has: {', '.join(variants) or 'none'}")
        variants = {k: v for k, v in variants.items() if k in args.variant}
    base = Path(args.output) if args.output else Path(cfg.output_dir) / cfg.name
    if args.output and cfg.data.cache_dir is None:
        # The aligned clips are shared by every run beside this one; they do not belong to a single run.
        variants = {
            k: apply_overrides(v, [f"data.cache_dir={base.resolve().parent / 'cache'}"]) for k, v in variants.items()
        }
    if args.dry_run:
        for name, vcfg in variants.items():
            print(f"# variant {name}" if name else f"# {vcfg.name}")
            print(to_yaml(vcfg))
        return 0
    runs = {base / name if name else base: vcfg for name, vcfg in variants.items()}
    check_outputs(runs)  # an unwritable folder fails now, not after the preprocessing
    executor = make_executor(args)
    try:
        return _train_runs(args, cfg, runs, executor)
    finally:
        if hasattr(executor, "close"):
            executor.close()


def _train_runs(args: argparse.Namespace, cfg: Any, runs: dict[Path, Any], executor: Any) -> int:
    from hlora_mer.evaluation.report import compare_runs, finalize_run

    quiet = bool(getattr(args, "quiet", False))
    # Locally, one variant after the other (its scores print as soon as it is done); on Ray, every fold of
    # every variant at once.
    batches = [list(runs.items())] if getattr(args, "executor", "local") == "ray" else [[item] for item in runs.items()]
    for batch in batches:
        prepared = [prepare_variant(vcfg, run_dir, quiet) for run_dir, vcfg in batch]
        execute(prepared, executor, quiet, batch[0][1].name if len(batch) == 1 else cfg.name)
        for run_dir, vcfg in batch:
            metrics = finalize_run(run_dir)
            # The scores and where they are, also with -q: quiet drops progress and info, not the result.
            print(f"{vcfg.name}: run folder {run_dir}")
            print(result_text(run_dir, metrics))
    if len(runs) > 1:
        print(compare_runs(list(runs)))
    return 0


def result_text(run_dir: Path, metrics: dict[str, Any]) -> str:
    """The run's scores as a table; for a run without test subjects, where its model is and how to use it."""
    from hlora_mer.evaluation.report import compare_runs, interval_text

    if metrics.get("table"):
        interval = interval_text(metrics)
        return compare_runs([run_dir]) + (f"{interval}\n" if interval else "")
    found = sorted(run_dir.glob("folds/seed*/all/checkpoint"))
    where = ", ".join(map(str, found)) or "none saved (train.save_checkpoints=false)"
    model = run_dir if len(found) == 1 else (found[0] if found else "CHECKPOINT")
    return (
        f"trained on every subject (eval.protocol=all), so there are no test scores. The model: {where}\n"
        f"apply it to new clips with: hlora-mer predict VIDEO_OR_FRAME_FOLDER... --model {model}\n"
    )


def evaluate(args: argparse.Namespace) -> int:
    from hlora_mer.config import apply_overrides, to_yaml
    from hlora_mer.evaluation.report import compare_runs, finalize_run
    from hlora_mer.files import atomic_write_text
    from hlora_mer.run_folder import CONFIG_FILE, read_config

    for run in map(Path, args.runs):
        if args.bootstrap is not None:
            cfg = read_config(run)
            atomic_write_text(run / CONFIG_FILE, to_yaml(apply_overrides(cfg, [f"eval.bootstrap={args.bootstrap}"])))
        finalize_run(run)
        if not args.quiet:
            print(f"{run}: metrics.json and report.md rewritten")
    print(compare_runs(args.runs))  # the scores, also with -q
    return 0


def report(args: argparse.Namespace) -> int:
    from hlora_mer.evaluation.report import compare_runs
    from hlora_mer.files import atomic_write_text, check_writable_file

    if args.output:
        check_writable_file(args.output, "report file", "choose another file with -o")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    table = compare_runs(args.runs, metrics)
    figure = _sweep_figure(args.runs, args.output)
    if figure is not None and figure.paths:
        png = next(p for p in figure.paths if p.suffix == ".png")
        link = png.name if args.output else str(png)
        table += f"\n![{figure.title}]({link})\n"
    if args.output:
        atomic_write_text(args.output, table)
    sys.stdout.write(table)
    if figure is not None:
        if figure.paths:
            print(f"{figure.title}: {', '.join(str(p) for p in figure.paths)}")
        else:
            print(f"{figure.title}: figure missing: {figure.missing}")
    return 0


def _sweep_figure(paths: list[str], output: str | None) -> Any:
    """Fig. 3 (ACC and UF1 against N_l) when the runs span two or more N_l: beside ``output`` (``FILE`` ->
    ``FILE-stem_nl_sweep.png/.pdf``), else in the one sweep folder given; None when there is nothing to draw
    or nowhere to put it."""
    from hlora_mer.evaluation.report import find_runs
    from hlora_mer.run_folder import METRICS_FILE
    from hlora_mer.viz.figures import NL_SWEEP, is_nl_sweep, sweep_figure, sweep_points

    try:
        runs = find_runs(paths)
    except Exception as err:  # the table is the result; the figure never fails the report
        logger.debug("no N_l figure: %s", err)
        return None
    if output:
        out = Path(output)
        stem = out.parent / f"{out.stem}_{NL_SWEEP}"
    elif len(paths) == 1 and not (Path(paths[0]) / METRICS_FILE).is_file():
        stem = Path(paths[0]) / NL_SWEEP
    else:
        try:
            several = is_nl_sweep(sweep_points(runs))
        except Exception:  # the table is printed anyway; the figure is a bonus
            several = False
        if several:
            logger.info("these runs span several N_l: pass -o FILE to also draw ACC and UF1 against N_l")
        return None
    return sweep_figure(runs, stem)
