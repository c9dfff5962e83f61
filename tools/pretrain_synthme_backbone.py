"""Make the demo's ``synthme_vit`` backbone: self-supervised pretraining (no labels) on SynthME.

1. Generate SynthME with a seed the demo does not use (``--seed``, default 1000: other identities,
   other clips) and ``--subjects`` subjects.
2. Read it through the CASME II loader and align it exactly as the demo does (dlib, t = 8, 112 px).
3. Pretrain the ``synthme_vit`` architecture from random init with the motion-reconstruction objective
   of ``hlora_mer.synthme.pretrain`` (the emotion column is never read).
4. Write ``src/hlora_mer/weights/synthme_vit.safetensors`` (fp16, with the settings as metadata) and the
   loss history to ``benchmarks/results/pretrain_synthme_vit.json``.

About 12 minutes on 2 CPU cores with the defaults:

    python tools/pretrain_synthme_backbone.py [--workdir runs/pretrain] [--steps 2000] [--seed 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hlora_mer.data import load_dataset
from hlora_mer.models.backbones import BACKBONES, build_backbone
from hlora_mer.preprocess.cache import open_cache_dir
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table
from hlora_mer.synthme.demo import ensure_synthme
from hlora_mer.synthme.generate import SynthConfig
from hlora_mer.synthme.pretrain import PretrainConfig, config_metadata, pretrain_backbone, save_backbone_weights

NAME = "synthme_vit"
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _machine import machine_info  # noqa: E402


def aligned_clips(workdir: Path, synth: SynthConfig, size: int) -> np.ndarray:
    """SynthME for ``synth``, aligned like the demo: ``(N, 8, size, size, 3)`` uint8, no labels."""
    with tqdm(total=synth.subjects * synth.clips_per_class * 5, desc="SynthME", unit="clip") as bar:
        root = ensure_synthme(workdir, synth, progress=lambda done, _: bar.update(done - bar.n))
    table = load_dataset("casme2", root, require_frames=True).table
    params = PreprocessParams(num_frames=8, size=size, detector="dlib")
    with tqdm(total=len(table), desc="align", unit="clip") as bar:
        report = preprocess_table(table, workdir / "cache", params, workers=2, progress=lambda _: bar.update())
    if report.failed:
        print(f"{len(report.failed)} clip(s) failed alignment and are left out (see {report.failures_path})")
    cache = open_cache_dir(report.cache_dir)
    return np.stack([cache.load_clip(s) for s in table["sample_id"] if s in cache.clips])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "pretrain")
    parser.add_argument("--seed", type=int, default=1000, help="SynthME seed (the demo uses 0)")
    parser.add_argument("--subjects", type=int, default=48)
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "src" / "hlora_mer" / BACKBONES[NAME].weights_file,
        help="where the weights go (default: into the source tree, %(default)s)",
    )
    parser.add_argument("--history", type=Path, default=REPO / "benchmarks" / "results" / f"pretrain_{NAME}.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    spec = BACKBONES[NAME]
    synth = SynthConfig(seed=args.seed, subjects=args.subjects)
    clips = aligned_clips(args.workdir, synth, spec.image_size)
    print(f"{len(clips)} aligned clips of {args.subjects} subjects (SynthME seed {args.seed})")

    cfg = PretrainConfig(steps=args.steps)
    backbone = build_backbone(NAME, pretrained=False, init_seed=cfg.seed)
    start = time.perf_counter()
    with tqdm(total=cfg.steps, desc="pretrain", unit="step") as bar:

        def progress(step: int, record: dict[str, float]) -> None:
            bar.update()
            bar.set_postfix(explained=f"{record['explained']:.3f}")

        history = pretrain_backbone(backbone, clips, cfg, progress=progress)
    seconds = time.perf_counter() - start
    metadata = {
        **config_metadata(cfg),
        "synthme.seed": args.seed,
        "synthme.subjects": args.subjects,
        "synthme.clips": len(clips),
        "objective": "motion reconstruction (hlora_mer.synthme.pretrain)",
    }
    path = save_backbone_weights(backbone, args.out, metadata)
    args.history.parent.mkdir(parents=True, exist_ok=True)
    args.history.write_text(
        json.dumps(
            {
                "backbone": NAME,
                "weights": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
                "synthme": {"seed": args.seed, "subjects": args.subjects, "clips": len(clips)},
                "config": asdict(cfg),
                "seconds": round(seconds, 1),
                "machine": machine_info(),
                "history": history,
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {seconds / 60:.1f} min; "
        f"final explained variance {history[-1]['explained']:.3f}; history in {args.history}"
    )


if __name__ == "__main__":
    main()
