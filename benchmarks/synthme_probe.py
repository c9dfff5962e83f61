"""Is SynthME's motion learnable through its nuisances? A pixel probe, with the motion and without.

For each ``--amplitudes`` value, SynthME (``--seed``, the demo's size) is generated once under
``--workdir`` and read through the CASME II loader. Each clip becomes one feature vector: the grey
apex frame minus the grey onset frame (raw frames, not aligned), area-downsampled to ``--size`` px.
A standardised logistic regression is trained leave-one-subject-out and UF1 / UAR / ACC are computed
on the pooled predictions. With the motion, the probe should be far above chance; at amplitude 0
(every nuisance, no motion) at chance. This calibrates the generator's nuisances against its motion;
it is not a test (seconds to minutes, and the figures are quoted in the README).

    python benchmarks/synthme_probe.py [--amplitudes 2.5 0] [--seed 0] [--workdir runs/demo]
        [--out benchmarks/results/synthme_probe.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _machine import machine_info
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hlora_mer.data import load_dataset
from hlora_mer.data.annotations.labels import apply_label_scheme, get_scheme
from hlora_mer.data.frames import read_frame
from hlora_mer.evaluation.metrics import scores
from hlora_mer.synthme.demo import ensure_synthme
from hlora_mer.synthme.generate import SynthConfig


def _grey(path: str, size: int) -> np.ndarray:
    grey = Image.fromarray(read_frame(path)).convert("L").resize((size, size), Image.Resampling.BOX)
    return np.asarray(grey, np.float32) / 255.0


def apex_minus_onset(table, size: int) -> np.ndarray:
    """``(N, size * size)``: each clip's grey apex frame minus its onset frame."""
    rows = []
    for frame_numbers, frame_paths, onset, apex in table[["frame_numbers", "frame_paths", "onset", "apex"]].itertuples(
        index=False
    ):
        index = {n: p for n, p in zip(frame_numbers, frame_paths, strict=True)}
        rows.append((_grey(index[apex], size) - _grey(index[onset], size)).ravel())
    return np.stack(rows)


def loso_probe(features: np.ndarray, labels: np.ndarray, subjects: np.ndarray, num_classes: int) -> dict[str, float]:
    """Leave-one-subject-out logistic regression; scores on the pooled predictions."""
    predictions = np.empty_like(labels)
    for subject in np.unique(subjects):
        test = subjects == subject
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
        probe.fit(features[~test], labels[~test])
        predictions[test] = probe.predict(features[test])
    return scores(labels, predictions, num_classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amplitudes", type=float, nargs="+", default=[2.5, 0.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=56, help="side of the downsampled difference image")
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthme_probe.json"))
    args = parser.parse_args()

    scheme = get_scheme("casme2_5cls")
    results = []
    for amplitude in args.amplitudes:
        started = time.perf_counter()
        root = ensure_synthme(args.workdir, SynthConfig(amplitude=amplitude, seed=args.seed))
        table, excluded = apply_label_scheme(load_dataset("casme2", root, require_frames=True).table, scheme)
        if len(excluded):
            raise SystemExit(f"{len(excluded)} SynthME clips have no {scheme.name} label; regenerate {root}")
        labels = table["label_index"].to_numpy()
        result = loso_probe(apex_minus_onset(table, args.size), labels, table["subject"].to_numpy(), scheme.num_classes)
        results.append(
            {
                "amplitude_px": amplitude,
                "clips": len(table),
                **result,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(
            f"amplitude {amplitude:g} px: probe UF1 {100 * result['uf1']:.1f} %, UAR {100 * result['uar']:.1f} %, "
            f"ACC {100 * result['acc']:.1f} % on {len(table)} clips (chance {100 / scheme.num_classes:.0f} %)"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "synthme_probe",
                "seed": args.seed,
                "size": args.size,
                "machine": machine_info(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
