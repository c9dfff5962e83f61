"""Folds as Ray tasks (``training.ray_executor``) on a local Ray instance with 2 CPUs.

The sequential run is the reference: a Ray run must write the same files byte for byte, survive a worker
that dies, report a fold that fails for good and stay resumable.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from hlora_mer.cli import main
from hlora_mer.errors import UserError
from hlora_mer.training.runner import FoldsFailed, RunCallbacks, default_model_factory, run_experiment
from test_cli_train import TINY as CLI_TINY
from train_fixtures import tiny_experiment, tiny_source

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_missing_ray_is_one_message_with_the_install_command(monkeypatch) -> None:
    from hlora_mer.training.ray_executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=r"pip install 'hlora-mer\[ray\]'"):
        import_ray()


def test_ray_only_flags_without_the_ray_executor_are_refused(capsys) -> None:
    argv = ["train", "-c", str(CONFIGS / "table3_casme2_5cls.yaml"), "--gpus-per-fold", "1"]
    assert main(argv) == 2
    assert "--gpus-per-fold only apply with --executor ray" in capsys.readouterr().err


def _closed_port() -> int:
    """A local TCP port nobody listens at."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_argv(run: Path, *extra: str) -> list[str]:
    config = str(CONFIGS / "table3_casme2_5cls.yaml")
    return ["-q", "train", "-c", config, f"data.roots.casme2={run.parent}", *CLI_TINY, "-o", str(run), *extra]


def test_an_unreachable_address_is_one_message_and_creates_nothing(tmp_path, capfd) -> None:
    pytest.importorskip("ray")
    run = tmp_path / "run"
    address = f"127.0.0.1:{_closed_port()}"
    assert main(_ray_argv(run, "--executor", "ray", "--address", address)) == 2
    err = capfd.readouterr().err
    assert f"could not reach the Ray cluster at --address {address}" in err and "ray start --head" in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line, not Ray's retries
    assert not run.exists() and not (tmp_path / "cache").exists()


ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'hlora-mer[ray]'); the Ray tests skip")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module; the executor joins it (and leaves it running)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    # the tests' model factories live in this module, which the Ray workers cannot import: send them by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _executor(**options):
    from hlora_mer.training.ray_executor import RayExecutor

    return RayExecutor(**options)


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run folder whose bytes must not depend on the executor (figures are drawn locally)."""
    names = ["predictions.csv", "metrics.json", "samples.csv", "folds.json"]
    found = {name: (run / name).read_bytes() for name in names}
    for path in sorted((run / "folds").rglob("*")):
        if path.is_file():
            found[str(path.relative_to(run))] = path.read_bytes()
    return found


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The local reference runs with the threads of a Ray fold task (--cpus-per-fold 1): on CPU, the bits of
    a trained tensor can depend on how many threads shared a reduction."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("seq") / "run"
    run_experiment(tiny_experiment(), run, tiny_source(subjects=3))
    return run


@pytest.mark.slow
def test_a_ray_run_writes_the_sequential_runs_files_byte_for_byte(local_ray, sequential, tmp_path) -> None:
    status: list[tuple[int, int, int]] = []
    run = tmp_path / "run"
    run_experiment(
        tiny_experiment(),
        run,
        tiny_source(subjects=3),
        executor=_executor(),
        callbacks=RunCallbacks(on_status=lambda *s: status.append(s)),
    )
    ours, reference = _files(run), _files(sequential)
    assert sorted(ours) == sorted(reference)
    assert [name for name in ours if ours[name] != reference[name]] == []
    assert any("checkpoint" in name for name in ours)  # the checkpoints came back from the workers too
    assert status[0] == (0, 2, 0) and status[-1] == (3, 0, 0)  # 2 of 3 folds at once on 2 CPUs, then all done


@pytest.mark.slow
def test_a_ray_resume_trains_only_the_missing_fold(local_ray, sequential, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(sequential, run)
    missing = run / "folds" / "seed0" / "toy__02"
    shutil.rmtree(missing)  # as if the driver had been stopped before this fold came back
    kept = {
        p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in (run / "folds").rglob("*") if p.is_file()
    }
    started: list[tuple[int, int]] = []
    trained: list[tuple[str, int]] = []
    status: list[tuple[int, int, int]] = []
    callbacks = RunCallbacks(
        on_start=lambda n, done: started.append((n, done)),
        on_fold_end=lambda f, s, skipped: trained.append((f, s)) if not skipped else None,
        on_status=lambda *s: status.append(s),
    )
    run_experiment(tiny_experiment(), run, tiny_source(subjects=3), executor=_executor(), callbacks=callbacks)
    assert started == [(3, 2)] and trained == [("toy/02", 0)]
    assert status[0] == (2, 1, 0)  # one task submitted: the missing fold
    # the finished folds were neither recomputed nor rewritten: same bytes, same file (inode, mtime)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in kept} == kept
    assert _files(run) == _files(sequential)  # and the missing fold is the one the sequential run wrote


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--gpus-per-fold", "1"], "--gpus-per-fold 1 asks for 1 GPU per fold task, but no node of the local Ray"),
        (["--cpus-per-fold", "64"], "--cpus-per-fold 64 asks for 64 CPU per fold task, but no node of the local Ray"),
    ],
)
def test_resources_the_cluster_lacks_are_refused_before_any_work(local_ray, tmp_path, capfd, flags, expected) -> None:
    if flags[0] == "--gpus-per-fold" and local_ray.cluster_resources().get("GPU", 0):
        pytest.skip("this machine has a GPU")
    run = tmp_path / "run"
    assert main(_ray_argv(run, "--executor", "ray", *flags)) == 2
    err = capfd.readouterr().err
    assert expected in err and "the largest has " in err and "2 CPU and 0 GPU in all" in err
    assert ("leave out --gpus-per-fold" if "gpus" in flags[0] else "use --cpus-per-fold 2 or less") in err
    assert "Traceback" not in err
    assert not run.exists() and not (tmp_path / "cache").exists()  # refused before any work


class _DieOnce:
    """A model factory whose process dies the first time a fold calls it (the marker file remembers)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, cfg):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # one caller only, even in parallel
        except FileExistsError:
            return default_model_factory(cfg)
        os._exit(1)  # the worker dies: no exception, no cleanup, as when a node is lost


@pytest.mark.slow
def test_a_fold_whose_worker_dies_is_retried_and_the_run_completes(local_ray, sequential, tmp_path) -> None:
    marker = tmp_path / "died"
    run = tmp_path / "run"
    # no feature cache, so that no fill builds a model: the first factory call (the one that dies) is a fold's
    cfg = tiny_experiment(train={"feature_cache": False})
    reference = tmp_path / "reference"
    run_experiment(cfg, reference, tiny_source(subjects=3))
    run_experiment(cfg, run, tiny_source(subjects=3), executor=_executor(max_retries=1), model_factory=_DieOnce(marker))
    assert marker.is_file()  # a worker did die
    assert _files(run) == _files(reference)


@pytest.mark.slow
def test_a_fold_that_fails_for_good_is_reported_and_the_run_resumes(local_ray, sequential, tmp_path) -> None:
    from hlora_mer.training import runner

    source = tiny_source(subjects=3)
    bad = source.dataset

    def dataset(ids, *, train):  # the fold testing on toy/02 cannot read its test clips
        if not train and ids and all(i.startswith("toy/02/") for i in ids):
            raise RuntimeError("clip toy/02/clip00 is unreadable")
        return bad(ids, train=train)

    source.dataset = dataset  # type: ignore[method-assign]
    run = tmp_path / "run"
    cfg = tiny_experiment(train={"feature_cache": False})  # the folds read clips, not cached tokens
    with pytest.raises(FoldsFailed) as caught:
        run_experiment(cfg, run, source, executor=_executor(max_retries=1))
    message = str(caught.value)
    assert "1 of 3 fold runs failed" in message and "fold toy/02 seed 0" in message
    assert "RuntimeError: clip toy/02/clip00 is unreadable" in message and "run the same command again" in message
    finished = sorted(p.parent.name for p in run.glob("folds/seed0/*/result.json"))
    assert finished == ["toy__01", "toy__03"]  # the other folds are saved

    trained: list[str] = []
    original = runner.compute_fold

    def counting(cfg, source, job, **kw):
        trained.append(job.fold.name)
        return original(cfg, source, job, **kw)

    runner.compute_fold = counting  # type: ignore[assignment]
    try:
        run_experiment(cfg, run, tiny_source(subjects=3))  # fixed: the same run resumes
    finally:
        runner.compute_fold = original  # type: ignore[assignment]
    assert trained == ["toy/02"]
    reference = tmp_path / "reference"
    run_experiment(cfg, reference, tiny_source(subjects=3))
    assert _files(run) == _files(reference)


TINY = [*CLI_TINY, "eval.seeds=[0,1]"]


@pytest.mark.slow
@pytest.mark.parametrize("shared_disk", [True, False])
def test_train_executor_ray_runs_a_sweep_like_the_local_executor(
    local_ray, synth_root, tmp_path, capsys, shared_disk
) -> None:
    """A 2-variant sweep of 2 seeds: every fold of every variant is one Ray task; the files equal a local run."""
    config = tmp_path / "sweep.yaml"
    config.write_text(
        (CONFIGS / "table3_casme2_5cls.yaml").read_text()
        + "sweep:\n  nl1: [model.lora.last_n_blocks=1]\n  nl2: [model.lora.last_n_blocks=2]\n"
    )

    def argv(out: Path, *extra: str) -> list[str]:
        return ["-q", "train", "-c", str(config), f"data.roots.casme2={synth_root}", *TINY, "-o", str(out), *extra]

    assert main(argv(tmp_path / "local" / "sweep")) == 0
    extra = ["--executor", "ray"] + ([] if shared_disk else ["--no-shared-disk"])
    assert main(argv(tmp_path / "ray" / "sweep", *extra)) == 0
    out = capsys.readouterr().out
    for variant in ("nl1", "nl2"):
        assert f"table3_casme2_5cls-{variant}: run folder" in out
        assert _files(tmp_path / "ray" / "sweep" / variant) == _files(tmp_path / "local" / "sweep" / variant)
    keys = sorted(p.parent.name for p in (tmp_path / "ray").rglob("key.json"))
    if shared_disk:  # filled once per variant (two N_l, two keys) into the shared folder, by a Ray task
        assert len(keys) == 2 and [k.split("_fb")[1][0] for k in keys] == ["3", "4"]  # 5 blocks: N_l 2 and 1
    else:  # filled by the driver in memory and shipped through the object store: nothing on disk
        assert keys == []


@pytest.mark.slow
def test_no_shared_disk_without_the_feature_cache_is_one_message(local_ray, synth_root, tmp_path, capsys) -> None:
    argv = ["-q", "train", "-c", str(CONFIGS / "table3_casme2_5cls.yaml"), f"data.roots.casme2={synth_root}", *TINY]
    argv += ["train.feature_cache=false", "-o", str(tmp_path / "run"), "--executor", "ray", "--no-shared-disk"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--no-shared-disk sends the folds the frozen-prefix tokens" in err and "Traceback" not in err
    assert not list((tmp_path / "run").glob("folds/*/*/result.json"))  # nothing was trained


@pytest.mark.slow
def test_sigterm_to_the_driver_is_an_interruption_and_stops_ray(synth_root, tmp_path) -> None:
    psutil = pytest.importorskip("psutil")
    import signal
    import subprocess
    import time

    run = tmp_path / "run"
    argv = ["-q", "train", "-c", str(CONFIGS / "table3_casme2_5cls.yaml"), f"data.roots.casme2={synth_root}"]
    argv += [*CLI_TINY, "train.steps=20000", "-o", str(run), "--executor", "ray"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "hlora_mer", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 240
        while not (run / "config.yaml").is_file() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the run folder is written once Ray is up and the data is ready
        time.sleep(3)  # the fold tasks are running
        assert driver.poll() is None, driver.communicate()
        ray_processes = psutil.Process(driver.pid).children(recursive=True)
        assert ray_processes  # the local Ray instance this driver started
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, err
    assert err.strip().endswith("interrupted") and "Traceback" not in err and "Stack trace" not in err
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert [p.name() for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
