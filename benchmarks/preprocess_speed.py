"""Preprocessing speed: aligned frames per second on a synthetic CASME II-sized set.

Builds ``--clips`` clips (default 250, about CASME II's 255) of ``--frames-per-clip`` 640 x 480 JPEG frames
each, made from ``skimage.data.astronaut()`` warped by random similarity transforms, then runs
``preprocess_table`` with the dlib detector (once per clip) and ``--workers`` processes. Reports the wall
time of the whole run, clips and aligned frames per second, a per-stage profile of one process, and the
time of a second, fully cached run. Not a test: the figures depend on the machine.

    python benchmarks/preprocess_speed.py [--clips 250] [--workers N] [--out benchmarks/results/preprocess_speed.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _machine import cpu_name  # noqa: E402

from align_fixtures import make_clip, make_table, similarity, table_row  # noqa: E402
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table  # noqa: E402


def build_dataset(root: Path, n_clips: int, frames_per_clip: int, n_bases: int, seed: int) -> list[dict]:
    """Write the frame folders; encoded frames of a few warped bases are reused across clips."""
    rng = np.random.default_rng(seed)
    bases = []
    for _ in range(n_bases):
        args = (rng.uniform(-15, 15), rng.uniform(0.8, 1.3), rng.uniform(-40, 40), rng.uniform(-30, 30))
        frames = make_clip(similarity(*args), 8, motion=(0.5, 0.0))
        encoded = []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=95)
            encoded.append(buf.getvalue())
        bases.append(encoded)
    rows = []
    for i in range(n_clips):
        encoded = bases[i % n_bases]
        folder = root / f"sub{i // 10:02d}" / f"EP{i:03d}"
        folder.mkdir(parents=True)
        paths = []
        for k in range(frames_per_clip):
            path = folder / f"img{k + 1}.jpg"
            path.write_bytes(encoded[min(k * len(encoded) // frames_per_clip, len(encoded) - 1)])
            paths.append(path)
        rows.append(table_row(f"bench/{i // 10:02d}/EP{i:03d}", paths))
    return rows


def profile_stages(rows: list[dict], params: PreprocessParams, n: int = 5) -> dict[str, float]:
    """Mean seconds per clip of each stage, in this process (dlib model load excluded)."""
    from hlora_mer.data.frames import read_frame
    from hlora_mer.data.sampling import select_frames
    from hlora_mer.preprocess.align import align_clip, estimate_alignment
    from hlora_mer.preprocess.landmarks import DlibDetector

    detector = DlibDetector()
    totals = {"read_decode_s": 0.0, "detect_s": 0.0, "warp_s": 0.0}
    for row in rows[:n]:
        numbers = select_frames(row["frame_numbers"], row["onset"], row["offset"], params.num_frames)
        by_number = dict(zip(row["frame_numbers"], row["frame_paths"], strict=True))
        t0 = time.perf_counter()
        frames = [read_frame(by_number[k]) for k in numbers]
        t1 = time.perf_counter()
        landmarks = detector.detect(frames[0])
        t2 = time.perf_counter()
        align_clip(frames, estimate_alignment(landmarks, size=params.size, margin=params.margin), size=params.size)
        t3 = time.perf_counter()
        totals["read_decode_s"] += t1 - t0
        totals["detect_s"] += t2 - t1
        totals["warp_s"] += t3 - t2
    return {k: round(v / n, 4) for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=250)
    parser.add_argument(
        "--frames-per-clip", type=int, default=60, help="frames in each clip folder (CASME II: about 24 to 140)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bases", type=int, default=10, help="distinct warped faces reused across clips")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "preprocess_speed.json")
    args = parser.parse_args()

    params = PreprocessParams(num_frames=8, size=224, detector="dlib", margin=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows = build_dataset(Path(tmp) / "data", args.clips, args.frames_per_clip, args.bases, seed=0)
        build_s = time.perf_counter() - t0
        stages = profile_stages(rows, params)
        table = make_table(rows)
        t0 = time.perf_counter()
        report = preprocess_table(table, Path(tmp) / "cache", params, workers=args.workers)
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached = preprocess_table(table, Path(tmp) / "cache", params, workers=args.workers)
        cached_wall = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"benchmark clips failed: {dict(list(report.failed.items())[:3])}")
    assert len(cached.skipped) == args.clips

    frames = len(report.done) * params.num_frames
    result = {
        "machine": {
            "cpu": cpu_name(),
            "logical_cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "setup": {
            "clips": args.clips,
            "frames_per_clip": args.frames_per_clip,
            "frame_size": "640x480 JPEG",
            "t": params.num_frames,
            "output": f"{params.size}x{params.size}",
            "detector": params.detector,
            "workers": args.workers,
        },
        "wall_s": round(wall, 2),
        "clips_per_s": round(len(report.done) / wall, 2),
        "aligned_frames_per_s": round(frames / wall, 1),
        "second_run_all_cached_s": round(cached_wall, 2),
        "per_clip_stage_s_one_process": stages,
        "dataset_build_s": round(build_s, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"\n{result['aligned_frames_per_s']} aligned frames/s ({result['clips_per_s']} clips/s): "
        f"{args.clips} clips in {wall:.1f} s with {args.workers} workers on {result['machine']['cpu']} "
        f"({os.cpu_count()} logical CPUs); re-run with everything cached: {cached_wall:.2f} s"
    )


if __name__ == "__main__":
    main()
