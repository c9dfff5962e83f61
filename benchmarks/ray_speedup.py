"""A small LOSO on Ray with 1 and with 2 workers, beside the local sequential run: the scale-out speed-up.

The demo's SynthME (12 subjects, CASME II format) is generated and aligned once into ``--workdir``; then the
demo's experiment (the shipped ``synthme_vit``, N_l = 2, feature cache on) with ``--steps`` steps per fold
runs four times into fresh run folders:

- ``local-1t`` / ``local``: the sequential executor with 1 torch thread / the machine's default;
- ``ray-1w`` / ``ray-2w``: ``RayExecutor`` on a local Ray instance of 1 / 2 CPUs, 1 CPU (1 thread) per fold.

``folds_seconds`` covers Ray's start, the cache fill and every fold (the speed-ups compare these);
``seconds`` adds the pooling, report and figures, the same work for every executor.
The JSON also says whether each Ray run's ``predictions.csv`` equals ``local-1t``'s byte for byte (same
threads per fold). Not a test: the figures depend on the machine.

    python benchmarks/ray_speedup.py [--steps 50] [--workdir runs/ray_speedup]
        [--out benchmarks/results/ray_speedup.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from _machine import machine_info

from hlora_mer.evaluation.report import finalize_run
from hlora_mer.synthme.demo import demo_config, ensure_synthme
from hlora_mer.synthme.generate import SynthConfig
from hlora_mer.training.data import build_source
from hlora_mer.training.ray_executor import RayExecutor
from hlora_mer.training.runner import SequentialExecutor, prepare_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="training steps per fold")
    parser.add_argument("--workdir", type=Path, default=Path("runs/ray_speedup"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_speedup.json"))
    args = parser.parse_args()

    root = ensure_synthme(args.workdir, SynthConfig())  # the demo's defaults
    cfg = demo_config(
        [f"data.roots.casme2={root}", f"data.cache_dir={args.workdir / 'cache'}", f"train.steps={args.steps}"]
    )
    source, excluded = build_source(cfg)  # aligned once, outside the timings
    default_threads = torch.get_num_threads()
    runs = {
        "local-1t": (SequentialExecutor(), 1),
        "local": (SequentialExecutor(), default_threads),
        "ray-1w": (RayExecutor(num_cpus=1, cpus_per_fold=1), default_threads),
        "ray-2w": (RayExecutor(num_cpus=2, cpus_per_fold=1), default_threads),
    }
    record: dict = {
        "benchmark": "ray_speedup",
        "machine": machine_info(),
        "steps_per_fold": args.steps,
        "folds": int(source.table["subject"].nunique()),
        "clips": len(source.table),
        "runs": {},
    }
    for name, (executor, threads) in runs.items():
        run_dir = args.workdir / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        torch.set_num_threads(threads)
        started = time.perf_counter()
        run = prepare_run(cfg, run_dir, source, excluded=excluded)
        executor.run([run])  # Ray's start, the cache fill and every fold
        folds = time.perf_counter() - started
        metrics = finalize_run(run_dir)  # pooling, report and figures: the same work for every executor
        seconds = time.perf_counter() - started
        record["runs"][name] = {
            "seconds": round(seconds, 1),
            "folds_seconds": round(folds, 1),
            "torch_threads_driver": threads,
            "uf1": metrics["pooled"]["uf1"]["mean"],
        }
        print(f"{name}: {folds:.1f} s for the folds, {seconds:.1f} s in all")
    torch.set_num_threads(default_threads)
    reference = (args.workdir / "runs" / "local-1t" / "predictions.csv").read_bytes()
    for name in ("ray-1w", "ray-2w"):
        same = (args.workdir / "runs" / name / "predictions.csv").read_bytes() == reference
        record["runs"][name]["predictions_equal_local_1t"] = same
    seconds = {name: r["folds_seconds"] for name, r in record["runs"].items()}
    record["speedup_2_workers_vs_1"] = round(seconds["ray-1w"] / seconds["ray-2w"], 2)
    record["speedup_ray_2w_vs_local"] = round(seconds["local"] / seconds["ray-2w"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
