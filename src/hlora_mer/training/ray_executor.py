"""Fold runs as Ray tasks: on this machine, on a workstation's GPUs, or on a cluster started with ``ray start``.

A LOSO run is 26 to 94 independent folds, and a study (a sweep, several seeds) multiplies them. This
executor hands every pending fold of every run to Ray (one task per fold, with ``cpus_per_fold`` CPUs and
``gpus_per_fold`` GPUs) and keeps the rest as in a sequential run:

- **The driver writes.** A task trains and predicts and sends its files back (``runner.FoldOutput``);
  the driver writes them into the run folder as they arrive, so the folder is the same as a sequential
  run's (every fold file, ``predictions.csv`` and ``metrics.json`` byte for byte, with the same seeds and,
  on CPU, as many threads per fold as the sequential run used: ``cpus_per_fold``) and an interrupted
  driver resumes from the finished folds.
- **The frozen-prefix cache is filled once per run** before its folds start: by a Ray task into the
  shared cache folder (a lock per cache folder, ``training.feature_cache``, makes a second run with the
  same key wait and reuse), or, where the nodes share no disk, by the driver into memory, and then
  handed to the tasks through Ray's object store.
- **Faults.** A task whose worker or node dies is retried (``max_retries`` times); an error raised by
  the fold itself is not (it would fail again). A fold that fails for good is reported with its error
  and the others go on; the run folder stays resumable.
- **Load once.** Ray reuses its worker processes, and the default model factory keeps the loaded base
  backbone per process, so a worker reads the backbone weights once, not once per fold.

Recipes (one machine, several nodes, Slurm): ``docs/scale-out.md``.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from hlora_mer.errors import UserError
from hlora_mer.training.runner import (
    FoldFailure,
    FoldOutput,
    FoldRun,
    ModelFactory,
    PreparedRun,
    RunCallbacks,
    compute_fold,
    default_model_factory,
    with_feature_cache,
    write_fold,
)

logger = logging.getLogger(__name__)

INSTALL_HINT = "install it with: pip install 'hlora-mer[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a UserError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise UserError(f"--executor ray needs Ray, which is not installed ({err}); {INSTALL_HINT}") from None
    return ray


def _fill_task(cfg: Any, source: Any, model_factory: ModelFactory, in_memory: bool) -> Any:
    """Fill the frozen-prefix cache of one run (in a worker); returns the source that serves it."""
    return with_feature_cache(cfg, source, model_factory, in_memory=in_memory)


def _fold_task(
    cfg: Any, source: Any, job: FoldRun, samples: Any, model_factory: ModelFactory, log_level: int, threads: int
) -> FoldOutput:
    """Train and predict one fold (in a worker); the driver writes what it returns."""
    import torch

    from hlora_mer.training.engine import resolve_device
    from hlora_mer.training.feature_cache import CachedSource

    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)  # the CPUs the task reserved, no more
    if isinstance(source, CachedSource):  # on a GPU, hold the run's tokens there when they fit
        source.cache.to_device(source.table["sample_id"].astype(str).tolist(), resolve_device(cfg.train.device))
    return compute_fold(cfg, source, job, samples=samples, model_factory=model_factory)


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C: the run stops its tasks, stops the Ray it started and says "interrupted"."""
    raise KeyboardInterrupt(f"signal {signum}")


def _error_text(err: BaseException) -> str:
    """One line for a fold's failure: the fold's own exception where there is one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".strip()
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}".strip()


class RayExecutor:
    """Runs fold runs as Ray tasks (see the module docstring).

    Args:
        address: the Ray cluster to join (``auto``: the one ``ray start`` made on this node); None starts
            a local Ray instance for the run and stops it afterwards.
        cpus_per_fold: CPUs each fold task reserves (and the torch threads it uses).
        gpus_per_fold: GPUs each fold task reserves (fractions share a GPU between folds).
        max_retries: how often a fold whose worker or node died is run again.
        num_cpus: CPUs of the local instance (None: all of this machine's); only without ``address``.
        shared_disk: whether every node sees the run's data and cache folders at the same paths. Without a
            shared disk, the driver fills the feature cache in memory and ships it to the tasks.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_fold: float = 1.0,
        gpus_per_fold: float = 0.0,
        max_retries: int = 2,
        num_cpus: int | None = None,
        shared_disk: bool = True,
    ) -> None:
        if cpus_per_fold <= 0:
            raise UserError(f"--cpus-per-fold must be > 0; got {cpus_per_fold}")
        if gpus_per_fold < 0:
            raise UserError(f"--gpus-per-fold must be >= 0; got {gpus_per_fold}")
        if max_retries < 0:
            raise UserError(f"--max-retries must be >= 0; got {max_retries}")
        self.address, self.num_cpus, self.shared_disk = address, num_cpus, shared_disk
        self.cpus_per_fold, self.gpus_per_fold, self.max_retries = cpus_per_fold, gpus_per_fold, max_retries
        self._owns_ray = False  # start() joined or started Ray for this executor: run() stops it at the end
        self._previous_sigterm: Any = None  # the SIGTERM handler before Ray was started, put back when it stops

    # -- connection ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Join or start Ray and check that it can run a fold task, before any work.

        Raises:
            UserError: ``address`` cannot be reached, or no node has the CPUs and GPUs a fold asks for; what
                was asked, what the cluster has and what to do.
        """
        ray = import_ray()
        self._owns_ray = self._connect(ray) or self._owns_ray
        try:
            self._check_resources(ray)
        except UserError:
            self.close()
            raise

    def close(self) -> None:
        """Stop the Ray instance :meth:`start` joined or started (nothing otherwise)."""
        if self._owns_ray:
            self._shutdown(import_ray())
            self._owns_ray = False

    def _shutdown(self, ray: Any) -> None:
        ray.shutdown()
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def _check_reachable(self) -> None:
        """Fail at once on an ``address`` nobody listens at (Ray itself retries for minutes, logging each try)."""
        if self.address is None or self.address == "auto":
            return
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            host, port = self.address.removeprefix("ray://"), "10001" if self.address.startswith("ray://") else "6379"
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise UserError(
                f"could not reach the Ray cluster at --address {self.address} ({host}:{port}: "
                f"{err.strerror or err}). Check the address ('ray status' on the head node prints it), start a "
                "cluster with 'ray start --head' (docs/scale-out.md), or leave out --address to run a local Ray "
                "instance"
            ) from None

    def _check_resources(self, ray: Any) -> None:
        """A fold task runs on one node: some node must have ``cpus_per_fold`` CPUs and ``gpus_per_fold`` GPUs."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
        total = ray.cluster_resources()
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray instance"
        has = f"{total.get('CPU', 0.0):g} CPU and {total.get('GPU', 0.0):g} GPU in all"
        for flag, kind, asked in (
            ("--cpus-per-fold", "CPU", self.cpus_per_fold),
            ("--gpus-per-fold", "GPU", self.gpus_per_fold),
        ):
            if asked <= 0:
                continue
            largest = max((n.get(kind, 0.0) for n in nodes), default=0.0)
            if asked > largest:
                if kind == "GPU" and largest == 0:
                    fix = (
                        "leave out --gpus-per-fold to train the folds on the CPUs, or join a cluster with GPUs "
                        "with --address"
                    )
                else:
                    fix = f"use {flag} {largest:g} or less, or join a larger cluster with --address"
                raise UserError(
                    f"{flag} {asked:g} asks for {asked:g} {kind} per fold task, but no node of {where} has that "
                    f"many: the largest has {largest:g} {kind} ({has}). Ray would wait for them forever; {fix}"
                )

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; True when this call started it (and so stops it afterwards)."""
        self._check_reachable()
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
        if self.address is None:
            options["num_cpus"] = self.num_cpus
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main_thread else None
        try:
            ray.init(address=self.address, **options)
        except ConnectionError as err:
            raise UserError(
                f"could not join the Ray cluster at --address {self.address} ({err}). Start one with "
                "'ray start --head' (docs/scale-out.md), or leave out --address to run a local Ray instance"
            ) from None
        if main_thread:
            self._previous_sigterm = previous
            # ray.init makes SIGTERM exit the driver at once (sys.exit), which can end in a native abort while
            # Ray's threads run; treat it as Ctrl-C instead, so that the tasks are cancelled and Ray stopped.
            signal.signal(signal.SIGTERM, _interrupt)
        return True

    def _capacity(self, ray: Any) -> int:
        """How many fold tasks the cluster can run at once (for the progress line)."""
        resources = ray.cluster_resources()
        slots = [resources.get("CPU", 0.0) / self.cpus_per_fold]
        if self.gpus_per_fold > 0:
            slots.append(resources.get("GPU", 0.0) / self.gpus_per_fold)
        return max(1, math.floor(min(slots)))

    # -- the run -------------------------------------------------------------------------------------

    def _sources(self, ray: Any, runs: list[PreparedRun], model_factory: ModelFactory) -> list[Any]:
        """Each run's source with its feature cache filled, as an object-store reference."""
        resources = {"num_cpus": self.cpus_per_fold, "num_gpus": self.gpus_per_fold}
        fill = ray.remote(_fill_task).options(max_retries=self.max_retries, **resources)
        refs: list[Any] = []
        for run in runs:
            if not run.pending:
                refs.append(None)
            elif self.shared_disk:
                refs.append(fill.remote(run.cfg, run.source, model_factory, False))
            else:  # the driver has the data: fill here, in memory, and ship the tokens
                source = with_feature_cache(run.cfg, run.source, model_factory, in_memory=True)
                if source is run.source and getattr(source, "cache_dir", None) is not None:
                    raise UserError(
                        f"--no-shared-disk sends the folds the frozen-prefix tokens instead of the clips, but "
                        f"{run.cfg.name} trains without them (train.feature_cache=false, or "
                        "model.backbone.finetune=full), so every node would need the aligned clips. Put the data "
                        "and data.cache_dir on a disk every node mounts and leave out --no-shared-disk, or turn "
                        "the cache on"
                    )
                refs.append(ray.put(source))
        return refs  # a fill task's result is an object every fold task of its run reads

    def run(
        self,
        runs: list[PreparedRun],
        *,
        model_factory: ModelFactory = default_model_factory,
        callbacks: RunCallbacks | None = None,
    ) -> list[FoldFailure]:
        """Run the pending folds of ``runs`` as Ray tasks, writing each fold as it finishes.

        Returns the folds that failed for good (after retries where the worker died); every other fold
        is written.
        """
        cb = callbacks or RunCallbacks()
        total = sum(len(r.jobs) for r in runs)
        done = total - sum(len(r.pending) for r in runs)
        if cb.on_start:
            cb.on_start(total, done)
        if done == total:
            return []
        ray = import_ray()
        started = self._connect(ray) or self._owns_ray
        self._owns_ray = False
        failures: list[FoldFailure] = []
        in_flight: dict[Any, tuple[PreparedRun, FoldRun]] = {}
        try:
            self._check_resources(ray)
            capacity = self._capacity(ray)
            logger.info(
                "Ray: %d fold runs on %s, %g CPU and %g GPU each (%d at once)",
                total - done,
                self.address or "a local instance",
                self.cpus_per_fold,
                self.gpus_per_fold,
                capacity,
            )
            sources = self._sources(ray, runs, model_factory)
            task = ray.remote(_fold_task).options(
                num_cpus=self.cpus_per_fold,
                num_gpus=self.gpus_per_fold,
                max_retries=self.max_retries,
                retry_exceptions=False,
            )
            level = logging.getLogger("hlora_mer").getEffectiveLevel()
            threads = max(1, int(self.cpus_per_fold))
            for run, source in zip(runs, sources, strict=True):
                samples = ray.put(run.samples) if run.pending else None
                for job in run.pending:
                    ref = task.remote(run.cfg, source, job, samples, model_factory, level, threads)
                    in_flight[ref] = (run, job)

            def status() -> None:
                if cb.on_status:
                    cb.on_status(done, min(len(in_flight), capacity), len(failures))

            status()
            while in_flight:
                # a timeout, so that a signal (Ctrl-C, SIGTERM) is handled within a second
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for ref in ready:
                    run, job = in_flight.pop(ref)
                    try:
                        output = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        failure = FoldFailure(Path(run.run_dir), job.fold.name, job.seed, _error_text(err))
                        logger.error("fold run failed: %s", failure.describe())
                        failures.append(failure)
                    else:
                        write_fold(run.run_dir, output)
                        done += 1
                        if cb.on_fold_end:
                            cb.on_fold_end(job.fold.name, job.seed, False)
                    status()
        except BaseException:
            for ref in in_flight:  # an interrupted driver: the finished folds are written, the rest stops
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                self._shutdown(ray)
        return failures
