"""What loading the backbone once per process saves: a LOSO run built per fold vs from the backbone pool.

A random-init ``--backbone`` is saved as safetensors into a temporary folder and used as a pretrained
local checkpoint (so every load reads the weights from disk, as a real checkpoint does). A synthetic
in-memory dataset (``--subjects`` subjects x ``--per-subject`` clips of 8 random frames at ``--size`` px)
then runs through ``run_experiment`` twice with the same config: with ``build_model(cfg.model)`` as the
model factory (the backbone loaded for every fold and once more for the feature cache) and with the
default factory (``models.pool``: loaded once, a deep copy per fold). Reported for each: backbone
loads, seconds spent loading, wall time, and whether the two runs' predictions are byte-identical.

Then one ``build_backbone`` load of a bigger architecture (``--big-backbone``, default ViT-L/14, random
init saved to a temporary folder) is timed, with the size of its weights and the time of one deep copy:
what re-reading the weights costs per fold, against what the pool pays instead. Not a test: the figures
depend on the machine (and the disk's page cache).

    python benchmarks/load_once.py [--backbone dinov2_vits14] [--big-backbone dinov2_vitl14]
        [--subjects 4] [--per-subject 3] [--size 56] [--steps 2] [--out benchmarks/results/load_once.json]
    python benchmarks/load_once.py --quick     # tiny models, to check that it runs; writes nothing
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _data import random_source
from _machine import machine_info

from hlora_mer.config import ExperimentConfig, from_dict
from hlora_mer.files import atomic_write_text
from hlora_mer.models import backbones, mer_model, pool
from hlora_mer.models.mer_model import build_model
from hlora_mer.training.data import TensorSource
from hlora_mer.training.engine import resolve_device
from hlora_mer.training.runner import default_model_factory, run_experiment


class _LoadMeter:
    """Counts and times every ``build_backbone`` call, whether ``build_model`` or the pool makes it."""

    def __init__(self) -> None:
        self.loads = 0
        self.seconds = 0.0
        self._real = backbones.build_backbone

    def __enter__(self) -> _LoadMeter:
        def timed(name: str, pretrained: bool = True, init_seed: int = 0) -> backbones.DinoBackbone:
            start = time.perf_counter()
            try:
                return self._real(name, pretrained, init_seed)
            finally:
                self.seconds += time.perf_counter() - start
                self.loads += 1

        backbones.build_backbone = timed  # type: ignore[assignment]
        mer_model.build_backbone = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        backbones.build_backbone = self._real  # type: ignore[assignment]
        mer_model.build_backbone = self._real  # type: ignore[assignment]


def _save_random_init(name: str, folder: Path) -> int:
    """Save a random-init ``name`` as a local checkpoint folder; returns the weights' size in bytes."""
    backbones.build_backbone(name, pretrained=False).model.save_pretrained(folder)
    return sum(p.stat().st_size for p in backbones.local_weight_files(folder))


def _config(folder: Path, args: argparse.Namespace, features: Path) -> ExperimentConfig:
    return from_dict(
        ExperimentConfig,
        {
            "name": "load_once",
            "data": {"datasets": ["s"], "detector": "none"},
            "model": {
                "backbone": {"name": str(folder), "pretrained": True},
                "image_size": args.size,
                "num_classes": 3,
            },
            "train": {
                "steps": args.steps,
                "batch_size": args.batch,
                "device": args.device,
                "save_checkpoints": False,
                "feature_cache_dir": str(features),
            },
            "eval": {"bootstrap": 0, "seeds": [0]},
        },
    )


def _run(cfg: ExperimentConfig, source: TensorSource, run_dir: Path, factory: Callable[..., Any]) -> dict[str, Any]:
    backbones._FILE_DIGESTS.clear()  # each run hashes the local weights once, as a fresh process would
    pool.default_pool.clear()
    with _LoadMeter() as meter:
        start = time.perf_counter()
        run_experiment(cfg, run_dir, source, model_factory=factory)
        wall = time.perf_counter() - start
    return {"backbone_loads": meter.loads, "load_s": round(meter.seconds, 3), "wall_s": round(wall, 2)}


def _single_load(name: str, tmp: Path) -> dict[str, Any]:
    folder = tmp / "big"
    size = _save_random_init(name, folder)
    backbones._FILE_DIGESTS.clear()
    start = time.perf_counter()
    loaded = backbones.build_backbone(str(folder))
    first = time.perf_counter() - start
    start = time.perf_counter()
    backbones.build_backbone(str(folder))  # the weights' hash is known now: what each later fold paid
    again = time.perf_counter() - start
    start = time.perf_counter()
    copy.deepcopy(loaded)
    copied = time.perf_counter() - start
    return {
        "backbone": name,
        "weights_mb": round(size / 2**20, 1),
        "first_load_s": round(first, 3),
        "later_load_s": round(again, 3),
        "deep_copy_s": round(copied, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="dinov2_vits14")
    parser.add_argument("--big-backbone", default="dinov2_vitl14")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--per-subject", type=int, default=3)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny models and data, to check that it runs")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/load_once.json")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.big_backbone = "test_vit_reg", "test_vit"
        args.subjects, args.per_subject, args.size, args.steps = 3, 3, 28, 1
    out = args.out or (None if args.quick else Path(__file__).parent / "results" / "load_once.json")
    source = random_source(args.subjects, args.per_subject, args.size)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        weights_mb = _save_random_init(args.backbone, tmp / "weights") / 2**20
        runs = {}
        for label, factory in (
            ("per_fold", lambda cfg: build_model(cfg.model)),
            ("load_once", default_model_factory),
        ):
            cfg = _config(tmp / "weights", args, tmp / f"features_{label}")
            runs[label] = _run(cfg, source, tmp / label, factory)
        identical = all(
            (tmp / "per_fold" / f).read_bytes() == (tmp / "load_once" / f).read_bytes()
            for f in ("predictions.csv", "metrics.json")
        )
        single = _single_load(args.big_backbone, tmp)
    result = {
        "benchmark": "load_once",
        "quick": args.quick,
        "config": {
            "backbone": args.backbone,
            "weights_mb": round(weights_mb, 1),
            "subjects": args.subjects,
            "folds": args.subjects,
            "clips": len(source.table),
            "image_size": args.size,
            "steps_per_fold": args.steps,
            "batch": args.batch,
        },
        "machine": {**machine_info(), "device": str(resolve_device(args.device))},
        "loso": runs,
        "identical_predictions_and_metrics": identical,
        "single_load": single,
    }
    text = json.dumps(result, indent=2) + "\n"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
    print(text)
    p, o = runs["per_fold"], runs["load_once"]
    print(
        f"LOSO ({args.subjects} folds, {args.backbone}): per fold {p['backbone_loads']} loads, {p['load_s']} s "
        f"loading, {p['wall_s']} s; load once {o['backbone_loads']} load(s), {o['load_s']} s loading, "
        f"{o['wall_s']} s; identical: {identical}. One {single['backbone']} load ({single['weights_mb']} MB): "
        f"{single['first_load_s']} s first, {single['later_load_s']} s after; a deep copy {single['deep_copy_s']} s"
    )


if __name__ == "__main__":
    main()
