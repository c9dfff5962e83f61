"""Training-step throughput with and without the frozen-prefix feature cache, side by side.

Builds one HLoRA-MER model (random-init backbone, so nothing is downloaded; default ``dinov2_vits14``,
12 blocks, ViT-S) with LoRA on the last ``--last-n`` blocks, and one batch of ``--batch`` random clips of
8 frames at ``--size`` pixels. The cache is filled for those clips (fp16, on disk in a temporary folder),
then the SAME optimisation step (same model, same batch, same engine code: ``engine.forward_batch``,
loss, backward, Adam) is timed alternately from pixels (end to end) and from cached tokens, after
warm-up. Batches are read through the datasets and ``collate`` each step, so the cached figure includes
reading the memory-mapped tokens.

Theory: a step costs N block-forwards plus about 2 N_l block-backwards end to end, and N_l forwards
plus 2 N_l backwards with the cache, so the speed-up is (N + 2 N_l) / (3 N_l) (2.67x for N = 12,
N_l = 2). Not a test: the figures depend on the machine.

    python benchmarks/train_step.py [--backbone dinov2_vits14] [--last-n 2] [--batch 4] [--steps 5]
        [--device auto] [--precision fp32] [--out benchmarks/results/train_step.json]

Also reported: the cache fill time, inference latency of one clip (whole model vs the backbone forward
alone) and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _machine import machine_info

from hlora_mer.config import ExperimentConfig, from_dict
from hlora_mer.models.mer_model import build_model
from hlora_mer.training.data import TensorSource
from hlora_mer.training.engine import (
    _autocast,
    build_optimizer,
    collate,
    forward_batch,
    resolve_device,
    seed_everything,
)
from hlora_mer.training.feature_cache import prepare_cached_source


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


FRAMES = 8  # frames per clip


def bench_setup(
    backbone: str, last_n: int, batch: int, size: int, precision: str, device: torch.device
) -> tuple[ExperimentConfig, Any, TensorSource, torch.Tensor]:
    """The benchmark's config, its random-init model on ``device`` (seed 0) and a source of ``batch`` random
    clips of 8 frames at ``size`` px (one subject): ``(cfg, model, source, clips)``."""
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "train_step_benchmark",
            "data": {"datasets": ["bench"], "detector": "none"},
            "model": {
                "backbone": {"name": backbone, "pretrained": False},
                "image_size": size,
                "num_frames": FRAMES,
                "num_classes": 3,
                "lora": {"last_n_blocks": last_n},
            },
            "train": {"batch_size": batch, "device": str(device), "precision": precision},
        },
    )
    seed_everything(0)
    model = build_model(cfg.model).to(device)
    table = pd.DataFrame(
        {
            "sample_id": [f"b/{i}" for i in range(batch)],
            "subject": "b/1",
            "dataset": "bench",
            "label": "x",
            "label_index": [i % 3 for i in range(batch)],
        }
    )
    clips = torch.randn(batch, FRAMES, 3, size, size)
    return cfg, model, TensorSource(table, clips, ("a", "b", "c"), flip_prob=0.5), clips


def timed_step(
    model: Any,
    dataset: Any,
    optimizer: torch.optim.Optimizer,
    loss_fn: torch.nn.Module,
    device: torch.device,
    precision: str,
) -> float:
    """Seconds of one optimisation step on the whole of ``dataset``, read and collated as the engine does."""
    _sync(device)
    start = time.perf_counter()
    batch = collate([dataset[i] for i in range(len(dataset))])
    with _autocast(device, precision):
        logits = forward_batch(model, batch, device)
    loss = loss_fn(logits.float(), batch["label"].to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument("--last-n", type=int, default=2, help="N_l: LoRA blocks (the rest is frozen and cached)")
    parser.add_argument("--batch", type=int, default=4, help="clips per step (8 frames each)")
    parser.add_argument("--size", type=int, default=224, help="frame size in pixels")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path (after 2 warm-up steps)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_step.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    frames = FRAMES
    cfg, model, source, clips = bench_setup(args.backbone, args.last_n, args.batch, args.size, args.precision, device)
    depth = model.backbone.depth
    table = source.table
    ids = list(table["sample_id"])
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.feature_cache_dir = tmp
        t0 = time.perf_counter()
        cached_source, report = prepare_cached_source(cfg, source, model, device)  # type: ignore[misc]
        fill_s = time.perf_counter() - t0
        paths = {"uncached": source.dataset(ids, train=True), "cached": cached_source.dataset(ids, train=True)}
        optimizer = build_optimizer(model, cfg.train)
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()

        def step(name: str) -> float:
            return timed_step(model, paths[name], optimizer, loss_fn, device, args.precision)

        for _ in range(2):  # warm-up, both paths
            step("uncached")
            step("cached")
        times: dict[str, list[float]] = {"uncached": [], "cached": []}
        for _ in range(args.steps):  # alternate, so drifts in machine load hit both paths alike
            times["uncached"].append(step("uncached"))
            times["cached"].append(step("cached"))
        # Inference latency of one clip: the whole model vs the backbone's forward alone (T frames).
        model.eval()
        one = clips[:1].to(device)
        latency: dict[str, list[float]] = {"model_per_clip": [], "backbone_forward_per_clip": []}
        with torch.no_grad(), _autocast(device, args.precision):
            for i in range(2 + args.steps):
                for name, fn in (
                    ("model_per_clip", lambda: model(one)),
                    ("backbone_forward_per_clip", lambda: model.backbone(one.flatten(0, 1))),
                ):
                    _sync(device)
                    start = time.perf_counter()
                    fn()
                    _sync(device)
                    if i >= 2:
                        latency[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    clips_per_s = {k: args.batch / v for k, v in med.items()}
    ratio = clips_per_s["cached"] / clips_per_s["uncached"]
    theory = (depth + 2 * args.last_n) / (3 * args.last_n)
    result = {
        "benchmark": "train_step",
        "config": {
            "backbone": args.backbone,
            "depth": depth,
            "last_n_blocks": args.last_n,
            "batch_clips": args.batch,
            "frames_per_clip": frames,
            "image_size": args.size,
            "precision": args.precision,
            "cache_dtype": cfg.train.feature_cache_dtype,
            "timed_steps": args.steps,
        },
        "machine": {
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            **machine_info(),
        },
        "cache_fill_s": round(fill_s, 3),
        "cache_bytes": report.bytes,
        "step_s_median": {k: round(v, 4) for k, v in med.items()},
        "step_s_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "clips_per_s": {k: round(v, 3) for k, v in clips_per_s.items()},
        "speedup": round(ratio, 3),
        "theoretical_speedup": round(theory, 3),
        "fraction_of_theory": round(ratio / theory, 3),
        "inference_s_per_clip_median": {k: round(statistics.median(v), 4) for k, v in latency.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"\nuncached {clips_per_s['uncached']:.2f} clips/s, cached {clips_per_s['cached']:.2f} clips/s: "
        f"{ratio:.2f}x (theory (N + 2 N_l) / (3 N_l) = {theory:.2f}x, {100 * ratio / theory:.0f} % of it) "
        f"on {result['machine']['gpu'] or result['machine']['cpu']}"
    )


if __name__ == "__main__":
    main()
