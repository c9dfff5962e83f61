"""Whole LOSO run time with and without the frozen-prefix feature cache (the cached figure includes the fill).

A synthetic in-memory dataset (``--subjects`` subjects x ``--per-subject`` clips of 8 random frames at
``--size`` px) is run through ``run_experiment`` twice with the same config (random-init
``--backbone``, LoRA on the last ``--last-n`` blocks, ``--steps`` steps per fold, batch ``--batch``):
``train.feature_cache=false`` and ``true`` (fp16, on disk in a temporary folder, filled once for all
folds). Reports wall times, the speed-up, the fill time and the largest difference of the pooled test
probabilities between the two runs. Not a test: the figures depend on the machine.

    python benchmarks/loso_run.py [--subjects 4] [--per-subject 3] [--size 112] [--steps 10]
        [--out benchmarks/results/loso_run.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _data import random_source

from hlora_mer.config import ExperimentConfig, from_dict
from hlora_mer.training.runner import run_experiment


class _FillTimer(logging.Handler):
    """Picks the fill's start and end out of the feature cache's log lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.start: float | None = None
        self.end: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "computing the frozen prefix" in msg:
            self.start = time.perf_counter()
        elif "frozen-prefix feature cache: on" in msg:
            self.end = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument("--last-n", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--per-subject", type=int, default=3)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loso_run.json")
    args = parser.parse_args()
    source = random_source(args.subjects, args.per_subject, args.size)
    timer = _FillTimer()
    logging.getLogger("hlora_mer.training.feature_cache").addHandler(timer)
    logging.getLogger("hlora_mer.training.feature_cache").setLevel(logging.INFO)
    wall: dict[str, float] = {}
    probs: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, on in (("uncached", False), ("cached", True)):
            cfg = from_dict(
                ExperimentConfig,
                {
                    "name": f"loso_{name}",
                    "data": {"datasets": ["s"], "detector": "none"},
                    "model": {
                        "backbone": {"name": args.backbone, "pretrained": False},
                        "image_size": args.size,
                        "num_classes": 3,
                        "lora": {"last_n_blocks": args.last_n},
                    },
                    "train": {
                        "steps": args.steps,
                        "batch_size": args.batch,
                        "device": args.device,
                        "save_checkpoints": False,
                        "feature_cache": on,
                        "feature_cache_dir": str(Path(tmp) / "features"),
                    },
                    "eval": {"bootstrap": 0, "seeds": [0]},
                },
            )
            start = time.perf_counter()
            run_experiment(cfg, Path(tmp) / name, source)
            wall[name] = time.perf_counter() - start
            probs[name] = pd.read_csv(Path(tmp) / name / "predictions.csv").filter(like="prob_")
    fill = (timer.end - timer.start) if timer.start and timer.end else None
    result = {
        "benchmark": "loso_run",
        "config": {
            "backbone": args.backbone,
            "last_n_blocks": args.last_n,
            "subjects": args.subjects,
            "clips": len(source.table),
            "image_size": args.size,
            "steps_per_fold": args.steps,
            "batch": args.batch,
            "folds": args.subjects,
            "cache_dtype": "fp16",
        },
        "machine": {
            "device": str(torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "wall_s": {k: round(v, 2) for k, v in wall.items()},
        "cache_fill_s": round(fill, 2) if fill else None,
        "speedup_incl_fill": round(wall["uncached"] / wall["cached"], 3),
        "max_abs_prob_difference": float((probs["cached"] - probs["uncached"]).abs().to_numpy().max()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"\nLOSO ({args.subjects} folds x {args.steps} steps): uncached {wall['uncached']:.1f} s, cached "
        f"{wall['cached']:.1f} s incl. {result['cache_fill_s']} s fill: {result['speedup_incl_fill']:.2f}x"
    )


if __name__ == "__main__":
    main()
