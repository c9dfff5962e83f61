"""GPU proof (issue 14): the giant configuration's training step, memory, cache fill and a CASME II-sized LOSO.

On a CUDA machine it measures, with a random-init ``dinov2_vitg14_reg`` (nothing is downloaded), bf16,
N_l = 2, batch 36 x 8 frames at 224 px:

1. ``step``: training steps per second, cached (frozen-prefix tokens) and uncached (end to end), the
   speed-up and, next to it, the theory (N + 2 N_l) / (3 N_l) (7.3x for N = 40);
2. ``memory``: the peak GPU memory of each path (``torch.cuda.max_memory_allocated``, reset before each);
3. ``fill``: the feature-cache fill rate in frames per second (``FeatureCache.fill``: the frozen prefix of
   each frame, plain and flipped; the second of two fills, the first warms the device up);
4. ``loso``: SynthME at CASME II's size (26 subjects, 249 clips) through the real preprocessing and
   ``run_experiment`` (600 steps per fold, batch 36, cache on), timed on ``--folds`` folds and
   extrapolated to every fold. The extrapolated run (cache fill, every fold, the pooled report) is held
   against the target of a whole LOSO in under 20 minutes; SynthME's generation and the preprocessing
   (done once per dataset) are timed beside it.

Without CUDA, or with ``--tiny``, the same four measurements run on a tiny configuration (``test_vit_reg``,
28 px, a few steps, 3 subjects, one fold) in seconds: the proof that the script works end to end. The
JSON says which mode ran and records the machine; every figure in it is measured (the theory and the
target excepted).

    benchmarks/gpu_check.sh [--tiny] [--phases step,memory,fill,loso] [--folds 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from _machine import machine_info
from train_step import FRAMES, bench_setup, timed_step

from hlora_mer.config import apply_overrides
from hlora_mer.files import atomic_write_text
from hlora_mer.synthme.demo import demo_config
from hlora_mer.synthme.generate import ANNOTATION_FILE, ClipSpec, SynthConfig, generate, write_annotation
from hlora_mer.training.data import build_source
from hlora_mer.training.engine import build_optimizer, resolve_device
from hlora_mer.training.feature_cache import FeatureCache, prepare_cached_source
from hlora_mer.training.runner import RunCallbacks, plan_fold_runs, run_experiment

PHASES = ("step", "memory", "fill", "loso")
TARGET_MIN = 20.0  # the goal: a whole CASME II LOSO with ViT-g in under 20 minutes on one H100-class GPU


@dataclass(frozen=True)
class Plan:
    mode: str
    backbone: str
    last_n: int
    batch: int
    size: int
    precision: str
    warmup: int  # untimed steps per path
    steps: int  # timed steps per path
    subjects: int
    clips_per_class: int
    clips: int  # SynthME clips kept (CASME II's 249 of the 26 x 5 x 2 generated)
    frame_size: int
    min_frames: int
    max_frames: int
    loso_steps: int
    folds: int  # LOSO folds timed
    detector: str
    workers: int  # preprocessing processes; 0: one per CPU


GIANT = Plan("cuda-giant", "dinov2_vitg14_reg", 2, 36, 224, "bf16", 3, 10, 26, 2, 249, 240, 24, 40, 600, 2, "dlib", 0)
TINY = Plan("cpu-tiny", "test_vit_reg", 2, 4, 28, "fp32", 1, 2, 3, 1, 14, 32, 8, 9, 3, 1, "none", 1)


@contextmanager
def timed_calls(owner: Any, name: str) -> Iterator[list[tuple[float, Any]]]:
    """Every call of ``owner.name`` while inside, as ``(seconds, return value)``."""
    calls: list[tuple[float, Any]] = []
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = original(*args, **kwargs)
        calls.append((time.perf_counter() - start, result))
        return result

    with mock.patch.object(owner, name, wrapper):
        yield calls


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def mib(n: float) -> float:
    return round(n / 2**20, 1)


def bench(plan: Plan, device: torch.device, phases: set[str], tmp: Path) -> dict[str, Any]:
    """Phases step, memory and fill on one batch of random clips (``benchmarks/train_step.py``'s setup)."""
    cfg, model, source, _ = bench_setup(plan.backbone, plan.last_n, plan.batch, plan.size, plan.precision, device)
    ids = list(source.table["sample_id"])
    with timed_calls(FeatureCache, "fill") as fills:
        for rep in range(2):  # the first fill warms the device up (kernels, allocator); the second is the figure
            cfg.train.feature_cache_dir = str(tmp / f"fill{rep}")
            prepared = prepare_cached_source(cfg, source, model, device)
    assert prepared is not None, "the feature cache is on and the prefix frozen in this setup"
    out: dict[str, Any] = {}
    if "fill" in phases:
        seconds, clips = fills[-1]
        out["fill"] = {
            "clips": clips,
            "frames": clips * FRAMES,
            "frozen_blocks": model.frozen_blocks,
            "seconds": round(seconds, 4),
            "cold_seconds": round(fills[0][0], 4),
            "frames_per_s": round(clips * FRAMES / seconds, 2),
        }
    if not phases & {"step", "memory"}:
        return out
    optimizer = build_optimizer(model, cfg.train)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    times: dict[str, list[float]] = {}
    peak: dict[str, float] = {}
    paths = {"cached": prepared[0].dataset(ids, train=True), "uncached": source.dataset(ids, train=True)}
    for name, dataset in paths.items():  # cached first: on CPU the peak RSS only grows
        step = (model, dataset, optimizer, loss_fn, device, plan.precision)
        for _ in range(plan.warmup):
            timed_step(*step)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times[name] = [timed_step(*step) for _ in range(plan.steps)]
        if device.type == "cuda":
            peak[name] = mib(torch.cuda.max_memory_allocated(device))
        else:
            peak[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    depth = model.backbone.depth
    if "step" in phases:
        rate = {k: 1.0 / statistics.median(v) for k, v in times.items()}
        theory = (depth + 2 * plan.last_n) / (3 * plan.last_n)
        out["step"] = {
            "depth": depth,
            "step_s_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "steps_per_s": {k: round(v, 3) for k, v in rate.items()},
            "clips_per_s": {k: round(v * plan.batch, 2) for k, v in rate.items()},
            "speedup": round(rate["cached"] / rate["uncached"], 3),
            "theoretical_speedup": round(theory, 3),
            "fraction_of_theory": round(rate["cached"] / rate["uncached"] / theory, 3),
        }
    if "memory" in phases:
        out["memory"] = {
            "measure": "torch.cuda.max_memory_allocated, reset before each path's timed steps"
            if device.type == "cuda"
            else "process peak RSS (ru_maxrss) after each path; it only grows, so the cached path runs first",
            "peak_mib": peak,
        }
    return out


def casme2_sized(clips: list[ClipSpec], keep: int) -> list[ClipSpec]:
    """``clips`` less one clip from each of the first subjects until ``keep`` are left."""
    drop: set[int] = set()
    by_subject: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_subject.setdefault(c.subject, []).append(i)
    for rows in by_subject.values():
        if len(clips) - len(drop) <= keep:
            break
        drop.add(rows[-1])
    return [c for i, c in enumerate(clips) if i not in drop]


def loso(plan: Plan, device: torch.device, n_folds: int, tmp: Path) -> dict[str, Any]:
    """Phase loso: SynthME -> preprocessing -> ``run_experiment`` on ``n_folds`` folds, extrapolated to all."""
    synth = SynthConfig(
        subjects=plan.subjects,
        clips_per_class=plan.clips_per_class,
        frame_size=plan.frame_size,
        min_frames=plan.min_frames,
        max_frames=plan.max_frames,
    )
    root = tmp / "synthme"
    synth_s, generated = timed(lambda: generate(root, synth))
    kept = casme2_sized(generated, plan.clips)
    write_annotation(kept, root / ANNOTATION_FILE)
    cfg = demo_config(
        [
            f"data.roots.casme2={root}",
            f"data.cache_dir={tmp / 'aligned'}",
            f"data.detector={plan.detector}",
            f"data.preprocess_workers={plan.workers or os.cpu_count() or 1}",
            f"model.backbone.name={plan.backbone}",
            "model.backbone.pretrained=false",
            f"model.image_size={plan.size}",
            f"model.lora.last_n_blocks={plan.last_n}",
            f"train.steps={plan.loso_steps}",
            f"train.batch_size={plan.batch}",
            f"train.device={device}",
            f"train.precision={plan.precision}",
            "train.feature_cache=true",
            f"train.feature_cache_dir={tmp / 'features'}",
        ]
    )
    preprocess_s, (source, excluded) = timed(lambda: build_source(cfg))
    names = list(dict.fromkeys(job.fold.name for job in plan_fold_runs(cfg, source.table)))
    cfg = apply_overrides(cfg, [f"eval.folds={json.dumps(names[:n_folds])}"])
    starts: dict[str, float] = {}
    fold_s: dict[str, float] = {}
    callbacks = RunCallbacks(
        on_fold_start=lambda fold, seed, steps: starts.__setitem__(fold, time.perf_counter()),
        on_fold_end=lambda fold, seed, skipped: fold_s.__setitem__(fold, time.perf_counter() - starts[fold]),
    )
    with timed_calls(FeatureCache, "fill") as fills:
        run_s, _ = timed(lambda: run_experiment(cfg, tmp / "run", source, excluded=excluded, callbacks=callbacks))
    fill_s = sum(s for s, _ in fills)
    filled = sum(n for _, n in fills)
    per_fold = statistics.mean(fold_s.values())
    other_s = run_s - fill_s - sum(fold_s.values())  # model build for the fill, the pooled report
    run_min = (fill_s + other_s + per_fold * len(names)) / 60
    return {
        "subjects": int(source.table["subject"].nunique()),
        "clips": len(source.table),
        "clips_generated": len(generated),
        "excluded": len(excluded),
        "steps_per_fold": cfg.train.steps,
        "batch": cfg.train.batch_size,
        "synth_s": round(synth_s, 3),
        "preprocess_s": round(preprocess_s, 3),
        "cache_fill_s": round(fill_s, 3),
        "cache_fill_clips": filled,
        "cache_fill_frames_per_s": round(filled * cfg.model.num_frames / fill_s, 2),
        "run_wall_s": round(run_s, 3),
        "other_run_s": round(other_s, 3),
        "fold_s": {k: round(v, 3) for k, v in fold_s.items()},
        "folds_timed": len(fold_s),
        "folds_total": len(names),
        "seconds_per_fold": round(per_fold, 3),
        "extrapolated_folds_min": round(per_fold * len(names) / 60, 3),
        "extrapolated_run_min": round(run_min, 3),
        "extrapolated_with_preprocess_min": round(run_min + preprocess_s / 60, 3),
        "target_min": TARGET_MIN,
        "meets_target": run_min < TARGET_MIN,
    }


def summary(result: dict[str, Any]) -> str:
    lines = [f"gpu_check ({result['mode']}) on {result['machine']['gpu'] or result['machine']['cpu']}"]
    if step := result.get("step"):
        rate = step["steps_per_s"]
        lines.append(
            f"  step: uncached {rate['uncached']:.3g} steps/s, cached {rate['cached']:.3g} steps/s: "
            f"{step['speedup']:.2f}x (theory (N + 2 N_l) / (3 N_l) = {step['theoretical_speedup']:.2f}x)"
        )
    if memory := result.get("memory"):
        peak = memory["peak_mib"]
        lines.append(f"  peak memory: uncached {peak['uncached']:.0f} MiB, cached {peak['cached']:.0f} MiB")
    if fill := result.get("fill"):
        lines.append(f"  cache fill: {fill['frames_per_s']:.1f} frames/s (plain + flipped)")
    if run := result.get("loso"):
        lines.append(
            f"  LOSO ({run['subjects']} subjects, {run['clips']} clips, {run['steps_per_fold']} steps/fold): "
            f"{run['seconds_per_fold']:.1f} s/fold on {run['folds_timed']} fold(s) -> {run['folds_total']} folds "
            f"{run['extrapolated_run_min']:.1f} min incl. {run['cache_fill_s']:.0f} s fill "
            f"({'meets' if run['meets_target'] else 'misses'} the {run['target_min']:g}-minute target); "
            f"+ {run['preprocess_s']:.0f} s preprocessing, {run['synth_s']:.0f} s generating SynthME"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny CPU configuration even where CUDA is available")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of %(default)s")
    parser.add_argument("--folds", type=int, help="LOSO folds to time (default: 2 giant, 1 tiny)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_check.json")
    args = parser.parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases or phases - set(PHASES):
        parser.error(f"--phases takes a comma-separated subset of {','.join(PHASES)}; got {args.phases!r}")
    plan = TINY if args.tiny or not torch.cuda.is_available() else GIANT
    device = resolve_device("cuda" if plan is GIANT else "cpu")
    n_folds = args.folds or plan.folds
    if n_folds < 1:
        parser.error(f"--folds must be at least 1; got {n_folds}")
    result: dict[str, Any] = {
        "benchmark": "gpu_check",
        "mode": plan.mode,
        "phases": [p for p in PHASES if p in phases],
        "config": asdict(plan) | {"folds": n_folds, "frames_per_clip": FRAMES},
        "machine": {
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            **machine_info(),
        },
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if phases & {"step", "memory", "fill"}:
            result.update(bench(plan, device, phases, Path(tmp) / "bench"))
        if "loso" in phases:
            result["loso"] = loso(plan, device, n_folds, Path(tmp) / "loso")
    result["total_wall_s"] = round(time.perf_counter() - start, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
