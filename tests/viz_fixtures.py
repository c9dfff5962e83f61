"""A tiny trained run whose clips come from a real preprocessing cache (for the figure and explain tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from align_fixtures import make_table, table_row, write_frames
from conftest import TINY_IMAGE
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table
from hlora_mer.training.data import CacheSource
from hlora_mer.training.runner import run_experiment
from train_fixtures import CLASSES, tiny_experiment

FRAMES = 10  # per source clip; 8 are sampled
APEX = 6  # apex frame number of every clip (frames are numbered from 1)


def clip_frames(seed: int, size: int = 40) -> list[np.ndarray]:
    """Smooth coloured frames with a moving bright square: texture for the PCA, motion between frames."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR))
    frames = []
    for k in range(FRAMES):
        frame = image.copy()
        frame[10 + k : 18 + k, 12:20] = 255
        frames.append(frame)
    return frames


def build_cache_run(base: Path, subjects: int = 2, **sections: Any) -> Path:
    """Preprocess ``subjects`` x 3 classes of generated clips (detector none) and train a LOSO run on them."""
    rows = []
    for s in range(subjects):
        for c in range(len(CLASSES)):
            paths = write_frames(base / "frames" / f"s{s}c{c}", clip_frames(10 * s + c))
            rows.append(table_row(f"toy/0{s + 1}/c{c}", paths, subject=f"toy/0{s + 1}", label_index=c, apex=APEX))
    table = make_table(rows).assign(label=lambda t: [CLASSES[i] for i in t["label_index"]])
    report = preprocess_table(table, base / "cache", PreprocessParams(num_frames=8, size=TINY_IMAGE, detector="none"))
    assert not report.failed, report.failed
    source = CacheSource(table, report.cache_dir, CLASSES, 8, info={"cache_dir": str(report.cache_dir)})
    run = base / "run"
    run_experiment(tiny_experiment(**sections), run, source)
    return run
